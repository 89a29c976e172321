"""One driftrec worker on the real broker, end to end, with the real MiniLM encoder.

A synthetic shop (64 items, 40 customers, 400 events) goes through a worker
subprocess, with nine broken records among the events. Checks:

* exactly one schema-valid recommendation per valid event, keyed by its user,
  never recommending an item the user had consumed by then;
* every broken record lands in the dead letters with its reason, its exact
  bytes and its source coordinates, and the events around it are all answered;
* a catalogue update (new text for an item) changes later rankings, and a
  catalogue delete stops an item being recommended.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2

from models.contracts import CatalogItem, Recommendation
from models.synthetic_shop import synthetic_shop
from streams.dead_letters import DeadLetter

from .worker_harness import (
    Received,
    WorkerProcess,
    consume,
    create_topics,
    delete_topics,
    json_records,
    produce,
    unique_names,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOP_K = 10
SHOP = synthetic_shop(
    n_users=40, items_per_topic=8, events_per_user=10, n_topics=8, n_fading=1, n_emerging=1
)
BASE_TS = 1_700_000_000.0

#: (why it is broken, key, value, the field its dead letter must name)
BROKEN: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("malformed JSON", b"user0001", b'{"user_id": "user0001", "item_id": ', "record"),
    (
        "missing item_id",
        b"user0001",
        b'{"user_id": "user0001", "event": "view", "ts": 1700000000}',
        "item_id",
    ),
    (
        "user_id of the wrong type",
        b"42",
        b'{"user_id": 42, "item_id": "p00001", "event": "view", "ts": 1700000000}',
        "user_id",
    ),
    (
        "ts of the wrong type",
        b"user0002",
        b'{"user_id": "user0002", "item_id": "p00001", "event": "view", "ts": [1]}',
        "ts",
    ),
    (
        "unknown event type",
        b"user0002",
        b'{"user_id": "user0002", "item_id": "p00001", "event": "teleport", "ts": 1700000000}',
        "event",
    ),
    (
        "a 1 MB text field",
        b"user0003",
        json.dumps(
            {
                "user_id": "user0003",
                "item_id": "p00002",
                "event": "view",
                "ts": 1700000000,
                "item_text": "x" * 1_000_000,
            }
        ).encode(),
        "item_text",
    ),
    (
        "key that is not the user id",
        b"someone-else",
        b'{"user_id": "user0003", "item_id": "p00001", "event": "view", "ts": 1700000000}',
        "key",
    ),
    ("null value", b"user0004", None, "record"),
    ("invalid UTF-8", b"user0004", b'{"user_id": "\xff\xfe"}', "record"),
]


def recommendations_of(records: list[Received]) -> list[tuple[bytes, Recommendation]]:
    """Each record's key and its value validated strictly against the contract."""
    return [(r.key, Recommendation.model_validate_json(r.value)) for r in records]


