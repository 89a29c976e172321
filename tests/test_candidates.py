"""Two-stage ranking: equal to exact when the budget covers the catalogue, close to it on a
realistic budget, and never a consumed, deleted or unencoded item among the candidates."""

from __future__ import annotations

import numpy as np
import pytest

from models.candidates import CandidateBudget, TwoStageRanker
from models.collaborative import CollaborativeCounts
from models.facets import user_facets
from models.ranking import HybridRanker, RankingRequest
from models.vector_index import ItemIndex


def _catalogue(rng, n, d=32, topics=12):
    centres = rng.normal(size=(topics, d))
    x = centres[rng.integers(topics, size=n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _counts(rng, n_items, users=60, length=40):
    counts = CollaborativeCounts(trending_head=64)
    t = 0.0
    for user in range(users):
        history: list[int] = []
        topic_items = rng.choice(n_items, size=25, replace=False)
        for _ in range(length):
            item = int(rng.choice(topic_items))
            counts.observe(
                item=item, previous=history[::-1][:10], t=t, weight=1.0, cluster=user % 4
            )
            history.append(item)
            t += 1.0
    return counts


def _requests(rng, vectors, n_users, *, centroids):
    requests = []
    for user in range(n_users):
        recent = [int(i) for i in rng.integers(len(vectors), size=int(rng.integers(1, 12)))]
        interest = vectors[recent].mean(axis=0)
        interest /= np.linalg.norm(interest)
        facets, importance = user_facets(vectors[recent], np.ones(len(recent)))
        cluster = user % 4 if user % 5 else None
        requests.append(
            RankingRequest(
                interest=interest,
                facets=facets,
                facet_importance=importance,
                cluster=cluster,
                centroid=None if cluster is None else centroids[cluster],
                recent=recent,
                exclude=np.array(
                    sorted(set(recent) | set(rng.integers(len(vectors), size=8))), np.int64
                ),
            )
        )
    return requests


@pytest.fixture
def world():
    rng = np.random.default_rng(7)
    vectors = _catalogue(rng, 400)
    counts = _counts(rng, 400)
    centroids = _catalogue(rng, 4)
    index = ItemIndex(vectors.shape[1], precision="f32", expansion_search=512)
    index.upsert(np.arange(len(vectors)), vectors)
    return rng, vectors, counts, centroids, index


def test_two_stage_equals_exact_when_the_budget_covers_the_catalogue(world):
    rng, vectors, counts, centroids, index = world
    recommendable = np.ones(len(vectors), bool)
    recommendable[::17] = False
    requests = _requests(rng, vectors, 40, centroids=centroids)
    ranker = HybridRanker()
    everything = CandidateBudget(*(len(vectors),) * len(CandidateBudget().shares()))
    two_stage = TwoStageRanker(ranker, everything)
    columns = two_stage.candidates(
        requests,
        ranker.sparse_signals(requests, counts),
        counts,
        index,
        recommendable=recommendable,
        index_changes=0,
    )
    for row, r in enumerate(requests):  # every allowed item is a candidate
        allowed = set(np.flatnonzero(recommendable).tolist()) - set(r.exclude.tolist())
        assert set(columns.items[row][columns.allowed[row]].tolist()) == allowed
    exact = ranker.rank(requests, vectors, counts, k=10, recommendable=recommendable)
    staged = two_stage.rank(
        requests, vectors, counts, index, k=10, recommendable=recommendable, index_changes=0
    )
    for e, s in zip(exact, staged, strict=True):
        assert [r.index for r in s] == [r.index for r in e]
        assert [r.source for r in s] == [r.source for r in e]
        assert np.allclose([r.score for r in s], [r.score for r in e], atol=1e-5)


def test_candidates_never_hold_consumed_deleted_or_unencoded_items(world):
    rng, vectors, counts, centroids, index = world
    recommendable = rng.random(len(vectors)) > 0.3  # deleted or not encoded yet
    requests = _requests(rng, vectors, 30, centroids=centroids)
    ranker = HybridRanker()
    two_stage = TwoStageRanker(ranker, CandidateBudget.split(120))
    columns = two_stage.candidates(
        requests,
        ranker.sparse_signals(requests, counts),
        counts,
        index,
        recommendable=recommendable,
        index_changes=0,
    )
    for row, r in enumerate(requests):
        items = columns.items[row][columns.allowed[row]]
        assert len(items) and len(items) == len(set(items.tolist()))
        assert recommendable[items].all()
        assert not np.isin(items, r.exclude).any()
    ranked = two_stage.rank(
        requests, vectors, counts, index, k=10, recommendable=recommendable, index_changes=0
    )
    for r, top in zip(requests, ranked, strict=True):
        chosen = [x.index for x in top]
        assert len(chosen) == 10 and recommendable[chosen].all()
        assert not set(chosen) & set(r.exclude.tolist())


def test_a_realistic_budget_finds_the_exact_top_ten():
    rng = np.random.default_rng(11)
    vectors = _catalogue(rng, 6_000, d=48, topics=40)
    counts = _counts(rng, 6_000, users=300)
    centroids = _catalogue(rng, 4, d=48)
    index = ItemIndex(48)
    index.upsert(np.arange(len(vectors)), vectors)
    requests = _requests(rng, vectors, 120, centroids=centroids)
    recommendable = np.ones(len(vectors), bool)
    ranker = HybridRanker()
    exact = ranker.rank(requests, vectors, counts, k=10, recommendable=recommendable)
    staged = TwoStageRanker(ranker, CandidateBudget.split(320)).rank(
        requests, vectors, counts, index, k=10, recommendable=recommendable, index_changes=0
    )
    recall = np.mean(
        [
            len({r.index for r in s} & {r.index for r in e}) / len(e)
            for e, s in zip(exact, staged, strict=True)
        ]
    )
    print(f"recall of the exact top-10: {recall:.3f}")
    assert recall >= 0.95, recall
