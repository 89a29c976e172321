"""Collaborative counts: the recent-items transition semantics, decay, deltas, bounds."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.collaborative import CollaborativeCounts
from models.forward_decay import ForwardDecay


def reference_transitions(streams, *, window, half_life, at, recent, decay, n_items):
    """Brute force: each consumption adds 0.5^(d-1) · 2^(-(at-t)/h) to prev_d → item."""
    counts = defaultdict(float)
    for user_events in streams.values():
        for pos, (item, t) in enumerate(user_events):
            previous = [i for i, _ in reversed(user_events[:pos])][:window]
            for d, source in enumerate(previous):
                if source != item:
                    counts[(source, item)] += 0.5**d * 2 ** (-(at - t) / half_life)
    scores = np.zeros(n_items)
    for r, source in enumerate(recent):
        for (s, item), c in counts.items():
            if s == source:
                scores[item] += decay**r * c
    return scores


events_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 9), st.floats(0, 50)), min_size=1, max_size=40
)


def feed(cc: CollaborativeCounts, events):
    streams: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for user, item, t in sorted(events, key=lambda e: e[2]):
        previous = [i for i, _ in reversed(streams[user])]
        cc.observe(item=item, previous=previous, t=t, weight=1.0, cluster=user % 2)
        streams[user].append((item, t))
    return streams


@settings(max_examples=60, deadline=None)
@given(events_strategy)
def test_transition_scores_match_brute_force(events):
    cc = CollaborativeCounts(half_life_s=20.0, transition_window=3)
    streams = feed(cc, events)
    at = max(t for *_, t in events)
    recent = [2, 5, 7]
    got = cc.transition_scores([recent], n_items=10, recency_decay=0.7)[0]
    want = reference_transitions(
        streams, window=3, half_life=20.0, at=at, recent=recent, decay=0.7, n_items=10
    )
    scale = cc.decay.to_decayed(1.0, at)
    np.testing.assert_allclose(got * scale, want, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(events_strategy, st.integers(0, 40))
def test_two_workers_deltas_add_up_to_one_worker(events, split):
    """Users are partitioned between two workers; merged deltas equal one worker's counts."""
    single = CollaborativeCounts(half_life_s=20.0)
    feed(single, events)
    ids = [f"i{n}" for n in range(10)]
    index_of = ids.index
    merged = CollaborativeCounts(half_life_s=20.0)
    for part in (0, 1):
        worker = CollaborativeCounts(half_life_s=20.0)
        feed(worker, [e for e in events if (e[0] < 2) == (part == 0)])
        merged.apply_delta(worker.pop_delta(ids.__getitem__), index_of)
    at = 60.0
    for a, b in ((single, merged), (merged, single)):
        pa = a.decay.to_decayed(1.0, at) * a.popularity_scores(10)
        pb = b.decay.to_decayed(1.0, at) * b.popularity_scores(10)
        np.testing.assert_allclose(pa, pb, rtol=1e-9, atol=1e-12)
    recent = [[1, 3, 5]]
    ta = single.decay.to_decayed(1.0, at) * single.transition_scores(
        recent, n_items=10, recency_decay=0.7
    )
    tb = merged.decay.to_decayed(1.0, at) * merged.transition_scores(
        recent, n_items=10, recency_decay=0.7
    )
    np.testing.assert_allclose(ta, tb, rtol=1e-9, atol=1e-12)
    ca = single.cluster_popularity_scores([0, 1], 10) * single.decay.to_decayed(1.0, at)
    cb = merged.cluster_popularity_scores([0, 1], 10) * merged.decay.to_decayed(1.0, at)
    np.testing.assert_allclose(ca, cb, rtol=1e-9, atol=1e-12)


def test_delta_is_proportional_to_change_and_resets():
    cc = CollaborativeCounts()
    for n in range(100):
        cc.observe(item=n, previous=[n - 1] if n else [], t=float(n), weight=1.0, cluster=None)
    first = cc.pop_delta(str)
    assert len(first.popularity) == 100
    cc.observe(item=5, previous=[99], t=200.0, weight=1.0, cluster=None)
    second = cc.pop_delta(str)
    assert set(second.popularity) == {"5"} and set(second.transitions) == {"99"}
    assert cc.pop_delta(str).is_empty()


def test_landmark_rescale_keeps_decayed_values():
    cc = CollaborativeCounts(half_life_s=1.0, trending_half_life_s=1.0)
    cc.observe(item=1, previous=[], t=0.0, weight=1.0, cluster=3)
    cc.observe(item=2, previous=[1], t=100.0, weight=1.0, cluster=3)  # 100 half-lives: rescale
    assert cc.decay.landmark == 100.0
    pop = cc.popularity_scores(3) * cc.decay.to_decayed(1.0, 100.0)
    np.testing.assert_allclose(pop, [0.0, 2.0**-100, 1.0])
    assert all(math.isfinite(v) for v in cc.transitions.row(1).values())


def test_memory_is_bounded_per_item():
    cc = CollaborativeCounts(transition_capacity=20)
    rng = np.random.default_rng(0)
    for n in range(5000):
        cc.observe(
            item=int(rng.integers(1, 2000)), previous=[0], t=float(n), weight=1.0, cluster=None
        )
    assert len(cc.transitions.row(0)) <= 40


def test_forward_decay_is_order_independent():
    a, b = ForwardDecay(10.0), ForwardDecay(10.0)
    times = [5.0, 1.0, 9.0]
    sa = sum(a.gain(t) for t in times)
    sb = sum(b.gain(t) for t in sorted(times))
    assert math.isclose(a.to_decayed(sa, 20.0), b.to_decayed(sb, 20.0))