@pytest.fixture(scope="module")
def shop_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A worker fed the shop's catalogue, then its events with the broken records among them."""
    prefix, app_id = unique_names("e2e")
    directory = tmp_path_factory.mktemp("e2e")
    env = worker_env(
        kafka_bootstrap,
        prefix,
        app_id,
        directory / "data",
        top_k=TOP_K,
        # Business rules from settings (test_business_rules_over_kafka).
        exclude_tags='["banned desks"]',
        exclude_items='["desk5"]',
    )
    worker = WorkerProcess(env, directory / "worker.log", name="e2e-worker")
    try:
        create_topics(kafka_bootstrap, prefix)
        worker.start()
        produce(kafka_bootstrap, prefix + "items", json_records(SHOP.items, lambda i: i.item_id))
        worker.wait_ready()
        worker.wait_until(
            lambda: worker.state()["recommendable_items"] == len(SHOP.items),
            timeout_s=60,
            what="the catalogue loaded from item-vectors",
        )
        valid = json_records(SHOP.events, lambda e: e.user_id)
        stream: list[tuple[bytes | None, bytes | None]] = []
        step = len(valid) // (len(BROKEN) + 1)
        for index, (key, value) in enumerate(valid):
            if index and index % step == 0 and index // step <= len(BROKEN):
                _, bad_key, bad_value, _ = BROKEN[index // step - 1]
                stream.append((bad_key, bad_value))
            stream.append((key, value))
        sent = produce(kafka_bootstrap, prefix + "events", stream)
        valid_ids = {e.event_id for e in SHOP.events}
        recommendations = consume(
            kafka_bootstrap,
            prefix + "recommendations",
            until=lambda records: len(records) >= len(valid_ids),
            timeout_s=120,
        )
        dead = consume(
            kafka_bootstrap,
            prefix + "dead-letters",
            until=lambda records: len(records) >= len(BROKEN),
            timeout_s=30,
        )
        yield {
            "worker": worker,
            "prefix": prefix,
            "sent": sent,
            "recommendations": recommendations,
            "dead": dead,
            "bootstrap": kafka_bootstrap,
        }
    finally:
        worker.stop()
        delete_topics(kafka_bootstrap, [prefix, app_id + "-"])


def test_one_valid_recommendation_per_valid_event(shop_run: dict) -> None:
    pairs = recommendations_of(shop_run["recommendations"])
    by_event = Counter(rec.event_id for _, rec in pairs)
    assert set(by_event) == {e.event_id for e in SHOP.events}
    assert max(by_event.values()) == 1, "some event was answered more than once"

    consumed_by: dict[str, set[str]] = defaultdict(set)
    event_of = {e.event_id: e for e in SHOP.events}
    order = {e.event_id: i for i, e in enumerate(SHOP.events)}
    for key, rec in sorted(pairs, key=lambda pair: order[pair[1].event_id]):
        event = event_of[rec.event_id]
        assert key == rec.user_id.encode() == event.user_id.encode()
        assert rec.ts == event.ts
        consumed_by[rec.user_id].add(event.item_id)
        recommended = [item.item_id for item in rec.items]
        assert len(recommended) == TOP_K and len(set(recommended)) == TOP_K
        assert not consumed_by[rec.user_id] & set(recommended), (
            f"{rec.user_id} was recommended items already consumed"
        )
        assert all(item.item_id in {i.item_id for i in SHOP.items} for item in rec.items)
        scores = [item.score for item in rec.items]
        assert scores == sorted(scores, reverse=True)
        assert rec.model_version >= 0 and rec.latency_ms >= 0
    # The worker says who sent each recommendation, outside the JSON contract, and puts
    # it where Kafka's default partitioner puts its key (as a Java producer would).
    workers = {r.headers.get("driftrec-worker") for r in shop_run["recommendations"]}
    assert workers == {b"e2e-worker"}
    for record in shop_run["recommendations"]:
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 4


def test_broken_records_become_dead_letters_with_their_reason(shop_run: dict) -> None:
    letters = [DeadLetter.from_json_bytes(r.value) for r in shop_run["dead"]]
    assert len(letters) == len(BROKEN)
    broken_values = [(key, value) for _, key, value, _ in BROKEN]
    sent_broken = [s for s in shop_run["sent"] if (s.key, s.value) in broken_values]
    assert len(sent_broken) == len(BROKEN)
    by_coordinates = {(d.partition, d.offset): d for d in letters}
    for (why, key, value, field), sent in zip(BROKEN, sent_broken, strict=True):
        letter = by_coordinates.get((sent.partition, sent.offset))
        assert letter is not None, f"no dead letter for the {why} record"
        assert letter.source_topic == shop_run["prefix"] + "events"
        assert letter.field == field, f"{why}: {letter.error}"
        assert letter.error.startswith(f"{field}: ")
        assert letter.key() == key
        assert letter.payload() == value, f"{why}: payload differs"
        assert letter.payload_bytes == (0 if value is None else len(value))
        assert not letter.payload_truncated
        assert letter.worker_id == "e2e-worker"
    # ... and the worker counted them.
    status, metrics = shop_run["worker"].get("/metrics")
    assert status == 200
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("driftrec_dead_letters_total{")
    )
    assert counted == len(BROKEN)


