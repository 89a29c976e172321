"""Each user's sliding window of recent behaviour, and the set of items they consumed.

Both are kept per user in the state store (RocksDB, or a Faust table on top of
it) as compact, versioned binary values; the codecs live here with the
structures they encode so that the two never drift apart.

"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["SeenItems", "StateFormatError", "UserWindow", "WindowEntry"]

#: Format byte of a :class:`UserWindow` value.
WINDOW_FORMAT_VERSION = 1
#: Format byte of a :class:`SeenItems` value.
SEEN_FORMAT_VERSION = 1

#: Largest weight a window stores (the float32 of its binary format).
MAX_WEIGHT = 3.4e38

_MAX_EVENT_TYPES = 256
_STRINGS_JOINED = 0  # strings joined by NUL (none contains NUL)
_STRINGS_PREFIXED = 1  # each string preceded by its varint byte length


class StateFormatError(ValueError):
    """A stored value could not be decoded: unknown format version, truncated or corrupt."""


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """One event of a user's window.

    Attributes
    ----------
    item_id
        The item the user acted on.
    ts
        Event time, epoch seconds.
    weight
        The event's effective weight (see :class:`models.record_parser.EventParser`).
    event
        The event type.

    """

    item_id: str
    ts: float
    weight: float
    event: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.ts):
            raise ValueError(f"WindowEntry.ts must be finite epoch seconds, got {self.ts!r}")
        if not 0 <= self.weight <= MAX_WEIGHT:
            raise ValueError(
                f"WindowEntry.weight must be in [0, {MAX_WEIGHT:g}], got {self.weight!r}"
            )


def _entry_ts(entry: WindowEntry) -> float:
    return entry.ts


def _check_bounds(max_len: int, max_age_s: float) -> None:
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len!r}")
    if not max_age_s > 0:
        raise ValueError(f"max_age_s must be > 0 seconds, got {max_age_s!r}")


class UserWindow:
    """A user's last ``N`` events younger than ``T``, in event-time order.

    Events are kept sorted by event time, oldest first; events with the same
    time keep their arrival order. An event that arrives late (older than the
    newest in the window) is placed by its event time, not by its arrival.
    After each insertion the window drops every entry older than
    ``newest_ts - max_age_s`` and then keeps the ``max_len`` newest:

    .. code-block:: text

        window ← sort_by_ts_stable(window ∪ {e})
        window ← [x ∈ window : x.ts ≥ max(window.ts) − T]
        window ← last N of window

    so a late event older than everything in a full window, or older than
    ``T`` before the newest event, is dropped at once (``add`` returns False).
    Adding events one by one or all together gives the same window.

    Binary value (``to_bytes``), format version 1, little-endian::

        u8             format version (1)
        varint         n: number of entries
        varint         t: number of distinct event types (t <= 256)
        strings(t)     the event-type table
        n x float64    event times, ascending
        n x float32    weights (stored to float32 precision, ~7 significant digits)
        n x u8         event type of each entry, an index into the table
        strings(n)     item ids

        strings(k) =   u8 mode, then
                       mode 0: varint byte length, the k UTF-8 strings joined by NUL
                       mode 1: k x (varint byte length, UTF-8 bytes)   [a string holds NUL]
        varint     =   unsigned LEB128

    A 50-entry window with 6-character ids takes about 1 KB (20 bytes an entry).

    Examples
    --------
    >>> window = UserWindow()
    >>> for item_id, ts in [("a", 10.0), ("b", 30.0), ("c", 20.0), ("d", 40.0)]:
    ...     window.add(WindowEntry(item_id, ts, 1.0, "view"), max_len=3, max_age_s=100.0)
    True
    True
    True
    True
    >>> window.item_ids()                     # "c" arrived late, placed by event time
    ['c', 'b', 'd']
    >>> window.add(WindowEntry("e", 5.0, 1.0, "view"), max_len=3, max_age_s=100.0)
    False
    >>> [entry.item_id for entry in window.recent(2)]
    ['d', 'b']
    >>> UserWindow.from_bytes(window.to_bytes()) == window
    True
    >>> len(window.to_bytes())    # 9 bytes of header and table, 13 per entry, 7 of ids
    55

    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[WindowEntry] = ()) -> None:
        self._entries: list[WindowEntry] = sorted(entries, key=_entry_ts)

    # --- updates --------------------------------------------------------------

    def add(self, entry: WindowEntry, *, max_len: int, max_age_s: float) -> bool:
        """Insert ``entry`` by event time, then trim; True if it is still in the window."""
        _check_bounds(max_len, max_age_s)
        entries = self._entries
        if not entries or entry.ts >= entries[-1].ts:
            position = len(entries)
            entries.append(entry)
        else:
            position = bisect_right(entries, entry.ts, key=_entry_ts)
            entries.insert(position, entry)
        return position >= self._trim(max_len, max_age_s)

    def add_many(
        self, entries: Iterable[WindowEntry], *, max_len: int, max_age_s: float
    ) -> list[bool]:
        """Insert several entries (in arrival order), then trim once.

        Returns, for each given entry, whether it is in the window afterwards.
        The window is the same as after adding them one by one.

        """
        _check_bounds(max_len, max_age_s)
        arrived = list(entries)
        if not arrived:
            return []
        tagged = [(entry, -1) for entry in self._entries]
        tagged.extend((entry, index) for index, entry in enumerate(arrived))
        tagged.sort(key=lambda pair: pair[0].ts)  # stable: ties keep arrival order
        cutoff = tagged[-1][0].ts - max_age_s
        start = bisect_left(tagged, cutoff, key=lambda pair: pair[0].ts)
        start = max(start, len(tagged) - max_len)
        kept = [False] * len(arrived)
        for _, index in tagged[start:]:
            if index >= 0:
                kept[index] = True
        self._entries = [entry for entry, _ in tagged[start:]]
        return kept

    def expire(self, now_ts: float, *, max_age_s: float) -> int:
        """Drop the entries older than ``now_ts - max_age_s``; return how many were dropped."""
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0 seconds, got {max_age_s!r}")
        start = bisect_left(self._entries, now_ts - max_age_s, key=_entry_ts)
        del self._entries[:start]
        return start

    def _trim(self, max_len: int, max_age_s: float) -> int:
        """Drop what is too old or beyond ``max_len`` (always a prefix); return its length."""
        entries = self._entries
        start = bisect_left(entries, entries[-1].ts - max_age_s, key=_entry_ts)
        start = max(start, len(entries) - max_len)
        if start:
            del entries[:start]
        return start

    # --- views ----------------------------------------------------------------

    @property
    def entries(self) -> tuple[WindowEntry, ...]:
        """The entries, oldest first."""
        return tuple(self._entries)

    @property
    def newest_ts(self) -> float | None:
        """Event time of the newest entry, None when empty."""
        return self._entries[-1].ts if self._entries else None

    def item_ids(self) -> list[str]:
        """The entries' item ids, oldest first (repeats kept)."""
        return [entry.item_id for entry in self._entries]

    def recent(self, m: int) -> list[WindowEntry]:
        """The ``m`` newest entries, newest first."""
        if m <= 0:
            return []
        return self._entries[: -m - 1 : -1]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[WindowEntry]:
        return iter(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserWindow):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable; typeshed types it a method

    def __repr__(self) -> str:
        return f"UserWindow({self._entries!r})"

    # --- binary value ---------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Encode as a version-1 binary value (layout in the class docstring)."""
        entries = self._entries
        n = len(entries)
        type_index: dict[str, int] = {}
        for entry in entries:
            type_index.setdefault(entry.event, len(type_index))
        if len(type_index) > _MAX_EVENT_TYPES:
            raise ValueError(
                f"a window holds at most {_MAX_EVENT_TYPES} event types, got {len(type_index)}"
            )
        out = bytearray((WINDOW_FORMAT_VERSION,))
        _write_varint(out, n)
        _write_varint(out, len(type_index))
        _write_strings(out, list(type_index))
        out += struct.pack(f"<{n}d", *[entry.ts for entry in entries])
        out += struct.pack(f"<{n}f", *[entry.weight for entry in entries])
        out += bytes([type_index[entry.event] for entry in entries])
        _write_strings(out, [entry.item_id for entry in entries])
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> UserWindow:
        """Decode a value written by :meth:`to_bytes`; raise :class:`StateFormatError` if bad."""
        data = bytes(data)
        offset = _read_version(data, WINDOW_FORMAT_VERSION, "UserWindow")
        n, offset = _read_varint(data, offset)
        n_types, offset = _read_varint(data, offset)
        if n_types > _MAX_EVENT_TYPES or (n and not n_types):
            raise StateFormatError(f"UserWindow value: bad event-type count {n_types}")
        event_types, offset = _read_strings(data, offset, n_types)
        end = offset + 13 * n
        if end > len(data):
            raise StateFormatError("UserWindow value: truncated entries")
        times = struct.unpack_from(f"<{n}d", data, offset)
        weights = struct.unpack_from(f"<{n}f", data, offset + 8 * n)
        kinds = data[offset + 12 * n : end]
        item_ids, offset = _read_strings(data, end, n)
        if offset != len(data):
            raise StateFormatError(f"UserWindow value: {len(data) - offset} trailing bytes")
        if any(later < earlier for earlier, later in pairwise(times)):
            raise StateFormatError("UserWindow value: event times not in ascending order")
        try:
            entries = [
                WindowEntry(item_id, ts, weight, event_types[kind])
                for item_id, ts, weight, kind in zip(item_ids, times, weights, kinds, strict=True)
            ]
        except (ValueError, IndexError) as error:
            raise StateFormatError(f"UserWindow value: bad entry ({error})") from None
        window = cls.__new__(cls)
        window._entries = entries
        return window


