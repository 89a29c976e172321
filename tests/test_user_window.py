"""Per-user sliding windows, seen-item sets, and their binary values."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.user_window import SeenItems, StateFormatError, UserWindow, WindowEntry

DAY = 86_400.0


def entry(item_id: str, ts: float, weight: float = 1.0, event: str = "view") -> WindowEntry:
    return WindowEntry(item_id, ts, weight, event)


def ids_of(window: UserWindow) -> list[str]:
    return window.item_ids()


# --- bounds ------------------------------------------------------------------------


def test_count_bound_keeps_the_newest() -> None:
    window = UserWindow()
    for index in range(120):
        assert window.add(entry(f"m{index}", 1000.0 + index), max_len=50, max_age_s=30 * DAY)
    assert len(window) == 50
    assert ids_of(window) == [f"m{index}" for index in range(70, 120)]
    assert window.newest_ts == 1119.0


def test_age_bound_drops_what_is_older_than_newest_minus_t() -> None:
    window = UserWindow()
    for ts in (0.0, 10.0, 20.0, 30.0):
        window.add(entry(f"at{ts:.0f}", ts), max_len=50, max_age_s=20.0)
    assert ids_of(window) == ["at10", "at20", "at30"]  # 10 == 30 - 20 is kept
    window.add(entry("at45", 45.0), max_len=50, max_age_s=20.0)
    assert ids_of(window) == ["at30", "at45"]


def test_out_of_order_event_is_placed_by_event_time() -> None:
    window = UserWindow()
    for item_id, ts in [("a", 10.0), ("c", 30.0), ("d", 40.0)]:
        window.add(entry(item_id, ts), max_len=5, max_age_s=100.0)
    assert window.add(entry("b", 20.0), max_len=5, max_age_s=100.0)
    assert ids_of(window) == ["a", "b", "c", "d"]
    assert window.newest_ts == 40.0
    assert [e.item_id for e in window.recent(3)] == ["d", "c", "b"]


def test_late_event_older_than_a_full_window_is_dropped() -> None:
    window = UserWindow()
    for index in range(5):
        window.add(entry(f"m{index}", 100.0 + index), max_len=5, max_age_s=1000.0)
    before = window.entries
    assert not window.add(entry("late", 50.0), max_len=5, max_age_s=1000.0)
    assert window.entries == before


def test_late_event_older_than_t_is_dropped_even_when_there_is_room() -> None:
    window = UserWindow()
    window.add(entry("new", 1000.0), max_len=5, max_age_s=100.0)
    assert not window.add(entry("stale", 899.0), max_len=5, max_age_s=100.0)
    assert window.add(entry("edge", 900.0), max_len=5, max_age_s=100.0)
    assert ids_of(window) == ["edge", "new"]


def test_newer_event_ages_out_the_old_ones() -> None:
    window = UserWindow()
    window.add(entry("a", 0.0), max_len=5, max_age_s=10.0)
    window.add(entry("b", 5.0), max_len=5, max_age_s=10.0)
    assert window.add(entry("c", 100.0), max_len=5, max_age_s=10.0)
    assert ids_of(window) == ["c"]


def test_ties_keep_arrival_order() -> None:
    window = UserWindow()
    for item_id in "abc":
        window.add(entry(item_id, 10.0), max_len=10, max_age_s=100.0)
    window.add(entry("z", 20.0), max_len=10, max_age_s=100.0)
    window.add(entry("d", 10.0), max_len=10, max_age_s=100.0)  # late, tied with a, b, c
    assert ids_of(window) == ["a", "b", "c", "d", "z"]
    window.add(entry("e", 10.0), max_len=3, max_age_s=100.0)  # the count bound drops a tie
    assert ids_of(window) == ["d", "e", "z"]


def test_expire_drops_by_the_given_event_time() -> None:
    window = UserWindow([entry("a", 10.0), entry("b", 20.0), entry("c", 30.0)])
    assert window.expire(45.0, max_age_s=20.0) == 2
    assert ids_of(window) == ["c"]
    assert window.expire(45.0, max_age_s=20.0) == 0


def test_views_of_an_empty_window() -> None:
    window = UserWindow()
    assert (len(window), window.newest_ts, window.item_ids(), window.recent(3)) == (0, None, [], [])
    window.add(entry("a", 1.0), max_len=3, max_age_s=10.0)
    assert window.recent(0) == [] and len(window.recent(10)) == 1


@pytest.mark.parametrize(("max_len", "max_age_s"), [(0, 10.0), (5, 0.0), (5, float("nan"))])
def test_bad_bounds_are_rejected(max_len: int, max_age_s: float) -> None:
    window = UserWindow()
    with pytest.raises(ValueError, match="max_"):
        window.add(entry("a", 1.0), max_len=max_len, max_age_s=max_age_s)
    assert len(window) == 0


@pytest.mark.parametrize(
    ("ts", "weight"), [(float("nan"), 1.0), (float("inf"), 1.0), (1.0, -1.0), (1.0, 1e39)]
)
def test_bad_entries_are_rejected(ts: float, weight: float) -> None:
    with pytest.raises(ValueError, match="WindowEntry"):
        WindowEntry("a", ts, weight, "view")


# --- the reference model -------------------------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.integers(min_value=0, max_value=40).map(float),  # small range: many ties
        st.sampled_from(["view", "click", "rate"]),
    ),
    max_size=40,
)


def reference_window(
    arrived: list[WindowEntry], max_len: int, max_age_s: float
) -> list[WindowEntry]:
    """Sort everything by (ts, arrival), drop what is older than max ts − T, keep the last N."""
    if not arrived:
        return []
    ordered = [e for _, e in sorted(enumerate(arrived), key=lambda pair: (pair[1].ts, pair[0]))]
    cutoff = max(e.ts for e in arrived) - max_age_s
    return [e for e in ordered if e.ts >= cutoff][-max_len:]


@given(events, st.integers(min_value=1, max_value=8), st.sampled_from([1.0, 5.0, 12.5, 100.0]))
def test_window_equals_the_reference_model(
    steps: list[tuple[str, float, str]], max_len: int, max_age_s: float
) -> None:
    window = UserWindow()
    arrived: list[WindowEntry] = []
    for item_id, ts, event in steps:
        new = WindowEntry(item_id, ts, 1.0, event)
        arrived.append(new)
        kept = window.add(new, max_len=max_len, max_age_s=max_age_s)
        expected = reference_window(arrived, max_len, max_age_s)
        assert len(window.entries) == len(expected)
        assert all(got is want for got, want in zip(window.entries, expected, strict=True))
        assert kept == any(e is new for e in expected)
        assert len(window) <= max_len


@given(events, events, st.integers(min_value=1, max_value=8), st.sampled_from([1.0, 12.5, 100.0]))
def test_add_many_equals_adding_one_by_one(
    first: list[tuple[str, float, str]],
    batch: list[tuple[str, float, str]],
    max_len: int,
    max_age_s: float,
) -> None:
    one_by_one, together = UserWindow(), UserWindow()
    for item_id, ts, event in first:
        one_by_one.add(WindowEntry(item_id, ts, 1.0, event), max_len=max_len, max_age_s=max_age_s)
        together.add(WindowEntry(item_id, ts, 1.0, event), max_len=max_len, max_age_s=max_age_s)
    new = [WindowEntry(item_id, ts, 2.0, event) for item_id, ts, event in batch]
    for e in new:
        one_by_one.add(e, max_len=max_len, max_age_s=max_age_s)
    kept = together.add_many(new, max_len=max_len, max_age_s=max_age_s)
    assert together.entries == one_by_one.entries
    assert kept == [any(got is e for got in together.entries) for e in new]


# --- binary values ---------------------------------------------------------------------


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


window_entries = st.lists(
    st.builds(
        WindowEntry,
        item_id=st.text(max_size=12),  # NUL, non-ASCII and empty ids included
        ts=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
        weight=st.floats(min_value=0.0, max_value=1e12).map(float32),
        event=st.sampled_from(["view", "click", "cart", "purchase", "rate", "", "a\x00b", "é"]),
    ),
    max_size=60,
)


@given(window_entries)
def test_window_bytes_round_trip(entries: list[WindowEntry]) -> None:
    window = UserWindow(entries)
    data = window.to_bytes()
    assert data[0] == 1
    decoded = UserWindow.from_bytes(data)
    assert decoded == window
    assert decoded.to_bytes() == data


@given(st.floats(min_value=0.0, max_value=1e12))
def test_weights_are_stored_as_float32(weight: float) -> None:
    decoded = UserWindow.from_bytes(UserWindow([entry("a", 1.0, weight)]).to_bytes())
    assert decoded.entries[0].weight == float32(weight)
    assert decoded.entries[0].weight == pytest.approx(weight, rel=1e-7)


def test_a_full_window_of_short_ids_fits_in_1_2_kb() -> None:
    kinds = ["view", "click", "cart", "purchase", "rate"]
    window = UserWindow(
        entry(f"m{index:05d}", 978300760.0 + 37.5 * index, 1.0 + index % 3, kinds[index % 5])
        for index in range(50)
    )
    size = len(window.to_bytes())
    assert len(window) == 50
    assert size < 1200, size
    assert size >= 50 * (8 + 4 + 1 + 6)  # every entry is really there


def test_unknown_format_version_is_rejected_clearly() -> None:
    data = bytearray(UserWindow([entry("a", 1.0)]).to_bytes())
    data[0] = 7
    with pytest.raises(StateFormatError, match="format version 7, this reader knows version 1"):
        UserWindow.from_bytes(bytes(data))
    seen = bytearray(SeenItems(3, ["a"]).to_bytes())
    seen[0] = 2
    with pytest.raises(StateFormatError, match="SeenItems value has format version 2"):
        SeenItems.from_bytes(bytes(seen))
    with pytest.raises(StateFormatError, match="empty"):
        UserWindow.from_bytes(b"")


def test_truncated_and_padded_values_are_rejected() -> None:
    data = UserWindow([entry("abc", 1.0), entry("de", 2.0)]).to_bytes()
    for cut in range(1, len(data)):
        with pytest.raises(StateFormatError):
            UserWindow.from_bytes(data[:cut])
    with pytest.raises(StateFormatError, match="trailing"):
        UserWindow.from_bytes(data + b"\x00")


def test_values_out_of_time_order_are_rejected() -> None:
    data = bytearray(UserWindow([entry("a", 1.0), entry("b", 2.0)]).to_bytes())
    first = data.index(struct.pack("<d", 1.0))
    data[first : first + 16] = struct.pack("<2d", 2.0, 1.0)
    with pytest.raises(StateFormatError, match="ascending"):
        UserWindow.from_bytes(bytes(data))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_state_format_error(data: bytes) -> None:
    for decode in (UserWindow.from_bytes, SeenItems.from_bytes):
        with contextlib.suppress(StateFormatError):
            decode(b"\x01" + data)


@given(window_entries, st.data())
def test_corrupted_values_decode_or_raise_state_format_error(
    entries: list[WindowEntry], data: st.DataObject
) -> None:
    value = bytearray(UserWindow(entries).to_bytes())
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    value[position] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(StateFormatError):
        UserWindow.from_bytes(bytes(value))


# --- seen items ---------------------------------------------------------------------------


def test_seen_items_forget_the_least_recent_first() -> None:
    seen = SeenItems(capacity=3)
    seen.update(["a", "b", "c", "d"])
    assert seen.items() == ["b", "c", "d"] and "a" not in seen
    seen.add("b")  # consumed again: most recent now
    seen.add("e")
    assert seen.items() == ["d", "b", "e"]
    assert len(seen) == 3


def test_seen_items_default_capacity_and_zero_capacity() -> None:
    assert SeenItems().capacity == 5000
    nothing = SeenItems(capacity=0)
    nothing.add("a")
    assert len(nothing) == 0 and "a" not in nothing
    assert SeenItems.from_bytes(nothing.to_bytes()) == nothing
    with pytest.raises(ValueError, match="capacity"):
        SeenItems(capacity=-1)


@settings(max_examples=50)
@given(st.lists(st.text(max_size=6), max_size=300), st.integers(min_value=0, max_value=40))
def test_seen_items_equal_the_reference_model_and_round_trip(
    item_ids: list[str], capacity: int
) -> None:
    seen = SeenItems(capacity)
    reference: list[str] = []
    for item_id in item_ids:
        seen.add(item_id)
        if item_id in reference:
            reference.remove(item_id)
        reference.append(item_id)
        reference = reference[max(0, len(reference) - capacity) :]
        assert seen.items() == reference
    decoded = SeenItems.from_bytes(seen.to_bytes())
    assert decoded == seen and decoded.capacity == capacity
    smaller = SeenItems.from_bytes(seen.to_bytes(), capacity=capacity // 2)
    assert smaller.items() == reference[max(0, len(reference) - capacity // 2) :]
