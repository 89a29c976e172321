"""Engine state behind one small key-value interface, and the per-user view on top of it.

The engine reads and writes its per-user state through :class:`StateStore`
(get / get_many / put / write_batch / delete / close) and never knows which
implementation it holds: :class:`RocksDictStore` (RocksDB through rocksdict,
memory bounded by its block cache and write buffers, however many users),
:class:`MemoryStore` (a dict, for tests and small runs), or a Faust table
(``streams/``, changelog-backed). :class:`WindowStore` turns the raw bytes into
:class:`~models.user_window.UserWindow` and :class:`~models.user_window.SeenItems`.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, cast, runtime_checkable

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from models.user_window import SeenItems, UserWindow

__all__ = ["MemoryStore", "RocksDictStore", "StateStore", "WindowStore"]


@runtime_checkable
class StateStore(Protocol):
    """A key-value store of bytes under string keys.

    ``write_batch`` applies all its puts (and deletes, for None values)
    atomically: after it returns, all of them are visible; if it raises, none is.

    """

    def get(self, key: str) -> bytes | None:
        """The value under ``key``, None when absent."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values under ``keys``, in order, None where absent."""
        ...

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``."""
        ...

    def write_batch(self, items: Mapping[str, bytes | None]) -> None:
        """Atomically put every ``key: value`` and delete every ``key: None``."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        ...

    def close(self) -> None:
        """Release the store; later calls are errors (closing twice is not)."""
        ...


def _check_value(key: str, value: object) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"value of {key!r} must be bytes, got {type(value).__name__}")


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"state keys must be str, got {type(key).__name__}")


def _key_bytes(key: str) -> bytes:
    _check_key(key)
    return key.encode("utf-8")


