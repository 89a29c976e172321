"""State stores (memory, RocksDB) behind one interface, and the per-user WindowStore."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.state_store import MemoryStore, RocksDictStore, StateStore, WindowStore
from models.user_window import SeenItems, UserWindow, WindowEntry


@pytest.fixture(params=["memory", "rocksdict"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore = (
        MemoryStore() if request.param == "memory" else RocksDictStore(tmp_path / "state")
    )
    yield opened
    opened.close()


def window_of(*item_ids: str, start: float = 978300760.0) -> UserWindow:
    return UserWindow(
        WindowEntry(item_id, start + 60.0 * index, 1.0 + index, "click")
        for index, item_id in enumerate(item_ids)
    )


# --- the StateStore interface, on every implementation --------------------------------


def test_store_follows_the_protocol(store: StateStore) -> None:
    """Every method of the protocol, with the protocol's parameters (not only its names)."""
    import inspect

    for name, member in vars(StateStore).items():
        if name.startswith("_") or not callable(member):
            continue
        expected = list(inspect.signature(member).parameters)[1:]
        actual = list(inspect.signature(getattr(store, name)).parameters)
        assert actual == expected, f"{type(store).__name__}.{name}{actual} vs {expected}"


def test_put_get_delete_round_trip(store: StateStore) -> None:
    assert store.get("u1") is None
    store.put("u1", b"\x00\x01binary\xff")
    store.put("ü-2", b"")
    assert store.get("u1") == b"\x00\x01binary\xff"
    assert store.get("ü-2") == b""  # empty value is a value, not an absence
    assert store.get_many(["u1", "missing", "ü-2"]) == [b"\x00\x01binary\xff", None, b""]
    assert store.get_many([]) == []
    store.put("u1", b"new")
    assert store.get("u1") == b"new"
    store.delete("u1")
    store.delete("never-there")
    assert store.get("u1") is None


def test_write_batch_puts_and_deletes(store: StateStore) -> None:
    store.write_batch({"a": b"1", "b": b"2", "c": b"3"})
    store.write_batch({"a": None, "b": b"22", "d": b"4"})
    assert store.get_many(["a", "b", "c", "d"]) == [None, b"22", b"3", b"4"]


@pytest.mark.parametrize("bad", [{"y": "text, not bytes"}, {"\ud800": b"bad key"}, {"y": 3}])
def test_a_failing_write_batch_writes_nothing(store: StateStore, bad: dict[str, object]) -> None:
    store.put("x", b"old")
    batch = {"x": b"new", "z": b"also new", **bad, "w": None}
    with pytest.raises((TypeError, ValueError)):
        store.write_batch(batch)  # type: ignore[arg-type]
    assert store.get_many(["x", "z"]) == [b"old", None]


def test_closed_store_refuses_work_and_closes_twice(store: StateStore) -> None:
    store.put("a", b"1")
    store.close()
    store.close()
    with pytest.raises(Exception, match="closed"):
        store.get("a")


def test_rocksdict_store_persists_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state"
    with RocksDictStore(path, block_cache_mb=4, write_buffer_mb=1) as store:
        store.write_batch({f"user{index}": f"value{index}".encode() for index in range(1000)})
        store.delete("user7")
        store.write_batch({"user8": None, "user9": b"changed"})
    with RocksDictStore(path, block_cache_mb=4, write_buffer_mb=1) as reopened:
        assert len(reopened) == 998
        assert reopened.get_many(["user0", "user7", "user8", "user9", "user999"]) == [
            b"value0",
            None,
            None,
            b"changed",
            b"value999",
        ]


def test_rocksdict_store_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block_cache_mb"):
        RocksDictStore(tmp_path / "state", block_cache_mb=0)


# --- WindowStore ------------------------------------------------------------------------