def test_catalogue_update_and_delete_change_later_rankings(shop_run: dict) -> None:
    worker: WorkerProcess = shop_run["worker"]
    bootstrap, prefix = shop_run["bootstrap"], shop_run["prefix"]
    # A probe customer of a topic nobody else follows: typewriters.
    typewriter = "Vintage mechanical typewriter with a fresh ink ribbon and spare keys"
    probes = [
        CatalogItem(item_id=f"probe{i}", title=f"Typewriter {i}", text=typewriter, tags=["office"])
        for i in range(3)
    ]
    # A new shoe nobody bought yet: far from typewriters, no popularity at all.
    target = CatalogItem(
        item_id="target0",
        title="Grippy trail running shoes",
        text="Lightweight trail running shoes for muddy mountain paths.",
        tags=["trail running"],
    )
    produce(bootstrap, prefix + "items", json_records([*probes, target], lambda i: i.item_id))
    worker.wait_until(
        lambda: all(
            worker.get(f"/state/item?id={p.item_id}")[1].get("recommendable") is True
            for p in [*probes, target]
        ),
        timeout_s=60,
        what="the probe items in the catalogue",
    )

    def probe_event(index: int) -> list[str]:
        event_id = f"probe-event-{index}"
        record = {
            "user_id": "probe-user",
            "item_id": f"probe{index}",
            "event": "purchase",
            "ts": BASE_TS + 30 * 86_400 + index,
            "event_id": event_id,
        }
        produce(bootstrap, prefix + "events", [(b"probe-user", json.dumps(record).encode())])
        answered = consume(
            bootstrap,
            prefix + "recommendations",
            until=lambda rs: any(
                r.key == b"probe-user" and json.loads(r.value)["event_id"] == event_id for r in rs
            ),
            timeout_s=60,
        )
        [rec] = [
            Recommendation.model_validate_json(r.value)
            for r in answered
            if r.key == b"probe-user" and json.loads(r.value)["event_id"] == event_id
        ]
        return [item.item_id for item in rec.items]

    before = probe_event(0)
    assert target.item_id not in before

    # The catalogue now describes the target as a typewriter too.
    renamed = target.model_copy(update={"title": "Typewriter deluxe", "text": typewriter})
    produce(bootstrap, prefix + "items", json_records([renamed], lambda i: i.item_id))
    worker.wait_until(
        lambda: "Typewriter deluxe" in worker.get(f"/state/item?id={target.item_id}")[1]["text"],
        timeout_s=60,
        what="the updated item text",
    )
    after_update = probe_event(1)
    assert target.item_id in after_update, after_update

    # A tombstone deletes it: it is never recommended again.
    produce(bootstrap, prefix + "items", [(target.item_id.encode(), None)])
    worker.wait_until(
        lambda: worker.get(f"/state/item?id={target.item_id}")[1]["recommendable"] is False,
        timeout_s=60,
        what="the item deleted",
    )
    after_delete = probe_event(2)
    assert target.item_id not in after_delete


def test_metrics_and_health_views(shop_run: dict, tmp_path: Path) -> None:
    worker: WorkerProcess = shop_run["worker"]
    assert worker.get("/healthz") == (200, {"alive": True, "worker_id": "e2e-worker"})
    status, ready = worker.get("/readyz")
    assert status == 200 and ready["ready"] is True and ready["assigned_partitions"] > 0
    status, text = worker.get("/metrics")
    assert status == 200
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }
    assert values["driftrec_recommendations_out_total"] >= len(SHOP.events)
    assert values["driftrec_events_in_total"] >= len(SHOP.events) + len(BROKEN)
    assert values["driftrec_items_encoded_total"] >= len(SHOP.items)
    assert values["driftrec_event_to_recommendation_seconds_count"] >= len(SHOP.events)
    assert values["driftrec_batch_size_sum"] >= len(SHOP.events)
    assert values["driftrec_clusters"] >= 1
    assert values["driftrec_ready"] == 1.0
    assert "driftrec_consumer_lag{" in text


