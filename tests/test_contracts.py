"""The record contracts of docs/contracts.md: strict parsing, typed records, wire forms."""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.contracts import (
    BehaviourEvent,
    CatalogItem,
    ClusterInfo,
    Recommendation,
    RecommendedItem,
    RecordError,
)
from models.record_parser import EventParser
from models.settings import DEFAULT_EVENT_WEIGHTS, EngineSettings

WEIGHTS = {**DEFAULT_EVENT_WEIGHTS, "share": 4.0}
PARSER = EventParser(
    WEIGHTS, rating_midpoint=3.0, rating_max=5.0, max_text_chars=200, max_id_chars=16
)

VALID_EVENT: dict[str, Any] = {
    "user_id": "u42",
    "item_id": "m1193",
    "event": "click",
    "ts": 978300760.0,
    "event_id": "e-1",
    "weight": 1.5,
    "item_text": "One Flew Over the Cuckoo's Nest",
}
VALID_ITEM: dict[str, Any] = {
    "item_id": "m1193",
    "title": "One Flew Over the Cuckoo's Nest (1975)",
    "text": "A rebel in a mental hospital.",
    "tags": ["Drama"],
    "ts": 978300760.0,
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


# --- anything in, only RecordError out ---------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_record_error(raw: bytes) -> None:
    for parse in (PARSER.parse_event, PARSER.parse_item):
        with contextlib.suppress(RecordError):
            parse(raw)


@given(json_values)
def test_arbitrary_json_raises_only_record_error(value: Any) -> None:
    raw = json.dumps(value).encode()
    for parse in (PARSER.parse_event, PARSER.parse_item):
        with contextlib.suppress(RecordError):
            parse(raw)


any_python_value = json_values | st.floats() | st.integers(min_value=-(10**40), max_value=10**40)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "user_id": st.sampled_from(["u1", "", " ", "x" * 17]) | any_python_value,
            "item_id": st.sampled_from(["m1", "\ud800"]) | any_python_value,
            "event": st.sampled_from([*WEIGHTS, "clack"]) | any_python_value,
            "ts": st.sampled_from(["2000-01-01T00:00:00Z", "2000-13-01", 978300760, 9.7e11])
            | any_python_value,
            "event_id": any_python_value,
            "weight": st.sampled_from([1, 0, -1, 1e300]) | any_python_value,
            "rating": st.sampled_from([1, 5, 0, 6]) | any_python_value,
            "item_text": any_python_value,
            "title": st.text() | any_python_value,
            "text": any_python_value,
            "tags": st.lists(st.text(max_size=3), max_size=3) | any_python_value,
        },
    )
)
def test_near_valid_records_raise_only_record_error(record: dict[str, Any]) -> None:
    for raw in (record, json.dumps(record, allow_nan=True)):
        try:
            event = PARSER.parse_event(raw)
        except RecordError:
            pass
        else:
            assert math.isfinite(event.weight) and event.weight > 0
            assert 0 <= event.ts <= 1e11
        with contextlib.suppress(RecordError):
            PARSER.parse_item(raw)


@given(
    st.sampled_from(
        ["user_id", "item_id", "event", "ts", "event_id", "weight", "rating", "item_text"]
    ),
    any_python_value | st.sampled_from([*WEIGHTS, "", "2000-01-01", 1e12]),
)
def test_one_bad_field_is_the_field_named(field: str, value: Any) -> None:
    record = {**VALID_EVENT, field: value}
    try:
        event = PARSER.parse_event(record)
    except RecordError as error:
        # changing the event type to `rate` makes the (absent) rating the problem
        assert error.field in ({field, "rating"} if field == "event" else {field})
    else:
        if field == "ts" and isinstance(value, str):
            value = datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
        assert getattr(event, "raw_weight" if field == "weight" else field) in (value, None)


# --- valid events round-trip --------------------------------------------------------