class _ClosesOnExit:
    """``with store:`` closes the store on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class MemoryStore(_ClosesOnExit):
    """A :class:`StateStore` in a plain dict: for tests and small runs (memory grows with users).

    Examples
    --------
    >>> store = MemoryStore()
    >>> store.write_batch({"a": b"1", "b": b"2"})
    >>> store.write_batch({"a": None, "c": b"3"})
    >>> store.get_many(["a", "b", "c"])
    [None, b'2', b'3']
    >>> len(store)
    2

    """

    def __init__(self) -> None:
        self._values: dict[str, bytes] | None = {}

    @property
    def _open_values(self) -> dict[str, bytes]:
        if self._values is None:
            raise RuntimeError("MemoryStore is closed")
        return self._values

    def get(self, key: str) -> bytes | None:
        return self._open_values.get(key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = self._open_values
        return [values.get(key) for key in keys]

    def put(self, key: str, value: bytes) -> None:
        _key_bytes(key)  # same keys as RocksDictStore: UTF-8-encodable strings
        _check_value(key, value)
        self._open_values[key] = bytes(value)

    def write_batch(self, items: Mapping[str, bytes | None]) -> None:
        values = self._open_values
        for key, value in items.items():  # check everything before changing anything
            _key_bytes(key)
            if value is not None:
                _check_value(key, value)
        for key, value in items.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = bytes(value)

    def delete(self, key: str) -> None:
        self._open_values.pop(key, None)

    def close(self) -> None:
        self._values = None

    def __len__(self) -> int:
        return len(self._open_values)


class RocksDictStore(_ClosesOnExit):
    """A :class:`StateStore` on RocksDB (rocksdict, raw bytes mode) with bounded memory.

    Memory is bounded by the LRU block cache (data blocks, and also index and
    filter blocks, which are charged to it) plus at most two write buffers
    (memtables), whatever the number of keys; the rest lives on disk. Point
    lookups use a bloom filter (10 bits per key), so a miss rarely reads disk.

    Parameters
    ----------
    path
        Directory of the database (created when missing).
    block_cache_mb
        Capacity of the LRU block cache, MiB.
    write_buffer_mb
        Size of one memtable, MiB.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     with RocksDictStore(Path(directory) / "state") as store:
    ...         store.put("u1", b"window")
    ...     with RocksDictStore(Path(directory) / "state") as store:   # reopened
    ...         store.get_many(["u1", "u2"])
    [b'window', None]

    """

    def __init__(self, path: Path, *, block_cache_mb: int = 64, write_buffer_mb: int = 32) -> None:
        if block_cache_mb < 1 or write_buffer_mb < 1:
            raise ValueError(
                "block_cache_mb and write_buffer_mb must be >= 1,"
                f" got {block_cache_mb} and {write_buffer_mb}"
            )
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        table_options = BlockBasedOptions()
        table_options.set_block_cache(Cache(block_cache_mb << 20))
        table_options.set_cache_index_and_filter_blocks(True)
        table_options.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table_options.set_bloom_filter(10, False)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_block_based_table_factory(table_options)
        options.set_write_buffer_size(write_buffer_mb << 20)
        options.set_max_write_buffer_number(2)
        options.set_keep_log_file_num(2)
        self._db: Rdict | None = Rdict(str(self.path), options)

    @property
    def _open_db(self) -> Rdict:
        if self._db is None:
            raise RuntimeError(f"RocksDictStore at {self.path} is closed")
        return self._db

    def get(self, key: str) -> bytes | None:
        return self._open_db.get(_key_bytes(key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        # rocksdict's get takes a list and returns one (its stubs say a single value).
        return cast(list[bytes | None], self._open_db.get([_key_bytes(key) for key in keys]))

    def put(self, key: str, value: bytes) -> None:
        _check_value(key, value)
        self._open_db.put(_key_bytes(key), bytes(value))

    def write_batch(self, items: Mapping[str, bytes | None]) -> None:
        db = self._open_db
        batch = WriteBatch(raw_mode=True)
        for key, value in items.items():
            if value is None:
                batch.delete(_key_bytes(key))
            else:
                _check_value(key, value)
                batch.put(_key_bytes(key), bytes(value))
        db.write(batch)  # one RocksDB write batch: all or nothing

    def delete(self, key: str) -> None:
        self._open_db.delete(_key_bytes(key))

    def flush(self) -> None:
        """Write the memtables to disk (RocksDB's write-ahead log already makes writes durable)."""
        self._open_db.flush()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        """Number of keys: exact, but it scans the database (O(keys))."""
        cursor = self._open_db.iter()
        cursor.seek_to_first()
        count = 0
        while cursor.valid():
            count += 1
            cursor.next()
        return count


class WindowStore:
    """Users' windows and seen-item sets on any :class:`StateStore`.

    Windows live under ``w:<user_id>`` and seen sets under ``s:<user_id>``, as
    the binary values of :class:`UserWindow` and :class:`SeenItems`. Users never
    seen before get an empty window and an empty seen set.

    Parameters
    ----------
    store
        Where the values live.
    seen_capacity
        Capacity of the seen sets read back (the current setting wins over the
        one stored with a value).

    Examples
    --------
    >>> from models.user_window import WindowEntry
    >>> window_store = WindowStore(MemoryStore(), seen_capacity=100)
    >>> [window] = window_store.get_windows(["u1"])
    >>> window.add(WindowEntry("m1", 978300760.0, 2.0, "click"), max_len=50, max_age_s=86400.0)
    True
    >>> window_store.put_windows({"u1": window})
    >>> [len(w) for w in window_store.get_windows(["u1", "u2"])]
    [1, 0]

    """

    WINDOW_PREFIX = "w:"
    SEEN_PREFIX = "s:"

    def __init__(self, store: StateStore, *, seen_capacity: int) -> None:
        if seen_capacity < 0:
            raise ValueError(f"seen_capacity must be >= 0, got {seen_capacity!r}")
        self.store = store
        self.seen_capacity = seen_capacity

    def get_windows(self, user_ids: Sequence[str]) -> list[UserWindow]:
        """The windows of ``user_ids``, in order (empty for unknown users)."""
        values = self.store.get_many([self.WINDOW_PREFIX + user_id for user_id in user_ids])
        return [UserWindow() if value is None else UserWindow.from_bytes(value) for value in values]

    def put_windows(self, windows: Mapping[str, UserWindow]) -> None:
        """Store the windows of several users in one atomic batch."""
        self.write(windows=windows)

    def get_seen(self, user_ids: Sequence[str]) -> list[SeenItems]:
        """The seen-item sets of ``user_ids``, in order (empty for unknown users)."""
        values = self.store.get_many([self.SEEN_PREFIX + user_id for user_id in user_ids])
        return [
            SeenItems(self.seen_capacity)
            if value is None
            else SeenItems.from_bytes(value, capacity=self.seen_capacity)
            for value in values
        ]

    def put_seen(self, seen: Mapping[str, SeenItems]) -> None:
        """Store the seen-item sets of several users in one atomic batch."""
        self.write(seen=seen)

    def write(
        self,
        *,
        windows: Mapping[str, UserWindow] | None = None,
        seen: Mapping[str, SeenItems] | None = None,
        extra: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Store windows, seen sets and ``extra`` raw keys together, in one atomic batch."""
        batch: dict[str, bytes | None] = dict(extra or {})
        for user_id, window in (windows or {}).items():
            batch[self.WINDOW_PREFIX + user_id] = window.to_bytes()
        for user_id, seen_items in (seen or {}).items():
            batch[self.SEEN_PREFIX + user_id] = seen_items.to_bytes()
        if batch:
            self.store.write_batch(batch)

    def delete_users(self, user_ids: Sequence[str]) -> None:
        """Forget the windows and seen sets of ``user_ids``, in one atomic batch."""
        batch: dict[str, bytes | None] = {}
        for user_id in user_ids:
            batch[self.WINDOW_PREFIX + user_id] = None
            batch[self.SEEN_PREFIX + user_id] = None
        if batch:
            self.store.write_batch(batch)
