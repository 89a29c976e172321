"""Hybrid ranking: exclusions, sources, batch = one-by-one, facets serve both interests."""

from __future__ import annotations

import numpy as np

from models.collaborative import CollaborativeCounts
from models.facets import user_facets
from models.ranking import (
    SOURCES,
    BlendWeights,
    HybridRanker,
    RankingRequest,
    facet_shares,
    facet_shares_many,
)


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _request(vectors, recent, exclude, cluster=None):
    interest = vectors[recent].mean(axis=0)
    interest /= np.linalg.norm(interest)
    facets, importance = user_facets(vectors[recent], np.ones(len(recent)))
    return RankingRequest(
        interest=interest,
        facets=facets,
        facet_importance=importance,
        cluster=cluster,
        centroid=None,
        recent=recent,
        exclude=np.array(exclude, np.int64),
    )


def _counts(n_items, rng):
    counts = CollaborativeCounts()
    for t in range(500):
        a, b = rng.integers(n_items, size=2)
        counts.observe(item=int(b), previous=[int(a)], t=float(t), weight=1.0, cluster=int(a) % 3)
    return counts


def test_batch_equals_one_by_one_and_excludes_consumed():
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 300, 16)
    counts = _counts(300, rng)
    ranker = HybridRanker()
    requests = [
        _request(
            vectors,
            [int(i) for i in rng.integers(300, size=5)],
            list(rng.integers(300, size=20)),
            cluster=c,
        )
        for c in (0, 1, None, 2)
    ]
    batch = ranker.rank(requests, vectors, counts, k=10)
    for request, ranked in zip(requests, batch, strict=True):
        alone = ranker.rank([request], vectors, counts, k=10)[0]
        assert [r.index for r in alone] == [r.index for r in ranked]
        assert len(ranked) == 10
        assert not {r.index for r in ranked} & set(request.exclude.tolist())
        scores = [r.score for r in ranked]
        assert scores == sorted(scores, reverse=True)
        assert all(r.source in SOURCES for r in ranked)


def test_recommendable_mask_and_small_catalogue():
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 5, 8)
    mask = np.array([True, False, True, True, False])
    ranked = HybridRanker().rank(
        [_request(vectors, [0], [0])], vectors, CollaborativeCounts(), k=10, recommendable=mask
    )[0]
    assert sorted(r.index for r in ranked) == [2, 3]


def test_source_names_the_dominant_signal():
    vectors = np.eye(4, dtype=np.float32)
    counts = CollaborativeCounts()
    counts.observe(item=3, previous=[0], t=0.0, weight=1.0, cluster=None)
    request = RankingRequest(
        interest=vectors[2],
        facets=None,
        facet_importance=None,
        cluster=None,
        centroid=None,
        recent=[0],
        exclude=np.array([0]),
    )
    only_content = HybridRanker(
        BlendWeights(
            content=1,
            facet=0,
            centroid=0,
            transitions=0,
            cluster_transitions=0,
            cluster_popular=0,
            trending=0,
        )
    )
    assert only_content.rank([request], vectors, counts, k=1)[0][0].index == 2
    assert only_content.rank([request], vectors, counts, k=1)[0][0].source == "content"
    ranked = HybridRanker(BlendWeights(content=0.2, trending=0)).rank(
        [request], vectors, counts, k=2
    )[0]
    assert (ranked[0].index, ranked[0].source) == (3, "transitions")


def test_facets_serve_two_unrelated_interests():
    """Half the window is one topic, half another: the top list holds both topics."""
    rng = np.random.default_rng(3)
    topic_a, topic_b = _unit(rng, 2, 32)
    items = []
    for centre in (topic_a, topic_b):
        noise = rng.normal(scale=0.25, size=(40, 32))
        block = centre + noise / np.sqrt(32)
        items.append(block / np.linalg.norm(block, axis=1, keepdims=True))
    vectors = np.vstack([*items, _unit(rng, 200, 32)]).astype(np.float32)
    recent = [0, 1, 2, 3, 4, 5, 40, 41]  # six of topic A, two of topic B
    request = _request(vectors, recent, recent)
    assert len(request.facets) == 2
    only_facets = HybridRanker(
        BlendWeights(
            content=0,
            facet=1,
            centroid=0,
            transitions=0,
            cluster_transitions=0,
            cluster_popular=0,
            trending=0,
        )
    )
    top = {r.index for r in only_facets.rank([request], vectors, CollaborativeCounts(), k=10)[0]}
    assert top & set(range(40)) and top & set(range(40, 80))


def _facet_shares_loop(similarity, importance, allowed, k):
    """The per-facet reference: rank each facet's allowed items, keep each item's best score."""
    out = np.zeros(similarity.shape[1])
    depth = min(similarity.shape[1], 3 * k)
    for f in range(len(similarity)):
        cand = [i for i in np.argsort(-similarity[f], kind="stable") if allowed[i]][:depth]
        share = max(float(importance[f]), 1e-6) * k
        for rank, i in enumerate(cand):
            out[i] = max(out[i], 1.0 / (1.0 + rank / share))
    return out


def test_batched_facet_shares_equal_one_user_at_a_time() -> None:

    rng = np.random.default_rng(3)
    n_users, n_items, k = 7, 40, 5
    n_facets = rng.integers(1, 4, size=n_users)
    similarity = rng.normal(size=(int(n_facets.sum()), n_items))
    importance = rng.uniform(0.05, 1.0, size=len(similarity))
    owners = np.repeat(np.arange(n_users), n_facets)
    allowed = rng.uniform(size=(n_users, n_items)) > 0.3
    batched = facet_shares_many(similarity, importance, owners, allowed, k)
    for user in range(n_users):
        rows = owners == user
        expected = _facet_shares_loop(similarity[rows], importance[rows], allowed[user], k)
        assert np.allclose(batched[user], expected)
        assert np.allclose(
            facet_shares(similarity[rows], importance[rows], allowed[user], k), expected
        )
