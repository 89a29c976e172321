"""Ranking metrics on hand-computed cases, and their invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.evaluation.metrics import (
    MISS,
    RankAccumulator,
    hit_rank,
    hit_rate_per_slice,
    ndcg_of_ranks,
    reciprocal_ranks,
    summarise,
    time_slices,
)


def test_hand_computed_hr_ndcg_mrr_coverage():
    # Four lists of k=10: hits at positions 0, 2 and 9, one miss.
    ranks = np.array([0, 2, MISS, 9])
    s = summarise(ranks, distinct_items=30, catalogue_size=120)
    assert s.n == 4
    assert s.hr == pytest.approx(3 / 4)
    assert s.ndcg == pytest.approx((1 + 1 / math.log2(4) + 0 + 1 / math.log2(11)) / 4)
    assert s.mrr == pytest.approx((1 + 1 / 3 + 0 + 1 / 10) / 4)
    assert s.coverage == pytest.approx(0.25)
    assert s.distinct_items == 30


def test_ndcg_with_one_relevant_item_is_inverse_log_of_position():
    # the standard single-target NDCG: the ideal DCG is 1, a hit at rank r (1-based) is 1/log2(r+1)
    assert ndcg_of_ranks(np.array([0])).tolist() == [1.0]
    assert ndcg_of_ranks(np.array([1]))[0] == pytest.approx(1 / math.log2(3))
    assert ndcg_of_ranks(np.array([MISS])).tolist() == [0.0]
    assert reciprocal_ranks(np.array([4, MISS])).tolist() == [0.2, 0.0]


def test_empty_summary_is_all_zero():
    s = summarise(np.zeros(0, np.int32), distinct_items=0, catalogue_size=0)
    assert (s.n, s.hr, s.ndcg, s.mrr, s.coverage) == (0, 0.0, 0.0, 0.0, 0.0)


def test_hit_rank_finds_the_first_position():
    assert hit_rank(["a", "b", "c"], "c") == 2
    assert hit_rank([], "c") == MISS


def test_accumulator_scores_lists_and_counts_consumed_items():
    acc = RankAccumulator(k=3)
    assert acc.add(["x", "y", "z"], target="z", consumed={"q"}) == 2
    assert acc.add(["x", "q"], target="w", consumed={"q", "r"}) == MISS
    assert acc.ranks.tolist() == [2, MISS]
    assert acc.recommended == {"x", "y", "z", "q"}
    assert acc.consumed_in_lists == 1
    s = acc.summary(catalogue_size=8)
    assert (s.hr, s.coverage) == (0.5, 0.5)
    assert s.mrr == pytest.approx(1 / 6)


def test_accumulator_rejects_a_list_longer_than_k():
    acc = RankAccumulator(k=2)
    with pytest.raises(ValueError, match="expected at most k=2"):
        acc.add(["a", "b", "c"], target="a")


def test_time_slices_are_consecutive_in_time_and_equal_in_size():
    rng = np.random.default_rng(1)
    times = rng.uniform(0, 1000, size=103)
    slices = time_slices(times, n_slices=20)
    assert len(slices) == 20
    assert {len(s) for s in slices} <= {5, 6}
    assert sorted(np.concatenate(slices).tolist()) == list(range(103))
    for earlier, later in itertools.pairwise(slices):
        assert times[earlier].max() <= times[later].min()
    assert len(time_slices(times[:3], n_slices=20)) == 3
    assert time_slices(np.zeros(0)) == []


def test_hit_rate_per_slice_hand_case():
    times = np.array([4.0, 1.0, 3.0, 2.0, 6.0, 5.0])
    ranks = np.array([MISS, 0, 5, MISS, 1, 1])
    # slices by time: {1,2}->[0, MISS], {3,4}->[5, MISS], {5,6}->[1, 1]
    assert hit_rate_per_slice(ranks, time_slices(times, n_slices=3)) == [0.5, 0.5, 1.0]


@given(st.lists(st.integers(min_value=-1, max_value=49), min_size=1, max_size=200))
def test_metric_ordering_holds_for_any_ranks(rank_list):
    s = summarise(np.array(rank_list), distinct_items=1, catalogue_size=1)
    assert 0.0 <= s.mrr <= s.ndcg <= s.hr <= 1.0
    assert s.hr == pytest.approx(sum(r >= 0 for r in rank_list) / len(rank_list))