class SeenItems:
    """The most recent distinct items a user consumed, to exclude from recommendations.

    A bounded ordered set: adding an item makes it the most recent one (again);
    beyond ``capacity`` items, the least recently added is forgotten first.

    Binary value (``to_bytes``), format version 1::

        u8           format version (1)
        varint       capacity
        varint       n: number of items
        strings(n)   item ids, least recent first (``strings`` as in UserWindow)

    Parameters
    ----------
    capacity
        The most items remembered (0 remembers nothing).
    items
        Initial items, least recent first.

    Examples
    --------
    >>> seen = SeenItems(capacity=3)
    >>> for item_id in ["a", "b", "c", "a", "d"]:
    ...     seen.add(item_id)
    >>> seen.items()                            # "b" was the least recent
    ['c', 'a', 'd']
    >>> "b" in seen, "a" in seen
    (False, True)
    >>> SeenItems.from_bytes(seen.to_bytes(), capacity=2).items()
    ['a', 'd']

    """

    __slots__ = ("_items", "capacity")

    def __init__(self, capacity: int = 5_000, items: Iterable[str] = ()) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity!r}")
        self.capacity = capacity
        self._items: OrderedDict[str, None] = OrderedDict()
        for item_id in items:
            self.add(item_id)

    def add(self, item_id: str) -> None:
        """Remember ``item_id`` as the most recent item, forgetting the oldest beyond capacity."""
        items = self._items
        if item_id in items:
            items.move_to_end(item_id)
            return
        items[item_id] = None
        while len(items) > self.capacity:
            items.popitem(last=False)

    def update(self, item_ids: Iterable[str]) -> None:
        """Add several items, in order."""
        for item_id in item_ids:
            self.add(item_id)

    def items(self) -> list[str]:
        """The remembered items, least recent first."""
        return list(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeenItems):
            return NotImplemented
        return self.capacity == other.capacity and list(self._items) == list(other._items)

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable; typeshed types it a method

    def __repr__(self) -> str:
        return f"SeenItems(capacity={self.capacity}, items={list(self._items)!r})"

    def to_bytes(self) -> bytes:
        """Encode as a version-1 binary value (layout in the class docstring)."""
        out = bytearray((SEEN_FORMAT_VERSION,))
        _write_varint(out, self.capacity)
        _write_varint(out, len(self._items))
        _write_strings(out, list(self._items))
        return bytes(out)

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, capacity: int | None = None
    ) -> SeenItems:
        """Decode a value of :meth:`to_bytes`; ``capacity`` overrides the stored one.

        With a smaller capacity than stored, the least recent items are dropped.

        """
        data = bytes(data)
        offset = _read_version(data, SEEN_FORMAT_VERSION, "SeenItems")
        stored_capacity, offset = _read_varint(data, offset)
        n, offset = _read_varint(data, offset)
        item_ids, offset = _read_strings(data, offset, n)
        if offset != len(data):
            raise StateFormatError(f"SeenItems value: {len(data) - offset} trailing bytes")
        ordered = OrderedDict.fromkeys(item_ids)
        if len(ordered) != n or n > stored_capacity:
            raise StateFormatError("SeenItems value: repeated items or more than its capacity")
        seen = cls(stored_capacity if capacity is None else capacity)
        while len(ordered) > seen.capacity:
            ordered.popitem(last=False)
        seen._items = ordered
        return seen