def test_business_rules_over_kafka(shop_run: dict) -> None:
    """The rules hold in Kafka mode as in the engine: an item published unavailable or
    expired (in event time) is not recommended afterwards, and a user's dismiss hides an
    item from that user's next lists."""
    worker: WorkerProcess = shop_run["worker"]
    bootstrap, prefix = shop_run["bootstrap"], shop_run["prefix"]
    desk = "Solid oak writing desk with two drawers and a leather inlay"
    desks = [
        CatalogItem(item_id=f"desk{i}", title=f"Writing desk {i}", text=desk, tags=["desks"])
        for i in range(6)
    ]
    # Ruled out by the worker's settings: a banned tag, a banned id.
    desks.append(
        CatalogItem(item_id="desk6", title="Writing desk 6", text=desk, tags=["Banned Desks"])
    )
    produce(bootstrap, prefix + "items", json_records(desks, lambda i: i.item_id))

    def recommendable(item_id: str) -> bool | None:
        return worker.get(f"/state/item?id={item_id}")[1].get("recommendable")

    worker.wait_until(
        lambda: (
            all(recommendable(d.item_id) is True for d in desks[:5])
            and all(recommendable(d.item_id) is False for d in desks[5:])
        ),
        timeout_s=60,
        what="the desks in the catalogue",
    )
    assert worker.get("/state/item?id=desk6")[1]["allowed_by_rules"] is False
    clock = BASE_TS + 60 * 86_400

    def answer(index: int, item_id: str, event: str = "view") -> list[str]:
        event_id = f"desk-event-{index}"
        record = {
            "user_id": "desk-user",
            "item_id": item_id,
            "event": event,
            "ts": clock + index,
            "event_id": event_id,
        }
        produce(bootstrap, prefix + "events", [(b"desk-user", json.dumps(record).encode())])
        answered = consume(
            bootstrap,
            prefix + "recommendations",
            until=lambda rs: any(json.loads(r.value)["event_id"] == event_id for r in rs),
            timeout_s=60,
        )
        [rec] = [
            Recommendation.model_validate_json(r.value)
            for r in answered
            if json.loads(r.value)["event_id"] == event_id
        ]
        return [item.item_id for item in rec.items]

    first = answer(0, "desk0")
    offered = [d for d in first if d.startswith("desk")]
    assert len(offered) >= 3, first
    assert not {"desk5", "desk6"} & set(first)
    # Unavailable: gone from the next list, and stays gone.
    gone = offered[0]
    produce(
        bootstrap,
        prefix + "items",
        [(gone.encode(), json.dumps({"item_id": gone, "title": "x", "available": False}).encode())],
    )
    worker.wait_until(lambda: recommendable(gone) is False, timeout_s=60, what="unavailable")
    assert gone not in answer(1, "desk0")
    # Expires at an event time the next event passes.
    expiring = offered[1]
    record = {"item_id": expiring, "title": f"Writing desk {expiring[-1]}", "text": desk}
    record.update(tags=["desks"], expires_at=clock + 2.5)
    produce(bootstrap, prefix + "items", [(expiring.encode(), json.dumps(record).encode())])
    worker.wait_until(
        lambda: worker.get(f"/state/item?id={expiring}")[1].get("expires_at") == clock + 2.5,
        timeout_s=60,
        what="the expiring item read",
    )
    assert expiring in answer(2, "desk0")  # event time clock + 2: not yet
    later = answer(3, "desk0")  # clock + 3: past it
    assert expiring not in later and gone not in later
    # Dismissed by the user: hidden from the user's next lists.
    dismissed = offered[2]
    assert dismissed not in answer(4, dismissed, event="dismiss")
    last = answer(5, "desk0")
    assert dismissed not in last and not {"desk5", "desk6"} & set(last)


def test_interest_events_report_cluster_births_and_user_moves(shop_run: dict) -> None:
    """The model agent publishes the clusters' births; the events agent the users' confirmed
    moves, keyed by user. Every record follows the contract; no provisional cluster id (a
    worker's own, not yet numbered by the model agent) leaves the worker."""
    from models.clustering.cluster_messages import PROVISIONAL_ID_START
    from models.contracts import InterestEvent

    records = consume(
        shop_run["bootstrap"],
        shop_run["prefix"] + "interest-events",
        until=lambda rs: sum(b'"born"' in r.value for r in rs) >= 2,
        timeout_s=60,
    )
    events = [(r.key, InterestEvent.model_validate_json(r.value)) for r in records]
    born = [e for _, e in events if e.kind == "born"]
    assert len(born) >= 2
    for key, event in events:
        assert key == event.key()
        assert event.cluster < PROVISIONAL_ID_START
        assert event.previous is None or event.previous < PROVISIONAL_ID_START
    moves = [e for _, e in events if e.kind == "moved"]
    users = {e.user_id for e in SHOP.events}
    assert all(m.user_id in users and m.items for m in moves)
    for _, rec in recommendations_of(shop_run["recommendations"]):
        assert rec.cluster.id is None or rec.cluster.id < PROVISIONAL_ID_START
        assert rec.cluster.previous is None or rec.cluster.previous < PROVISIONAL_ID_START


def test_the_console_of_a_worker(shop_run: dict) -> None:
    """The worker serves the live console: its page, and its JSON with the clusters, their
    labels and a user's last recommendations with reasons."""
    worker: WorkerProcess = shop_run["worker"]
    status, page = worker.get("/console")
    assert status == 200 and "live console" in page
    status, data = worker.get("/console/data")
    assert status == 200 and data["events"] > 0
    # Clusters show once the model agent has numbered them and a user's next event carries
    # the numbered id (a worker's provisional ids are never shown): a few more events.
    user = SHOP.events[-1].user_id
    base = {"user_id": user, "item_id": SHOP.events[-1].item_id, "event": "view"}
    for index in range(30):
        if worker.get("/console/data")[1]["clusters"]:
            break
        record = {**base, "ts": BASE_TS + 90 * 86_400 + index, "event_id": f"console-{index}"}
        produce(
            shop_run["bootstrap"],
            shop_run["prefix"] + "events",
            [(user.encode(), json.dumps(record).encode())],
        )
        time.sleep(1.0)
    assert worker.get("/console/data")[1]["clusters"]
    status, found = worker.get(f"/console/user?id={user}")
    assert status == 200 and found["recommendations"] and found["window"]