ids = st.text(min_size=1, max_size=16).filter(str.strip)
valid_events = st.fixed_dictionaries(
    {
        "user_id": ids,
        "item_id": ids,
        "event": st.sampled_from(sorted(WEIGHTS)),
        "ts": st.floats(min_value=0, max_value=1e11) | st.integers(min_value=0, max_value=10**11),
    },
    optional={
        "event_id": ids,
        "weight": st.floats(min_value=1e-6, max_value=1e6),
        "item_text": st.text(max_size=200),
        "comment": json_values,
    },
)


@given(valid_events, st.floats(min_value=0.5, max_value=5.0))
def test_valid_events_parse_and_round_trip(record: dict[str, Any], rating: float) -> None:
    if record["event"] == "rate":
        record["rating"] = rating
    event = PARSER.parse_event(json.dumps(record).encode())

    assert (event.user_id, event.item_id, event.event) == (
        record["user_id"],
        record["item_id"],
        record["event"],
    )
    assert event.ts == float(record["ts"])
    assert event.event_id == record.get("event_id")
    assert event.raw_weight == record.get("weight")
    assert event.item_text == record.get("item_text")
    expected_weight = WEIGHTS[record["event"]] * record.get("weight", 1.0)
    if record["event"] == "rate":
        expected_weight *= rating / 3.0
    assert event.weight == pytest.approx(expected_weight, rel=1e-12)
    assert event.extra == ({"comment": record["comment"]} if "comment" in record else {})

    assert PARSER.parse_event(event.to_json_bytes()) == event  # wire form parses back
    assert PARSER.parse_event(json.dumps(record)) == event  # str input
    assert PARSER.parse_event(record) == event  # mapping input


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(4000, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    ),
    st.booleans(),
)
def test_iso_and_epoch_forms_give_the_same_ts(moment: datetime, zulu: bool) -> None:
    iso = moment.isoformat()
    if zulu and moment.utcoffset() == timedelta(0):
        iso = iso.replace("+00:00", "Z")
    epoch = (moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1)
    from_iso = PARSER.parse_event({**VALID_EVENT, "ts": iso}).ts
    from_epoch = PARSER.parse_event({**VALID_EVENT, "ts": epoch}).ts
    assert from_iso == pytest.approx(from_epoch, abs=1e-5)
    assert from_iso == pytest.approx(epoch, abs=1e-5)


def test_naive_iso_means_utc_and_date_only_is_midnight() -> None:
    assert PARSER.parse_event({**VALID_EVENT, "ts": "2000-12-31T22:12:40"}).ts == 978300760.0
    assert PARSER.parse_event({**VALID_EVENT, "ts": "2000-12-31T23:12:40+01:00"}).ts == 978300760.0
    assert PARSER.parse_event({**VALID_EVENT, "ts": "2001-01-01"}).ts == 978307200.0


# --- each bad input names its field -------------------------------------------------

