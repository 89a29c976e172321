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


def test_user_lists_reuse_an_answer_only_while_the_query_has_not_moved(world):
    """The per-user index answers: reused for the same query, searched again when it moved,
    when the index changed a lot since, and forgotten beyond the capacity."""
    from models.candidates import _UserLists

    _, vectors, _, _, index = world
    lists = _UserLists(capacity=2)
    query = vectors[3]
    first = lists.nearest([(0, "u", query, 20)], index, changes=0)
    assert (lists.searched, lists.reused) == (1, 0)
    again = lists.nearest([(5, "u", query.copy(), 10)], index, changes=1)
    assert (lists.searched, lists.reused) == (1, 1)
    assert again[0][0] == 5 and np.array_equal(again[0][1], first[0][1][:10])
    # Deeper than what was asked before, or moved: the index answers.
    lists.nearest([(0, "u", query, 40)], index, changes=1)
    moved = vectors[200] if float(vectors[200] @ query) < 0.9 else -query
    lists.nearest([(0, "u", moved, 10)], index, changes=1)
    assert lists.searched == 3
    # Many index changes since: searched again, though the query is the same.
    lists.nearest([(0, "u", moved, 10)], index, changes=1 + 101)
    assert lists.searched == 4
    # Another user's identical query is not theirs to reuse; capacity 2 forgets the oldest.
    lists.nearest([(0, "v", moved, 10)], index, changes=102)
    lists.nearest([(0, "w", moved, 10)], index, changes=102)
    assert lists.searched == 6
    lists.nearest([(0, "u", moved, 10)], index, changes=102)
    assert lists.searched == 7
    # What a search returns is the index's own answer.
    keys, _ = index.search(moved[None, :], 10)
    assert np.array_equal(lists.nearest([(0, "w", moved, 10)], index, changes=102)[0][1], keys[0])


def test_reusing_answers_leaves_the_ranking_of_unchanged_users_as_it_was(world):
    rng, vectors, counts, centroids, index = world
    requests = _requests(rng, vectors, 30, centroids=centroids)
    named = [
        RankingRequest(**{f: getattr(r, f) for f in r.__slots__ if f != "user_id"}, user_id=f"u{b}")
        for b, r in enumerate(requests)
    ]
    recommendable = np.ones(len(vectors), bool)
    fresh = TwoStageRanker(HybridRanker(), user_lists=0)
    reusing = TwoStageRanker(HybridRanker())
    kwargs = dict(k=10, recommendable=recommendable, index_changes=0)
    expected = fresh.rank(named, vectors, counts, index, **kwargs)
    for _ in range(2):
        got = reusing.rank(named, vectors, counts, index, **kwargs)
        assert [[r.index for r in row] for row in got] == [
            [r.index for r in row] for row in expected
        ]
    assert reusing._user_lists.reused > 0
