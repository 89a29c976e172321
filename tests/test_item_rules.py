"""Business rules in the engine (embedded mode), in exact and two-stage ranking alike:
unavailable and expired items, tag and id filters from settings, and a user's dismiss."""

from __future__ import annotations

import pytest

from models.contracts import BehaviourEvent, CatalogItem
from models.engine import Engine
from models.record_parser import EventParser
from models.settings import EngineSettings
from models.synthetic_shop import synthetic_shop

MODES = [
    pytest.param({"ranking": "exact"}, id="exact"),
    pytest.param({"ranking": "two-stage"}, id="two-stage"),
]


@pytest.fixture(scope="module")
def shop():
    return synthetic_shop(n_users=30, items_per_topic=12, events_per_user=20, n_topics=5, seed=11)


def _engine(tmp_path, encoder, shop, **overrides) -> Engine:
    engine = Engine.build(EngineSettings(data_dir=tmp_path / "data", **overrides), encoder=encoder)
    engine.upsert_items(shop.items)
    return engine


def _recommended(engine: Engine, users) -> set[str]:
    return {engine.catalog.id_of(r.index) for row in engine.recommend(list(users)) for r in row}


def _republish(engine: Engine, item: CatalogItem, **changes) -> None:
    engine.upsert_items([item.model_copy(update=changes)])


@pytest.mark.parametrize("mode", MODES)
def test_an_unavailable_item_is_never_recommended_until_available_again(
    tmp_path, minilm_encoder, shop, mode
):
    engine = _engine(tmp_path, minilm_encoder, shop, **mode)
    engine.process(shop.events[:300])
    users = sorted({e.user_id for e in shop.events[:300]})
    by_id = {i.item_id: i for i in shop.items}
    top = engine.recommend([users[0]])[0][0]
    gone = by_id[engine.catalog.id_of(top.index)]
    _republish(engine, gone, available=False)
    assert gone.item_id not in _recommended(engine, users)
    # Later events (also of the item itself) do not bring it back.
    recs = []
    for start in range(300, 450, 50):
        recs += engine.process(shop.events[start : start + 50])
    assert all(gone.item_id not in {i.item_id for i in r.items} for r in recs)
    _republish(engine, gone, available=True)
    assert gone.item_id in _recommended(engine, users)
    engine.close()


@pytest.mark.parametrize("mode", MODES)
def test_an_item_stops_being_recommended_at_its_expiry_in_event_time(
    tmp_path, minilm_encoder, shop, mode
):
    engine = _engine(tmp_path, minilm_encoder, shop, **mode)
    events = shop.events[:300]
    engine.process(events[:200])
    users = sorted({e.user_id for e in events})
    offered = _recommended(engine, users)
    by_id = {i.item_id: i for i in shop.items}
    expiring = sorted(offered)[:5]
    deadline = events[250].ts
    for item_id in expiring:
        _republish(engine, by_id[item_id], expires_at=deadline)
    assert set(expiring) <= _recommended(engine, users)  # event time is still before it
    engine.process(events[200:300])  # event time passes the deadline
    assert not set(expiring) & _recommended(engine, users)
    engine.close()


@pytest.mark.parametrize("mode", MODES)
def test_tag_and_id_rules_from_settings(tmp_path, minilm_encoder, shop, mode):
    tags = sorted({t for i in shop.items for t in i.tags})
    banned_tag, kept_tag = tags[0], tags[1]
    banned_item = next(i.item_id for i in shop.items if banned_tag not in i.tags)
    engine = _engine(
        tmp_path,
        minilm_encoder,
        shop,
        exclude_tags=[banned_tag.upper()],  # tags compare case-insensitively
        exclude_items=[banned_item],
        **mode,
    )
    engine.process(shop.events[:300])
    users = sorted({e.user_id for e in shop.events[:300]})
    tags_of = {i.item_id: set(i.tags) for i in shop.items}
    offered = _recommended(engine, users)
    assert offered and banned_item not in offered
    assert not any(banned_tag in tags_of[i] for i in offered)
    engine.close()
    only = _engine(tmp_path / "only", minilm_encoder, shop, include_tags=[kept_tag], **mode)
    only.process(shop.events[:300])
    offered = _recommended(only, users)
    assert offered and all(kept_tag in tags_of[i] for i in offered)
    only.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_dismissed_item_is_hidden_from_that_user_only(tmp_path, minilm_encoder, shop, mode):
    engine = _engine(tmp_path, minilm_encoder, shop, **mode)
    engine.process(shop.events[:300])
    users = sorted({e.user_id for e in shop.events[:300]})
    me = users[0]
    mine = engine.recommend([me])[0]
    hidden = engine.catalog.id_of(mine[0].index)
    others = [u for u in users[1:] if hidden in _recommended(engine, [u])]
    window_before = [e.item_id for e in engine.windows.get_windows([me])[0].entries]
    counts_before = engine.counts.trending.values.copy()
    dismiss = EventParser({"view": 1.0}).parse_event(
        {"user_id": me, "item_id": hidden, "event": "dismiss", "ts": shop.events[299].ts}
    )
    assert dismiss.weight == 0.0
    recs = engine.process([dismiss])
    assert len(recs) == 1 and hidden not in {i.item_id for i in recs[0].items}
    assert hidden not in _recommended(engine, [me])
    # Nothing was learned from it: the window and the counts are as they were.
    assert [e.item_id for e in engine.windows.get_windows([me])[0].entries] == window_before
    assert (engine.counts.trending.values[: len(counts_before)] == counts_before).all()
    if others:
        assert hidden in _recommended(engine, others[:1])
    engine.close()


def test_dismiss_is_accepted_whatever_the_event_weights_and_items_carry_the_new_fields():
    parser = EventParser({"view": 1.0})
    event = parser.parse_event(
        b'{"user_id": "u", "item_id": "i", "event": "dismiss", "ts": 5, "weight": 2}'
    )
    assert (event.event, event.weight) == ("dismiss", 0.0)
    item = parser.parse_item(
        b'{"item_id": "i", "title": "T", "available": false, "expires_at": "2030-01-01T00:00:00Z"}'
    )
    assert item is not None and item.available is False and item.expires_at == 1893456000.0
    assert parser.parse_item(item.to_json_bytes()) == item
    with pytest.raises(Exception, match="available"):
        parser.parse_item(b'{"item_id": "i", "title": "T", "available": "no"}')
    event_dict = BehaviourEvent(user_id="u", item_id="i", event="dismiss", ts=1.0, weight=0.0)
    assert parser.parse_event(event_dict.to_json_bytes()) == event_dict