BAD_EVENTS: list[tuple[Any, str, str]] = [
    (b"\xff\xfe{}", "record", "UTF-8"),
    (b'{"user_id": ', "record", "invalid JSON"),
    (b"[1, 2]", "record", "JSON object"),
    (b"null", "record", "got null"),
    (b'"text"', "record", "got string"),
    ({**VALID_EVENT, "ts": float("nan")}, "ts", "finite"),
    (b'{"user_id": "u", "item_id": "m", "event": "view", "ts": NaN}', "record", "NaN"),
    ({k: v for k, v in VALID_EVENT.items() if k != "user_id"}, "user_id", "missing"),
    ({**VALID_EVENT, "user_id": 42}, "user_id", "got number"),
    ({**VALID_EVENT, "user_id": ""}, "user_id", "empty"),
    ({**VALID_EVENT, "user_id": "   "}, "user_id", "blank"),
    ({**VALID_EVENT, "user_id": "u" * 17}, "user_id", "the limit is 16"),
    ({**VALID_EVENT, "item_id": None}, "item_id", "missing"),
    ({**VALID_EVENT, "item_id": 1193}, "item_id", "got number"),
    ({**VALID_EVENT, "item_id": "\ud800"}, "item_id", "surrogate"),
    ({**VALID_EVENT, "event_id": ""}, "event_id", "empty"),
    ({**VALID_EVENT, "event_id": 7}, "event_id", "got number"),
    ({**VALID_EVENT, "event": "like"}, "event", "unknown event type 'like'"),
    ({**VALID_EVENT, "event": ["click"]}, "event", "got array"),
    ({k: v for k, v in VALID_EVENT.items() if k != "event"}, "event", "missing"),
    ({**VALID_EVENT, "ts": [978300760]}, "ts", "got array"),
    ({**VALID_EVENT, "ts": True}, "ts", "got boolean"),
    ({**VALID_EVENT, "ts": -1.0}, "ts", ">= 0"),
    ({**VALID_EVENT, "ts": float("inf")}, "ts", "finite"),
    ({**VALID_EVENT, "ts": 978300760000}, "ts", "milliseconds"),
    ({**VALID_EVENT, "ts": "yesterday"}, "ts", "ISO-8601"),
    ({**VALID_EVENT, "ts": "1969-12-31T00:00:00Z"}, "ts", "before 1970"),
    ({k: v for k, v in VALID_EVENT.items() if k != "ts"}, "ts", "missing"),
    ({**VALID_EVENT, "weight": 0}, "weight", "(0,"),
    ({**VALID_EVENT, "weight": -2.0}, "weight", "(0,"),
    ({**VALID_EVENT, "weight": float("nan")}, "weight", "(0,"),
    ({**VALID_EVENT, "weight": "2"}, "weight", "got string"),
    ({**VALID_EVENT, "weight": False}, "weight", "got boolean"),
    ({**VALID_EVENT, "weight": 1e300}, "weight", "(0,"),
    ({**VALID_EVENT, "event": "purchase", "weight": 5e11}, "weight", "effective weight"),
    ({**VALID_EVENT, "event": "rate"}, "rating", "'rate' event needs"),
    ({**VALID_EVENT, "event": "rate", "rating": 0}, "rating", "(0, 5]"),
    ({**VALID_EVENT, "event": "rate", "rating": 5.5}, "rating", "(0, 5]"),
    ({**VALID_EVENT, "event": "rate", "rating": "5"}, "rating", "got string"),
    ({**VALID_EVENT, "event": "rate", "rating": True}, "rating", "got boolean"),
    ({**VALID_EVENT, "item_text": "x" * 201}, "item_text", "the limit is 200"),
    ({**VALID_EVENT, "item_text": {"en": "x"}}, "item_text", "got object"),
    ({**VALID_EVENT, 3: "x"}, "record", "field names"),
]


@pytest.mark.parametrize(("raw", "field", "fragment"), BAD_EVENTS)
def test_bad_event_names_its_field(raw: Any, field: str, fragment: str) -> None:
    with pytest.raises(RecordError) as caught:
        PARSER.parse_event(raw)
    assert caught.value.field == field
    assert fragment in caught.value.problem
    assert str(caught.value) == f"{field}: {caught.value.problem}"


def test_error_message_for_a_list_ts_reads_as_documented() -> None:
    with pytest.raises(RecordError) as caught:
        PARSER.parse_event({**VALID_EVENT, "ts": [1, 2]})
    assert str(caught.value) == "ts: expected epoch seconds (number) or ISO-8601 string, got array"


def test_deeply_nested_json_is_a_record_error() -> None:
    with pytest.raises(RecordError) as caught:
        PARSER.parse_event(b"[" * 100_000)
    assert caught.value.field == "record"


# --- weights and configuration ------------------------------------------------------


def test_effective_weight_combines_type_explicit_weight_and_rating() -> None:
    rate = PARSER.parse_event({**VALID_EVENT, "event": "rate", "rating": 4.5, "weight": 2.0})
    assert rate.weight == pytest.approx(3.0 * 2.0 * 4.5 / 3.0)
    assert (rate.raw_weight, rate.rating) == (2.0, 4.5)
    view = PARSER.parse_event(
        {k: v for k, v in VALID_EVENT.items() if k != "weight"} | {"event": "view"}
    )
    assert view.weight == 1.0 and view.raw_weight is None
    # a rating on another event type is kept but does not scale its weight
    click = PARSER.parse_event({**VALID_EVENT, "rating": 1.0, "weight": None})
    assert (click.weight, click.rating) == (2.0, 1.0)