def test_window_store_round_trip_and_unknown_users(store: StateStore) -> None:
    window_store = WindowStore(store, seen_capacity=3)
    windows = {"u1": window_of("a", "b"), "u2": window_of("c")}
    window_store.put_windows(windows)
    got = window_store.get_windows(["u2", "nobody", "u1"])
    assert got == [windows["u2"], UserWindow(), windows["u1"]]

    [seen_u1, seen_nobody] = window_store.get_seen(["u1", "nobody"])
    assert len(seen_u1) == 0 and seen_nobody.capacity == 3
    seen_u1.update(["a", "b", "c", "d"])
    window_store.put_seen({"u1": seen_u1})
    assert window_store.get_seen(["u1"])[0].items() == ["b", "c", "d"]
    # windows and seen sets of one user live under different keys
    assert window_store.get_windows(["u1"])[0] == windows["u1"]


def test_window_store_applies_the_current_seen_capacity(store: StateStore) -> None:
    WindowStore(store, seen_capacity=10).put_seen({"u1": SeenItems(10, "abcdefgh")})
    assert WindowStore(store, seen_capacity=2).get_seen(["u1"])[0].items() == ["g", "h"]


def test_window_store_writes_and_deletes_users_in_one_batch(store: StateStore) -> None:
    window_store = WindowStore(store, seen_capacity=5)
    window_store.write(windows={"u1": window_of("a")}, seen={"u1": SeenItems(5, ["a"])})
    assert store.get_many(["w:u1", "s:u1"]) == [
        window_of("a").to_bytes(),
        SeenItems(5, ["a"]).to_bytes(),
    ]
    window_store.delete_users(["u1"])
    assert store.get_many(["w:u1", "s:u1"]) == [None, None]
    assert window_store.get_windows(["u1"]) == [UserWindow()]


# --- memory stays bounded however many users arrive ------------------------------------


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_rocksdict_memory_stays_bounded_with_200k_users(tmp_path: Path) -> None:
    """200,000 users' full windows (~200 MiB of values): RSS grows by a small, fixed amount."""
    rng = random.Random(7)
    kinds = ["view", "click", "cart", "purchase", "rate"]
    templates = [  # 500 distinct full windows, shared out over the users
        UserWindow(
            WindowEntry(
                f"m{rng.randrange(100_000):05d}", 1e9 + 60.0 * i + t, 1.0 + i % 3, kinds[i % 5]
            )
            for i in range(50)
        )
        for t in range(500)
    ]
    n_users, batch_size = 200_000, 1_000

    def user_id(index: int) -> str:
        return f"user{index:07d}"

    started = time.perf_counter()
    with RocksDictStore(tmp_path / "state", block_cache_mb=8, write_buffer_mb=4) as store:
        window_store = WindowStore(store, seen_capacity=100)

        def write_users(first: int, last: int) -> None:
            for start in range(first, last, batch_size):
                window_store.put_windows(
                    {
                        user_id(index): templates[index % len(templates)]
                        for index in range(start, min(last, start + batch_size))
                    }
                )

        write_users(0, 20_000)  # warm up: caches, memtables, allocator arenas
        baseline_mib = rss_mib()
        write_users(20_000, n_users)
        after_writes_mib = rss_mib()
        for _ in range(20):  # random point reads all over the keyspace
            sample = [rng.randrange(n_users) for _ in range(1_000)]
            windows = window_store.get_windows([user_id(index) for index in sample])
            assert all(
                window == templates[index % len(templates)]
                for index, window in zip(sample, windows, strict=True)
            )
        after_reads_mib = rss_mib()
    elapsed_s = time.perf_counter() - started

    data_mib = sum(len(t.to_bytes()) for t in templates) * (n_users / len(templates)) / 2**20
    growth_mib = max(after_writes_mib, after_reads_mib) - baseline_mib
    print(
        f"\n{n_users} users, {data_mib:.0f} MiB of window values: RSS {baseline_mib:.0f} MiB"
        f" after warm-up, {after_writes_mib:.0f} after writes, {after_reads_mib:.0f} after"
        f" 20,000 random reads; growth {growth_mib:.0f} MiB; {elapsed_s:.1f} s"
    )
    assert data_mib > 150
    # block cache (8) + 2 write buffers (2 x 4) + allocator slack, whatever the user count
    assert growth_mib < 64, growth_mib
    assert growth_mib < data_mib / 3
