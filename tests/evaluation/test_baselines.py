"""Baselines against plain brute-force definitions, and the engine adapter on the real encoder."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.contracts import BehaviourEvent, CatalogItem
from models.evaluation.baselines import (
    BASELINE_NAMES,
    EngineRecommender,
    GlobalPopularity,
    ItemTransitions,
    LastItemTextSimilarity,
    RecentItemsTransitions,
    RecentPopularity,
    build_baselines,
    resolve_baseline_names,
    top_k_indices,
)
from models.evaluation.protocols import prequential
from models.settings import EngineSettings

from . import catalogue, sequential_stream

N_ITEMS = 50


@pytest.fixture(scope="module")
def stream() -> list[BehaviourEvent]:
    return sequential_stream(n_users=20, n_items=N_ITEMS, events_per_user=12, seed=11)


def _view(user: str, item: str, ts: float) -> BehaviourEvent:
    return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)


# ------------------------------------------------------------------ top-k


@given(
    st.lists(
        st.one_of(st.sampled_from([0.0, 1.0, 2.0, -math.inf]), st.floats(-5, 5)),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=0, max_value=2**31),
)
def test_top_k_matches_a_full_sort_with_the_documented_tie_rule(scores, k, seed):
    scores = np.array(scores)
    labels = np.random.default_rng(seed).permutation(len(scores))
    finite = [i for i in range(len(scores)) if np.isfinite(scores[i])]
    assert top_k_indices(scores, k).tolist() == sorted(finite, key=lambda i: (-scores[i], i))[:k]
    expected = sorted(finite, key=lambda i: (-scores[i], labels[i]))[:k]
    assert top_k_indices(scores, k, labels).tolist() == expected


# ------------------------------------------------------------------ brute-force references


def _reference_scores(model, events, user_id, n_items):
    """Score of every catalogue item for ``user_id`` computed from scratch from ``events``."""
    histories: dict[str, list[str]] = {}
    for e in events:
        histories.setdefault(e.user_id, []).append(e.item_id)
    scores = np.zeros(n_items)
    index = {f"i{n}": n for n in range(n_items)}
    if isinstance(model, RecentPopularity):
        now = events[-1].ts
        for e in events:
            scores[index[e.item_id]] += 2.0 ** (-(now - e.ts) / model.half_life_s)
    elif isinstance(model, RecentItemsTransitions):  # ItemTransitions included
        successors: dict[str, Counter] = {}
        for history in histories.values():
            for j, item in enumerate(history):
                for s in range(1, model.window + 1):
                    if j - s >= 0:
                        successors.setdefault(history[j - s], Counter())[item] += (
                            model.distance_decay**s
                        )
        mine = histories.get(user_id, [])
        for r, source in enumerate(reversed(mine[-model.recent_items :])):
            for item, count in successors.get(source, Counter()).items():
                scores[index[item]] += model.recency_decay**r * count
    else:
        for e in events:
            scores[index[e.item_id]] += 1.0
    return scores


@pytest.mark.parametrize(
    "make",
    [
        lambda items: GlobalPopularity(items),
        lambda items: RecentPopularity(items, half_life_s=1800.0),  # forces landmark rescaling
        lambda items: ItemTransitions(items),
        lambda items: RecentItemsTransitions(items),
        lambda items: RecentItemsTransitions(items, window=3, recent_items=4, recency_decay=0.5),
    ],
    ids=["popularity", "recent-popularity", "item-transitions", "recent-items", "recent-items-w3"],
)
def test_count_baselines_rank_like_their_brute_force_definition(stream, make):
    model = make(catalogue(N_ITEMS))
    for position, event in enumerate(stream):
        model.learn([event])
        if position % 7:
            continue
        seen = stream[: position + 1]
        consumed = {int(e.item_id[1:]) for e in seen if e.user_id == event.user_id}
        scores = _reference_scores(model, seen, event.user_id, N_ITEMS)
        allowed = [i for i in range(N_ITEMS) if i not in consumed]
        expected = sorted(allowed, key=lambda i: (-scores[i], i))[:10]
        got = [int(i[1:]) for i in model.recommend([event.user_id], 10)[0]]
        assert not set(got) & consumed
        # equal up to float rounding of equal scores: compare the scores position by position
        np.testing.assert_allclose(scores[got], scores[expected], rtol=1e-9, atol=1e-12)


def test_exclusion_is_unbounded_and_lists_may_be_short():
    items = catalogue(6)
    model = GlobalPopularity(items)
    model.learn([_view("u1", f"i{n}", float(n)) for n in range(4)])
    assert model.recommend(["u1"], k=10) == [["i4", "i5"]]
    model.learn([_view("u1", "i4", 9.0), _view("u1", "i5", 10.0)])
    assert model.recommend(["u1"], k=10) == [[]]


def test_an_item_first_met_in_an_event_joins_the_catalogue():
    model = ItemTransitions(catalogue(3))
    model.learn([_view("u1", "i0", 1.0), _view("u1", "brand-new", 2.0), _view("u2", "i0", 3.0)])
    assert model.index_of("brand-new") == 3
    assert model.recommend(["u2"], k=1) == [["brand-new"]]


def test_ties_of_transition_scores_go_to_the_lower_catalogue_index():
    model = ItemTransitions(catalogue(5))
    # i3 is popular but never follows i0; i1 follows i0 once: popularity breaks no tie.
    model.learn([_view(u, "i3", float(t)) for t, u in enumerate(["a", "b", "c"])])
    model.learn([_view("d", "i0", 10.0), _view("d", "i1", 11.0), _view("e", "i0", 12.0)])
    assert model.recommend(["e"], k=3) == [["i1", "i2", "i3"]]


def test_recent_popularity_prefers_what_is_popular_now():
    model = RecentPopularity(catalogue(3), half_life_s=10.0)
    model.learn([_view(f"u{n}", "i0", float(n)) for n in range(3)])
    model.learn([_view("v", "i1", 100.0), _view("w", "i1", 101.0)])
    assert model.recommend(["z"], k=2) == [["i1", "i0"]]
    with pytest.raises(ValueError, match="half_life_s"):
        RecentPopularity(half_life_s=0.0)


# ------------------------------------------------------------------ text similarity


def test_text_similarity_ranks_by_cosine_with_the_last_item(minilm_encoder):
    items = catalogue(18)
    model = LastItemTextSimilarity(items, encoder=minilm_encoder)
    model.learn([_view("u1", "i3", 1.0), _view("u1", "i4", 2.0)])
    vectors = minilm_encoder.encode([item.render_text() for item in items])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = vectors @ vectors[4]
    expected = [i for i in np.argsort(-cosine, kind="stable").tolist() if i not in (3, 4)][:5]
    got = [int(item_id[1:]) for item_id in model.recommend(["u1"], k=5)[0]]
    np.testing.assert_allclose(cosine[got], cosine[expected], rtol=1e-5)
    assert {10, 16} <= set(got[:3])  # the other football stories come first


def test_text_similarity_encodes_an_item_first_met_in_an_event(minilm_encoder):
    model = LastItemTextSimilarity(catalogue(18), encoder=minilm_encoder)
    event = _view("u2", "new", 3.0).model_copy(update={"item_text": "A war story number 99"})
    model.learn([event])
    assert model.index_of("new") == 18
    assert set(model.recommend(["u2"], k=3)[0]) <= {"i3", "i9", "i15"}


def test_history_only_recommenders_score_identically_batched_and_strict(stream, minilm_encoder):
    items = catalogue(N_ITEMS)
    name = "text-similarity"
    batched, one_by_one = (
        prequential(
            stream, [LastItemTextSimilarity(items, encoder=minilm_encoder)], k=10, max_run=runs
        )
        for runs in (256, 1)
    )
    assert one_by_one.parameters["runs"] > 2 * batched.parameters["runs"]
    assert batched.recommenders[name].ranks.tolist() == one_by_one.recommenders[name].ranks.tolist()
    assert batched.recommenders[name].summary.hr > 0


# ------------------------------------------------------------------ the engine adapter


def test_engine_recommender_runs_the_real_engine_under_prequential(stream, minilm_encoder):
    items = catalogue(N_ITEMS)
    settings = EngineSettings()
    driftrec = EngineRecommender.build(settings, items, encoder=minilm_encoder)
    unclustered = EngineRecommender.build(
        settings.model_copy(update={"clustering": False}),
        items,
        encoder=minilm_encoder,
        name="driftrec-no-clustering",
    )
    assert driftrec.engine.clusterer is not None and unclustered.engine.clusterer is None
    popularity = GlobalPopularity(items)
    result = prequential(stream, [driftrec, unclustered, popularity], k=10, every=2)
    for name in ("driftrec", "driftrec-no-clustering"):
        r = result.recommenders[name]
        assert r.consumed_in_lists == 0, name
        assert r.summary.n == result.n_scored > 50
        # item chains: the engine's transitions find the next item far more often than chance
        assert r.summary.hr > 2 * result.recommenders["popularity"].summary.hr, name
    assert driftrec.engine.stats.events == len(stream)
    driftrec.close()
    unclustered.close()


def test_build_baselines_by_name(minilm_encoder):
    items = catalogue(5)
    built = build_baselines(list(BASELINE_NAMES), items, encoder=minilm_encoder)
    assert [b.name for b in built] == list(BASELINE_NAMES)
    unclustered, exact = built[-2:]
    assert isinstance(unclustered, EngineRecommender) and isinstance(exact, EngineRecommender)
    assert unclustered.engine.clusterer is None
    assert exact.engine.clusterer is not None and exact.engine.settings.ranking == "exact"
    unclustered.close()
    exact.close()
    with pytest.raises(ValueError, match="needs the text encoder"):
        build_baselines(["text-similarity"], items)
    with pytest.raises(ValueError, match="unknown baselines"):
        build_baselines(["nope"], items)


def test_resolve_baseline_names():
    assert resolve_baseline_names("all") == list(BASELINE_NAMES)
    assert resolve_baseline_names(" NONE ") == []
    assert resolve_baseline_names("text-similarity,popularity") == ["popularity", "text-similarity"]
    with pytest.raises(ValueError, match="unknown baseline 'populr'"):
        resolve_baseline_names("populr")


def test_catalogue_items_are_known_before_any_event():
    items = [CatalogItem(item_id="x", title="X"), CatalogItem(item_id="y", title="Y")]
    model = GlobalPopularity(items)
    assert model.recommend(["anyone"], k=5) == [["x", "y"]]