def test_custom_event_types_come_from_settings() -> None:
    engine_settings = EngineSettings(
        event_weights={"view": 1.0, "wishlist": 2.5}, rating_midpoint=2.0, max_id_chars=4
    )
    parser = EventParser.from_settings(engine_settings)
    assert (
        parser.parse_event({**VALID_EVENT, "item_id": "m1", "event": "wishlist"}).weight
        == 2.5 * 1.5
    )
    with pytest.raises(RecordError, match="unknown event type 'click'"):
        parser.parse_event({**VALID_EVENT, "item_id": "m1"})
    with pytest.raises(RecordError, match="item_id: 5 characters long"):
        parser.parse_event({**VALID_EVENT, "item_id": "m1193", "event": "view"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event_weights": {}},
        {"event_weights": {"view": 0.0}},
        {"event_weights": {"view": float("nan")}},
        {"event_weights": {"": 1.0}},
        {"event_weights": {"view": 1.0}, "rating_midpoint": 0.0},
        {"event_weights": {"view": 1.0}, "max_id_chars": 0},
    ],
)
def test_parser_rejects_bad_configuration(kwargs: dict[str, Any]) -> None:
    weights = kwargs.pop("event_weights")
    with pytest.raises(ValueError):
        EventParser(weights, **kwargs)


# --- items ----------------------------------------------------------------------------


def test_items_parse_render_and_round_trip() -> None:
    item = PARSER.parse_item(json.dumps({**VALID_ITEM, "year": 1975}).encode(), key="m1193")
    assert item is not None
    assert (item.item_id, item.tags, item.ts, item.extra) == (
        "m1193",
        ["Drama"],
        978300760.0,
        {"year": 1975},
    )
    assert item.render_text() == (
        "One Flew Over the Cuckoo's Nest (1975). Drama. A rebel in a mental hospital."
    )
    assert PARSER.parse_item(item.to_json_bytes()) == item
    bare = PARSER.parse_item({"item_id": "m2", "title": "Heat (1995)"})
    assert bare is not None
    assert (bare.text, bare.tags, bare.ts) == (None, [], None)
    assert bare.render_text() == "Heat (1995)"


def test_render_text_skips_empty_parts_and_double_stops() -> None:
    item = CatalogItem(item_id="m", title="Stop.", tags=[" ", "A"], text=" ")
    assert item.render_text() == "Stop. A"
    assert CatalogItem(item_id="m", title="", text="Only text").render_text() == "Only text"


def test_item_tombstones_need_a_key() -> None:
    assert PARSER.parse_item(None, key="m1") is None
    assert PARSER.parse_item(b"null", key="m1") is None
    assert PARSER.parse_item(None, key=b"m1") is None
    with pytest.raises(RecordError, match="key: not valid UTF-8"):
        PARSER.parse_item(None, key=b"\xff")
    with pytest.raises(RecordError, match="needs the item's key"):
        PARSER.parse_item(None)


@pytest.mark.parametrize(
    ("record", "key", "field"),
    [
        ({**VALID_ITEM, "item_id": "m2"}, "m1193", "item_id"),
        (VALID_ITEM, "", "key"),
        ({k: v for k, v in VALID_ITEM.items() if k != "title"}, None, "title"),
        ({**VALID_ITEM, "title": 1}, None, "title"),
        ({**VALID_ITEM, "text": "x" * 201}, None, "text"),
        ({**VALID_ITEM, "tags": "Drama"}, None, "tags"),
        ({**VALID_ITEM, "tags": ["Drama", 3]}, None, "tags[1]"),
        ({**VALID_ITEM, "tags": ["x" * 150, "y" * 60]}, None, "tags"),
        ({**VALID_ITEM, "ts": "soon"}, None, "ts"),
        ({**VALID_ITEM, "item_id": 1193}, None, "item_id"),
    ],
)
def test_bad_item_names_its_field(record: dict[str, Any], key: str | None, field: str) -> None:
    with pytest.raises(RecordError) as caught:
        PARSER.parse_item(record, key=key)
    assert caught.value.field == field


# --- recommendations ------------------------------------------------------------------


