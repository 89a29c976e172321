"""The engine end to end with the real MiniLM encoder and RocksDB state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.contracts import BehaviourEvent, CatalogItem, Recommendation
from models.engine import Engine
from models.settings import EngineSettings
from models.synthetic_shop import synthetic_shop

DAY = 86_400.0


@pytest.fixture(scope="module")
def shop():
    return synthetic_shop(n_users=40, items_per_topic=12, events_per_user=25, n_topics=6, seed=3)


def _engine(tmp_path, encoder, **overrides) -> Engine:
    settings = EngineSettings(data_dir=tmp_path / "data", **overrides)
    return Engine.build(settings, encoder=encoder)


def _event(user, item, ts, kind="purchase", **extra) -> BehaviourEvent:
    return BehaviourEvent(user_id=user, item_id=item, event=kind, ts=ts, weight=5.0, **extra)


def test_one_schema_valid_recommendation_per_event(tmp_path, minilm_encoder, shop):
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items(shop.items)
    events = shop.events[:300]
    recs = []
    for start in range(0, len(events), 32):
        recs += engine.process(events[start : start + 32])
    assert len(recs) == len(events)
    consumed: dict[str, set[str]] = {}
    for event in events:
        consumed.setdefault(event.user_id, set()).add(event.item_id)
    for rec in recs:
        assert Recommendation.model_validate_json(rec.to_json_bytes()) == rec
        body = json.loads(rec.to_json_bytes())
        assert set(body) == {
            "user_id",
            "event_id",
            "ts",
            "emitted_at",
            "cluster",
            "items",
            "model_version",
            "latency_ms",
        }
        assert set(body["cluster"]) == {"id", "similarity", "previous", "label"}
        assert len(body["items"]) == 10
        assert all(set(i) == {"item_id", "score", "source", "because"} for i in body["items"])
    # Reasons: every item brought by transitions or similarity names an item the user had
    # consumed by then; trending and cluster popularity are their own reason.
    # (A batch is learned, then ranked: a list may name any item of its batch.)
    so_far: dict[str, set[str]] = {}
    explained = 0
    for position, (event, rec) in enumerate(zip(events, recs, strict=True)):
        if position % 32 == 0:
            for later in events[position : position + 32]:
                so_far.setdefault(later.user_id, set()).add(later.item_id)
        for item in rec.items:
            if item.source in ("transitions", "cluster-transitions", "content", "facet"):
                assert len(item.because) == 1 and item.because[0] in so_far[event.user_id]
                explained += 1
            elif item.source in ("trending", "cluster-popular"):
                assert item.because == []
    assert explained > len(recs), "hardly any item was explained"
    last = {r.user_id: r for r in recs}
    for user, rec in last.items():
        assert not {i.item_id for i in rec.items} & consumed[user], "consumed item recommended"
    assert {r.cluster.id for r in recs} - {None}, "no cluster was ever assigned"
    assert engine.model_version > 0
    engine.close()


def test_state_survives_a_restart_with_the_same_data_dir(tmp_path, minilm_encoder, shop):
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items(shop.items)
    user = shop.events[0].user_id
    mine = [e for e in shop.events if e.user_id == user][:8]
    engine.process(mine)
    before = engine.recommend([user])[0]
    engine.close()
    again = _engine(tmp_path, minilm_encoder)
    again.upsert_items(shop.items)
    window = again.windows.get_windows([user])[0]
    assert [e.item_id for e in window.entries] == [
        e.item_id for e in sorted(mine, key=lambda e: e.ts)
    ]
    after = again.recommend([user])[0]
    consumed = {e.item_id for e in mine}
    assert not {again.catalog.id_of(r.index) for r in after} & consumed
    # content-driven lists agree: the interest vector was rebuilt from the stored window
    content_before = {r.index for r in before if r.source in ("content", "facet")}
    content_after = {r.index for r in after if r.source in ("content", "facet")}
    assert content_before & content_after
    again.close()


def test_out_of_order_events_are_placed_by_event_time(tmp_path, minilm_encoder, shop):
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items(shop.items)
    ids = [i.item_id for i in shop.items[:4]]
    engine.process([_event("u", ids[0], 100.0), _event("u", ids[1], 300.0)])
    engine.process([_event("u", ids[2], 200.0)])
    window = engine.windows.get_windows(["u"])[0]
    assert [e.item_id for e in window.entries] == [ids[0], ids[2], ids[1]]
    # the late event follows what preceded it in event time, not what arrived before it
    index = [engine.catalog.index_of(i) for i in ids[:3]]
    assert index[2] in engine.counts.transitions.row(index[0])
    assert index[2] not in engine.counts.transitions.row(index[1])
    engine.close()


def test_unknown_items_are_provisional_then_upgraded(tmp_path, minilm_encoder):
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items([CatalogItem(item_id="a", title="Espresso machine", tags=["coffee"])])
    engine.process([_event("u", "b", 10.0, item_text="Burr coffee grinder")])
    assert engine.catalog.is_provisional("b")
    provisional = engine.catalog.vectors[engine.catalog.index_of("b")].copy()
    engine.upsert_items([CatalogItem(item_id="b", title="Trail running shoes", tags=["running"])])
    assert not engine.catalog.is_provisional("b")
    upgraded = engine.catalog.vectors[engine.catalog.index_of("b")]
    assert float(provisional @ upgraded) < 0.9
    engine.close()


def test_deleted_items_are_not_recommended(tmp_path, minilm_encoder, shop):
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items(shop.items)
    engine.process(shop.events[:200])
    user = shop.events[199].user_id
    top = engine.recommend([user])[0]
    gone = engine.catalog.id_of(top[0].index)
    assert engine.delete_item(gone)
    assert gone not in {engine.catalog.id_of(r.index) for r in engine.recommend([user])[0]}
    engine.close()


def test_recommend_learns_nothing(tmp_path, minilm_encoder, shop):
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items(shop.items)
    engine.process(shop.events[:100])
    users = sorted({e.user_id for e in shop.events[:100]})
    first = engine.recommend(users)
    second = engine.recommend(users)
    assert [[r.index for r in a] for a in first] == [[r.index for r in b] for b in second]
    assert engine.stats.events == 100
    engine.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"interest_mode": "sequence"},
        {"clustering": False},
        {"facets": 0},
        {"emit_per": "user"},
    ],
)
def test_modes(tmp_path, minilm_encoder, shop, overrides):
    engine = _engine(tmp_path, minilm_encoder, **overrides)
    engine.upsert_items(shop.items)
    batch = shop.events[:64]
    recs = engine.process(batch)
    if overrides.get("emit_per") == "user":
        assert len(recs) == len({e.user_id for e in batch})
    else:
        assert len(recs) == len(batch)
    if overrides.get("clustering") is False:
        assert all(r.cluster.id is None for r in recs) and engine.model_version == 0
    assert all(len(r.items) == 10 for r in recs)
    engine.close()


def test_sequence_mode_encodes_the_rendered_window(tmp_path, minilm_encoder, shop):
    engine = _engine(tmp_path, minilm_encoder, interest_mode="sequence")
    engine.upsert_items(shop.items)
    user = shop.events[0].user_id
    mine = [e for e in shop.events if e.user_id == user][:5]
    state = engine.learn(mine)[user]
    from models.interest import render_sequence

    text = render_sequence(list(state.window.entries), engine._text_of_item)
    expected = minilm_encoder.encode([text], max_tokens=engine.settings.sequence_max_tokens)[0]
    np.testing.assert_allclose(state.interest, expected, atol=1e-5)
    engine.close()


def test_users_follow_their_drift_into_new_clusters(tmp_path, minilm_encoder):
    """A user who switches topic moves to the cluster of users of the new topic."""
    drift_shop = synthetic_shop(
        n_users=60, items_per_topic=16, events_per_user=40, n_topics=6, drift_share=1.0, seed=11
    )
    engine = _engine(tmp_path, minilm_encoder)
    engine.upsert_items(drift_shop.items)
    moves = 0
    for start in range(0, len(drift_shop.events), 64):
        for rec in engine.process(drift_shop.events[start : start + 64]):
            if rec.cluster.previous is not None and rec.cluster.previous != rec.cluster.id:
                moves += 1
    assert moves >= 20, f"only {moves} cluster moves for 60 drifting users"
    engine.close()


def test_ranking_switches_to_two_stage_above_the_catalogue_size(tmp_path, minilm_encoder, shop):
    """auto: exact on a small catalogue, two-stage (with a built index) above the setting;
    the recommendations of both hold no consumed item, and mostly the same items."""
    events = shop.events[:200]
    lists = {}
    for mode, limit in (("exact", 10_000), ("two-stage", len(shop.items) - 1)):
        engine = _engine(tmp_path / mode, minilm_encoder, ranking="auto", exact_max_items=limit)
        engine.upsert_items(shop.items)
        recs = []
        for start in range(0, len(events), 32):
            recs += engine.process(events[start : start + 32])
        assert engine.stats.ranking_mode == mode
        assert (engine.index is not None) == (mode == "two-stage")
        consumed: dict[str, set[str]] = {}
        for event, rec in zip(events, recs, strict=True):
            consumed.setdefault(event.user_id, set()).add(event.item_id)
            assert not {i.item_id for i in rec.items} & consumed[event.user_id]
        lists[mode] = [[i.item_id for i in r.items] for r in recs]
        engine.close()
    overlap = np.mean(
        [len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(*lists.values(), strict=True)]
    )
    assert overlap >= 0.9, overlap


def test_the_index_follows_the_catalogue_and_is_adopted_after_a_restart(
    tmp_path, minilm_encoder, shop
):
    engine = _engine(tmp_path, minilm_encoder, ranking="two-stage")
    engine.upsert_items(shop.items)
    engine.process(shop.events[:64])
    assert engine.index is not None and len(engine.index) == len(shop.items)
    assert engine.stats.index_origin == "built"
    gone = shop.items[0].item_id
    engine.delete_item(gone)
    engine.upsert_items([CatalogItem(item_id="new-1", title="A brand new teapot")])
    engine.process(shop.events[64:96])
    index = engine.index
    assert len(index) == len(shop.items)  # one deleted, one added
    assert engine.catalog.index_of(gone) not in index
    assert engine.catalog.index_of("new-1") in index
    engine.close()

    # The next engine on this data_dir reads the catalogue in another order: the items keep
    # the indices the saved index is keyed by.
    again = _engine(tmp_path, minilm_encoder, ranking="two-stage")
    again.upsert_items(list(reversed(shop.items)))
    assert again.catalog.index_of(shop.items[0].item_id) == 0
    again.delete_item(gone)
    again.upsert_items([CatalogItem(item_id="new-1", title="A brand new teapot")])
    restored = again.sync_index()
    assert again.stats.index_origin == "restored"
    assert len(restored) == len(shop.items)
    assert again.catalog.index_of(gone) not in restored
    again.close()
