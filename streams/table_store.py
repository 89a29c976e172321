"""The engine's :class:`~models.state_store.StateStore` on a Faust table (RocksDB + changelog).

The engine keeps three values per user — ``w:<user>`` (window), ``s:<user>``
(seen items), ``c:<user>`` (cluster id) — behind the small get / put / batch
interface of :mod:`models.state_store` and never knows where they live. Here
they live in one Faust table, **one table entry per owner** (the part of the
key after the first ``:``): the entry's value bundles all the owner's fields.
So the table is keyed exactly like the ``events`` topic (by user id), an owner's
fields change together (one RocksDB put and one changelog record per user per
batch), and a compacted changelog keeps one record per user.

Faust places a table entry — in the local RocksDB partition database and on the
changelog topic — by the partition of the event being processed. A batch holds
events of many partitions, so the events agent *binds* each owner to one of its
events (:meth:`FaustTableStore.owners`) and every read or write of that owner
runs in that event's partition. Writes of unbound owners are refused: they
would land in the wrong partition and be lost at the next rebalance.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["FaustTableStore", "pack_fields", "unpack_fields"]

_MAGIC = b"DRT\x01"  # driftrec table value, format 1
_COUNT = struct.Struct("<H")
_FIELD = struct.Struct("<HI")  # name length, value length


def pack_fields(fields: Mapping[str, bytes]) -> bytes:
    """One table value holding every ``name: bytes`` field of an owner.

    >>> pack_fields({"w": b"window", "c": b"\\x07"})
    b'DRT\\x01\\x02\\x00\\x01\\x00\\x01\\x00\\x00\\x00c\\x07\\x01\\x00\\x06\\x00\\x00\\x00wwindow'
    >>> unpack_fields(pack_fields({"w": b"window", "c": b"\\x07"}))
    {'c': b'\\x07', 'w': b'window'}
    """
    parts = [_MAGIC, _COUNT.pack(len(fields))]
    for name in sorted(fields):
        encoded, value = name.encode("utf-8"), bytes(fields[name])
        parts += [_FIELD.pack(len(encoded), len(value)), encoded, value]
    return b"".join(parts)


def unpack_fields(value: bytes) -> dict[str, bytes]:
    """The fields of a :func:`pack_fields` value; ``ValueError`` on anything else."""
    view = memoryview(value)
    if bytes(view[:4]) != _MAGIC:
        raise ValueError(f"not a driftrec table value: starts with {bytes(view[:4])!r}")
    (count,) = _COUNT.unpack_from(view, 4)
    offset = 4 + _COUNT.size
    fields: dict[str, bytes] = {}
    for _ in range(count):
        if offset + _FIELD.size > len(view):
            raise ValueError("truncated driftrec table value")
        name_len, value_len = _FIELD.unpack_from(view, offset)
        offset += _FIELD.size
        end = offset + name_len + value_len
        if end > len(view):
            raise ValueError("truncated driftrec table value")
        name = bytes(view[offset : offset + name_len]).decode("utf-8")
        fields[name] = bytes(view[offset + name_len : end])
        offset = end
    if offset != len(view):
        raise ValueError(f"driftrec table value has {len(view) - offset} trailing bytes")
    return fields


def _split(key: str) -> tuple[str, str]:
    if not isinstance(key, str):
        raise TypeError(f"state keys must be str, got {type(key).__name__}")
    field, separator, owner = key.partition(":")
    if not separator or not field or not owner:
        raise ValueError(f"state key {key!r} must look like '<field>:<owner>', e.g. 'w:u42'")
    return field, owner


def _check_value(key: str, value: object) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"value of {key!r} must be bytes, got {type(value).__name__}")


class FaustTableStore:
    """A :class:`~models.state_store.StateStore` whose owners' fields live in a Faust table.

    Keys are ``<field>:<owner>``; all fields of one owner form one table entry
    under the key ``owner`` (UTF-8 bytes), packed by :func:`pack_fields`. A write
    batch is therefore atomic per owner (one RocksDB put, one changelog record)
    though not across owners; the events agent acknowledges its Kafka records
    only after the batch, so a crash replays the whole batch (at-least-once).

    Inside :meth:`owners` the store reads every bound owner's entry when the
    block opens, serves all reads from those copies and keeps all writes until
    the block closes, then writes each changed owner once: an engine batch
    costs one table read and one table write per user, and the engine's own
    work inside the block touches no Faust object — so the worker can run it
    in a thread, off the event loop, while the table (whose changelog
    producer belongs to the loop) is only read and written on the loop.

    Parameters
    ----------
    table
        A Faust ``Table`` with ``key_type=bytes, value_type=bytes`` whose
        partitions match the events topic, or any mutable mapping of bytes to
        bytes (then no partition binding is needed).

    Examples
    --------
    With a plain dict in place of the Faust table:

    >>> table = {}
    >>> store = FaustTableStore(table)
    >>> store.write_batch({"w:u1": b"window", "s:u1": b"seen", "w:u2": b"other"})
    >>> sorted(table)
    [b'u1', b'u2']
    >>> store.get_many(["w:u1", "c:u1", "w:u2", "w:u3"])
    [b'window', None, b'other', None]
    >>> store.write_batch({"w:u2": None})
    >>> sorted(table)                     # u2 had nothing left: its entry is deleted
    [b'u1']
    """

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self._needs_partition = _is_faust_collection(table)
        self._events: Mapping[str, Any] = {}
        self._cached: dict[str, dict[str, bytes]] | None = None
        self._dirty: set[str] = set()
        self._closed = False

    # ------------------------------------------------------------------ binding
    @contextmanager
    def owners(self, events_by_owner: Mapping[str, Any]) -> Iterator[None]:
        """Bind each owner to a Faust event of its partition for the duration of the block.

        The owners' entries are read on entry; writes inside the block are kept
        and written to the table on exit (also when the block raised: what the
        engine wrote before failing is kept, as it would be without deferral).
        """
        if self._cached is not None:
            raise RuntimeError("FaustTableStore.owners() blocks do not nest")
        self._events, self._cached, self._dirty = events_by_owner, {}, set()
        try:
            for owner in events_by_owner:
                self._load(owner)
            yield
        finally:
            try:
                self._flush()
            finally:
                self._events, self._cached, self._dirty = {}, None, set()

    def _flush(self) -> None:
        cached = self._cached
        if cached is None:
            return
        for owner in sorted(self._dirty):
            self._write_table(owner, cached[owner])
        self._dirty.clear()

    @contextmanager
    def _partition_of(self, owner: str, *, writing: bool) -> Iterator[None]:
        if not self._needs_partition:
            yield
            return
        event = self._events.get(owner)
        if event is None:
            if writing:
                raise LookupError(
                    f"no partition known for owner {owner!r}: table writes must happen inside "
                    "FaustTableStore.owners() with an event of that owner"
                )
            yield  # reads of unbound owners search every local partition
            return
        from faust.streams import _current_event

        token = _current_event.set(weakref.ref(event))
        try:
            yield
        finally:
            _current_event.reset(token)

    # ------------------------------------------------------------------ entries
    def _load(self, owner: str) -> dict[str, bytes]:
        if self._closed:
            raise RuntimeError("FaustTableStore is closed")
        cached = self._cached
        if cached is not None and owner in cached:
            return cached[owner]
        with self._partition_of(owner, writing=False):
            raw = self.table.get(owner.encode("utf-8"))
        fields = {} if raw is None else unpack_fields(raw)
        if cached is not None and owner in self._events:
            cached[owner] = fields
        return fields

    def _store(self, owner: str, fields: dict[str, bytes]) -> None:
        if self._cached is not None and owner in self._events:
            self._cached[owner] = fields  # written once, when the owners() block closes
            self._dirty.add(owner)
            return
        self._write_table(owner, fields)

    def _write_table(self, owner: str, fields: dict[str, bytes]) -> None:
        key = owner.encode("utf-8")
        with self._partition_of(owner, writing=True):
            if fields:
                self.table[key] = pack_fields(fields)
            elif key in self.table:
                del self.table[key]

    # ------------------------------------------------------------------ StateStore
    def get(self, key: str) -> bytes | None:
        field, owner = _split(key)
        return self._load(owner).get(field)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        split = [_split(key) for key in keys]
        loaded = {owner: self._load(owner) for owner in dict.fromkeys(o for _, o in split)}
        return [loaded[owner].get(field) for field, owner in split]

    def put(self, key: str, value: bytes) -> None:
        self.write_batch({key: value})

    def write_batch(self, items: Mapping[str, bytes | None]) -> None:
        changes: dict[str, dict[str, bytes | None]] = {}
        for key, value in items.items():  # check everything before changing anything
            field, owner = _split(key)
            if value is not None:
                _check_value(key, value)
            changes.setdefault(owner, {})[field] = value
        if self._needs_partition:
            unbound = [owner for owner in changes if owner not in self._events]
            if unbound:
                raise LookupError(
                    f"no partition known for owners {unbound[:5]}: table writes must happen "
                    "inside FaustTableStore.owners() with an event of each owner"
                )
        for owner, owner_changes in changes.items():
            fields = dict(self._load(owner))
            for field, value in owner_changes.items():
                if value is None:
                    fields.pop(field, None)
                else:
                    fields[field] = bytes(value)
            self._store(owner, fields)

    def delete(self, key: str) -> None:
        self.write_batch({key: None})

    def close(self) -> None:
        """Stop serving; the Faust app owns (and closes) the table itself."""
        self._closed = True


def _is_faust_collection(table: object) -> bool:
    try:
        from faust.tables.base import Collection
    except ImportError:  # pragma: no cover - faust is a dependency
        return False
    return isinstance(table, Collection)