# --- codec helpers ----------------------------------------------------------------


def _read_version(data: bytes, expected: int, what: str) -> int:
    if not data:
        raise StateFormatError(f"{what} value is empty")
    if data[0] != expected:
        raise StateFormatError(
            f"{what} value has format version {data[0]}, this reader knows version {expected}"
        )
    return 1


def _write_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise StateFormatError("value truncated inside a varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise StateFormatError("varint longer than 64 bits")


def _write_strings(out: bytearray, strings: list[str]) -> None:
    joined = "\x00".join(strings)
    if joined.count("\x00") == max(len(strings) - 1, 0):
        blob = joined.encode("utf-8")
        out.append(_STRINGS_JOINED)
        _write_varint(out, len(blob))
        out += blob
        return
    out.append(_STRINGS_PREFIXED)
    for string in strings:
        blob = string.encode("utf-8")
        _write_varint(out, len(blob))
        out += blob


def _read_strings(data: bytes, offset: int, count: int) -> tuple[list[str], int]:
    if offset >= len(data):
        raise StateFormatError("value truncated before a string list")
    mode = data[offset]
    offset += 1
    try:
        if mode == _STRINGS_JOINED:
            length, offset = _read_varint(data, offset)
            end = offset + length
            if end > len(data):
                raise StateFormatError("value truncated inside a string list")
            if count == 0:
                if length:
                    raise StateFormatError("string list of 0 strings is not empty")
                return [], end
            strings = data[offset:end].decode("utf-8").split("\x00")
            if len(strings) != count:
                raise StateFormatError(f"string list holds {len(strings)} strings, not {count}")
            return strings, end
        if mode == _STRINGS_PREFIXED:
            strings = []
            for _ in range(count):
                length, offset = _read_varint(data, offset)
                end = offset + length
                if end > len(data):
                    raise StateFormatError("value truncated inside a string list")
                strings.append(data[offset:end].decode("utf-8"))
                offset = end
            return strings, offset
    except UnicodeDecodeError as error:
        raise StateFormatError(f"string list is not valid UTF-8 ({error.reason})") from None
    raise StateFormatError(f"unknown string-list mode {mode}")