def make_recommendation(**changes: Any) -> Recommendation:
    fields: dict[str, Any] = {
        "user_id": "u42",
        "event_id": None,
        "ts": 978300760.0,
        "emitted_at": 1732900000.1,
        "cluster": ClusterInfo(id=7, similarity=0.83, previous=None),
        "items": [
            RecommendedItem(item_id="m2858", score=0.91, source="content"),
            RecommendedItem(item_id="m260", score=0.5, source="transitions"),
        ],
        "model_version": 12,
        "latency_ms": 4.2,
    }
    return Recommendation(**{**fields, **changes})


def test_recommendation_json_has_the_contract_shape() -> None:
    recommendation = make_recommendation()
    wire = json.loads(recommendation.to_json_bytes())
    assert list(wire) == [
        "user_id",
        "event_id",
        "ts",
        "emitted_at",
        "cluster",
        "items",
        "model_version",
        "latency_ms",
    ]
    assert wire["cluster"] == {"id": 7, "similarity": 0.83, "previous": None, "label": None}
    assert wire["items"][1] == {
        "item_id": "m260",
        "score": 0.5,
        "source": "transitions",
        "because": [],
    }
    assert wire["event_id"] is None
    assert Recommendation.model_validate_json(recommendation.to_json_bytes()) == recommendation


def test_recommendation_takes_numpy_numbers() -> None:
    recommendation = make_recommendation(
        cluster=ClusterInfo(id=np.int64(3), similarity=np.float32(0.5), previous=np.intp(1)),
        model_version=np.int32(4),
    )
    wire = json.loads(recommendation.to_json_bytes())
    assert (wire["cluster"], wire["model_version"]) == (
        {"id": 3, "similarity": 0.5, "previous": 1, "label": None},
        4,
    )


def test_recommendation_rejects_non_finite_scores_and_wrong_types() -> None:
    with pytest.raises(ValidationError):
        RecommendedItem(item_id="m1", score=float("nan"), source="content")
    with pytest.raises(ValidationError):
        make_recommendation(model_version="12")
    with pytest.raises(ValidationError):
        make_recommendation(latency_ms=float("inf"))
    with pytest.raises(ValidationError):
        ClusterInfo(id=True)


def test_records_are_immutable() -> None:
    event = PARSER.parse_event(VALID_EVENT)
    with pytest.raises(ValidationError):
        event.weight = 10.0  # type: ignore[misc]
    assert isinstance(event, BehaviourEvent)


@settings(max_examples=50)
@given(st.lists(st.text(max_size=8), max_size=4), st.text(max_size=30), st.text(max_size=30))
def test_render_text_contains_every_non_blank_part(tags: list[str], title: str, text: str) -> None:
    rendered = CatalogItem(item_id="m", title=title, tags=tags, text=text).render_text()
    for part in [title, text, *tags]:
        assert part.strip() in rendered


def test_trusted_records_equal_validated_ones_and_serialise_the_same() -> None:
    """The engine builds its output with models.contracts.trusted (no validation): it must be
    indistinguishable from the validated record, field order of the JSON included."""
    from models.contracts import ClusterInfo, Recommendation, RecommendedItem, trusted

    items = [
        dict(item_id="m1", score=0.5, source="content", because=["m0"]),
        dict(item_id="m2", score=0.25, source="trending", because=[]),
    ]
    cluster = dict(id=3, similarity=0.8, previous=None, label="espresso · baking")
    fields = dict(
        user_id="u1", event_id="e1", ts=1.5, emitted_at=2.0, model_version=4, latency_ms=1.25
    )
    built = trusted(
        Recommendation,
        **fields,
        cluster=trusted(ClusterInfo, **cluster),
        items=[trusted(RecommendedItem, **i) for i in items],
    )
    validated = Recommendation(
        **fields, cluster=ClusterInfo(**cluster), items=[RecommendedItem(**i) for i in items]
    )
    assert built == validated
    assert built.to_json_bytes() == validated.to_json_bytes()
    assert built.model_dump() == validated.model_dump()
    assert Recommendation.model_validate_json(built.to_json_bytes()) == validated
