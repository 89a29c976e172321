"""The worker's runtime without a broker: what its agents compute, with the real engine.

The records handed to :class:`~streams.runtime.WorkerRuntime` here are plain
stand-ins for Kafka records (topic, partition, offset, key, value, timestamp);
the engine, the encoder (MiniLM) and the clusterer are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import numpy as np
import pytest

from models.clustering.cluster_messages import ClusterDelta
from models.contracts import RecordError
from models.engine import Engine
from models.settings import EngineSettings
from models.state_store import MemoryStore
from models.synthetic_shop import synthetic_shop
from streams.agents import ship_deltas
from streams.dead_letters import DeadLetter
from streams.item_vectors import decode_item_vector, encode_item_vector
from streams.metrics import WorkerMetrics
from streams.runtime import WorkerRuntime
from streams.settings import WorkerSettings
from streams.table_store import FaustTableStore
from streams.topology import build_worker_engine
from tests.records import Event, Message

SHOP = synthetic_shop(
    n_users=12, items_per_topic=6, events_per_user=8, n_topics=4, n_fading=1, n_emerging=1
)


def records(topic: str, pairs: list[tuple[bytes | None, bytes | None]], start: int = 0) -> list:
    return [
        Event(Message(topic, 0, start + offset, key, value))
        for offset, (key, value) in enumerate(pairs)
    ]


def event_records(events: list, start: int = 0) -> list:
    return records(
        "driftrec.events", [(e.user_id.encode(), e.to_json_bytes()) for e in events], start
    )


def runtime(encoder: Any, worker_id: str, **settings: Any) -> WorkerRuntime:
    worker_settings = WorkerSettings(worker_id=worker_id, **settings)
    store = FaustTableStore({})
    engine = build_worker_engine(worker_settings, store, encoder=encoder)
    return WorkerRuntime(worker_settings, engine, window_store=store, metrics=WorkerMetrics())


def with_catalog(rt: WorkerRuntime) -> WorkerRuntime:
    outcome = rt.catalogue.encode_items(
        records("driftrec.items", [(i.item_id.encode(), i.to_json_bytes()) for i in SHOP.items])
    )
    for key, value in outcome.vector_records:
        rt.catalogue.apply_item_vector(key, value)
    return rt


def test_events_are_answered_and_broken_ones_dead_lettered(minilm_encoder: Any) -> None:
    rt = with_catalog(runtime(minilm_encoder, "w1"))
    good = SHOP.events[:20]
    batch = event_records(good)
    batch.insert(5, Event(Message("driftrec.events", 0, 100, b"user0001", b"{not json")))
    batch.insert(9, Event(Message("driftrec.events", 0, 101, b"other", good[0].to_json_bytes())))
    outcome = rt.process_events(batch)
    assert [r.event_id for r in outcome.recommendations] == [e.event_id for e in good]
    assert [(d.offset, d.field) for d in outcome.dead_letters] == [(100, "record"), (101, "key")]
    assert outcome.dead_letters[1].error.startswith("key: 'other' differs from user_id")
    assert outcome.source_timestamps == [1_800_000_000.0] * len(good)
    assert rt.last_offsets == {0: 19}  # the last record of the batch in its partition
    for rec, event in zip(outcome.recommendations, good, strict=True):
        assert rec.user_id == event.user_id and len(rec.items) == rt.settings.top_k
    # The windows went to the table store, one entry per user.
    assert len(rt.window_store.table) == len({e.user_id for e in good})


def test_item_vectors_adopted_in_batches_as_one_by_one(minilm_encoder: Any) -> None:
    """A fetch of item-vectors records applied in one batch leaves the catalogue exactly as
    applying them one by one: the last record of a key wins, a tombstone deletes what came
    before it, a malformed record fails alone, a foreign model's vector is re-encoded."""
    from aiokafka.structs import ConsumerRecord

    items = SHOP.items[:6]
    vectors = np.random.default_rng(0).normal(size=(len(items), 384)).astype(np.float32)
    version = minilm_encoder.model_version

    def value(i: int, vector: np.ndarray, encoder: str = version) -> bytes:
        return encode_item_vector(items[i], vector, encoder=encoder)

    key = [item.item_id.encode() for item in items]
    pairs: list[tuple[bytes, bytes | None]] = [
        (key[0], value(0, vectors[0])),
        (key[1], value(1, vectors[1])),
        (key[1], value(1, -vectors[1])),  # a later version of item 1
        (key[2], value(2, vectors[2])),
        (key[2], None),  # item 2 deleted after it came
        (b"x", b"{not json"),
        (key[3], value(3, vectors[3], encoder="another-model")),
        (key[4], value(4, vectors[4])),
    ]
    fetched = [
        ConsumerRecord("driftrec.item-vectors", 0, n, 0, 0, k, v, None, 0, 0, [])
        for n, (k, v) in enumerate(pairs)
    ]
    batched, single = runtime(minilm_encoder, "w1"), runtime(minilm_encoder, "w2")
    failures = batched.catalogue.apply_item_vectors(fetched)
    assert [record.offset for record, _ in failures] == [5]
    for record in fetched:
        with contextlib.suppress(RecordError):
            single.catalogue.apply_item_vector(record.key, record.value)
    a, b = batched.engine.catalog, single.engine.catalog
    assert a.recommendable.sum() == b.recommendable.sum() == 4  # 0, 1, 3, 4
    for item in items[:5]:
        ia, ib = a.index_of(item.item_id), b.index_of(item.item_id)
        assert (ia is None) == (ib is None)
        if ia is not None and ib is not None:
            assert a.recommendable[ia] == b.recommendable[ib]
            np.testing.assert_allclose(a.vectors[ia], b.vectors[ib], atol=1e-6)
    row = a.vectors[a.index_of(items[1].item_id)]
    np.testing.assert_allclose(row, -vectors[1] / np.linalg.norm(vectors[1]), atol=1e-6)


def test_item_vectors_carry_the_encoding_to_every_worker(minilm_encoder: Any) -> None:
    encoding, adopting = runtime(minilm_encoder, "w1"), runtime(minilm_encoder, "w2")
    items = SHOP.items[:5]
    pairs = [(i.item_id.encode(), i.to_json_bytes()) for i in items]
    pairs += [(items[0].item_id.encode(), None), (b"m9", b'{"item_id": "m9"}')]
    outcome = encoding.catalogue.encode_items(records("driftrec.items", pairs))
    assert [d.field for d in outcome.dead_letters] == ["title"]
    assert [k for k, _ in outcome.vector_records] == [i.item_id.encode() for i in items[1:]] + [
        items[0].item_id.encode()
    ]
    for key, value in outcome.vector_records:
        adopting.catalogue.apply_item_vector(key, value)
    catalog = adopting.engine.catalog
    expected = minilm_encoder.encode([i.render_text() for i in items[1:]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = catalog.vectors[[catalog.index_of(i.item_id) for i in items[1:]]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert catalog.index_of(items[0].item_id) is None  # deleted before it was ever adopted
    assert adopting.engine.stats.encoder_s == 0.0  # adopted, not re-encoded

    # A vector from another model is not trusted: the text is encoded locally.
    item = SHOP.items[7]
    foreign = encode_item_vector(item, np.ones(catalog.dim), encoder="some-other-model")
    adopting.catalogue.apply_item_vector(item.item_id.encode(), foreign)
    own = minilm_encoder.encode([item.render_text()])[0]
    np.testing.assert_allclose(
        catalog.vectors[catalog.index_of(item.item_id)], own / np.linalg.norm(own), atol=1e-5
    )
    with pytest.raises(RecordError, match="vector"):
        decode_item_vector(
            json.dumps(
                {"item": json.loads(item.to_json_bytes()), "dim": 3, "vector": "AAAA"}
            ).encode(),
            adopting.parser,
        )


def test_cluster_deltas_merge_into_one_model_that_both_workers_adopt(minilm_encoder: Any) -> None:
    a, b = with_catalog(runtime(minilm_encoder, "a")), with_catalog(runtime(minilm_encoder, "b"))
    users = sorted({e.user_id for e in SHOP.events})
    a_events = [e for e in SHOP.events if e.user_id in users[::2]]
    b_events = [e for e in SHOP.events if e.user_id not in users[::2]]
    a.process_events(event_records(a_events))
    b.process_events(event_records(b_events))
    assert all(c >= 1 << 48 for c in a.engine.clusterer.ids)  # provisional until merged
    deltas = []
    for rt in (a, b):
        cluster_bytes, collab_bytes = rt.pop_deltas()
        assert cluster_bytes is not None and collab_bytes is not None
        deltas.append((rt.incarnation.encode(), cluster_bytes))
    garbage = (b"x", b"not a delta")
    snapshot, letters = a.merge_cluster_deltas(
        records("driftrec.cluster-deltas", [*deltas, garbage])
    )
    assert [d.error_type for d in letters] == ["ValueError"]
    assert snapshot is not None and a.authority is not None and a.authority.version == 1
    for rt in (a, b):
        assert rt.apply_cluster_snapshot(snapshot)
        assert not rt.apply_cluster_snapshot(snapshot)  # not newer: ignored
    assert a.model_version == b.model_version == 1
    assert a.engine.clusterer.ids.tolist() == b.engine.clusterer.ids.tolist()
    assert all(c < 1 << 48 for c in a.engine.clusterer.ids)
    # Recommendations are stamped with the adopted version, whatever the engine did locally.
    outcome = b.process_events(event_records(SHOP.events[:10], start=1000))
    assert {r.model_version for r in outcome.recommendations} == {1}


def test_counts_deltas_add_up_to_one_engine_and_own_deltas_are_skipped(
    minilm_encoder: Any,
) -> None:
    a, b = with_catalog(runtime(minilm_encoder, "a")), with_catalog(runtime(minilm_encoder, "b"))
    users = sorted({e.user_id for e in SHOP.events})
    a.process_events(event_records([e for e in SHOP.events if e.user_id in users[::2]]))
    b.process_events(event_records([e for e in SHOP.events if e.user_id not in users[::2]]))
    _, a_delta = a.pop_deltas()
    _, b_delta = b.pop_deltas()
    assert not a.apply_collab_delta(a.incarnation.encode(), a_delta)  # its own: skipped
    assert a.apply_collab_delta(b.incarnation.encode(), b_delta)
    at = SHOP.events[-1].ts
    reference = Engine(EngineSettings(), encoder=minilm_encoder, store=MemoryStore())
    reference.upsert_items(SHOP.items)
    reference.learn(SHOP.events)
    n = len(reference.catalog)
    scale = reference.counts.decay.to_decayed(1.0, at)
    expected = {
        reference.catalog.id_of(i): v * scale
        for i, v in enumerate(reference.counts.popularity_scores(n))
        if v
    }
    got = a.engine.decayed_counts(at)["popularity"]
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k], rel=1e-9) for k in got)


def test_settings_come_from_driftrec_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTREC_KAFKA_BOOTSTRAP", "kafka-0:9093, kafka-1:9093")
    monkeypatch.setenv("DRIFTREC_TOPIC_PREFIX", "shop.")
    monkeypatch.setenv("DRIFTREC_PARTITIONS", "12")
    monkeypatch.setenv("DRIFTREC_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("DRIFTREC_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("DRIFTREC_SASL_USERNAME", "driftrec")
    monkeypatch.setenv("DRIFTREC_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("DRIFTREC_WINDOW_SIZE", "20")
    settings = WorkerSettings()
    assert settings.kafka_bootstrap == "kafka-0:9093,kafka-1:9093"
    assert settings.broker_urls() == ["kafka://kafka-0:9093", "kafka://kafka-1:9093"]
    assert settings.topic("events") == "shop.events" and settings.partitions == 12
    assert settings.window_size == 20  # the engine's settings come along
    assert settings.aiokafka_security() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "driftrec",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }
    assert "s3cret" not in repr(settings)
    monkeypatch.delenv("DRIFTREC_SASL_PASSWORD")
    with pytest.raises(ValueError, match="needs sasl_username and sasl_password"):
        WorkerSettings()


def test_dead_letters_cut_oversized_payloads_and_say_so() -> None:
    letter = DeadLetter.from_record(
        topic="driftrec.events",
        partition=1,
        offset=7,
        timestamp=None,
        key=None,
        value=b"x" * 5000,
        error=RecordError("item_text", "too long"),
        worker_id="w",
        failed_at=0.0,
        payload_limit=1024,
    )
    assert letter.payload() == b"x" * 1024
    assert letter.payload_truncated and letter.payload_bytes == 5000
    assert letter.kafka_key == b"driftrec.events/1/7"


def test_table_store_refuses_writes_outside_a_partition_binding() -> None:
    import faust

    app = faust.App("driftrec-test-table", autodiscover=False)
    table = app.Table("windows", key_type=bytes, value_type=bytes)
    store = FaustTableStore(table)
    assert store.get_many(["w:u1"]) == [None]
    with pytest.raises(LookupError, match="no partition known for owners"):
        store.write_batch({"w:u1": b"window"})
    with pytest.raises(ValueError, match="must look like '<field>:<owner>'"):
        store.get("window-of-u1")


def test_an_event_may_name_an_item_before_the_catalogue_does(minilm_encoder: Any) -> None:
    from models.contracts import CatalogItem

    rt = with_catalog(runtime(minilm_encoder, "w1"))
    first = {
        "user_id": "u1",
        "item_id": "late-item",
        "event": "view",
        "ts": 1_700_000_000.0,
        "item_text": "A shiny espresso machine",
    }
    outcome = rt.process_events(records("driftrec.events", [(b"u1", json.dumps(first).encode())]))
    assert len(outcome.recommendations) == 1
    catalog = rt.engine.catalog
    assert catalog.is_provisional("late-item")
    assert catalog.text_of(catalog.index_of("late-item")) == "A shiny espresso machine"

    item = CatalogItem(item_id="late-item", title="Espresso machine deluxe", tags=["espresso"])
    vector = minilm_encoder.encode([item.render_text()])[0]
    rt.catalogue.apply_item_vector(
        b"late-item", encode_item_vector(item, vector, encoder=minilm_encoder.model_version)
    )
    index = catalog.index_of("late-item")
    assert not catalog.is_provisional("late-item")
    assert catalog.text_of(index) == item.render_text()
    np.testing.assert_allclose(catalog.vectors[index], vector / np.linalg.norm(vector), atol=1e-6)


def test_one_incompatible_cluster_delta_is_dead_lettered_alone(minilm_encoder: Any) -> None:
    """A delta from a worker with another half-life must not take the good deltas down with it."""
    a, b = with_catalog(runtime(minilm_encoder, "a")), with_catalog(runtime(minilm_encoder, "b"))
    odd = with_catalog(runtime(minilm_encoder, "odd", cluster_half_life_s=3600.0))
    users = sorted({e.user_id for e in SHOP.events})
    for rt, share in ((a, users[::3]), (b, users[1::3]), (odd, users[2::3])):
        rt.process_events(event_records([e for e in SHOP.events if e.user_id in share]))
    deltas = [(rt.incarnation.encode(), rt.pop_deltas()[0]) for rt in (a, odd, b)]
    assert all(value is not None for _, value in deltas)
    snapshot, letters = a.merge_cluster_deltas(records("driftrec.cluster-deltas", deltas))
    assert [(d.offset, d.error_type) for d in letters] == [(1, "ValueError")]
    assert "half_life_s=3600" in letters[0].error
    assert snapshot is not None and a.authority is not None and a.authority.version == 1
    assert a.authority.n_clusters >= 1


class FlakyTopic:
    """A topic whose first ``failures`` sends fail, as a broker that is away would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_deltas_are_kept_until_the_broker_has_them(minilm_encoder: Any) -> None:
    rt = with_catalog(runtime(minilm_encoder, "w1"))
    rt.process_events(event_records(SHOP.events[:40]))
    cluster_topic, collab_topic = FlakyTopic(failures=1), FlakyTopic(failures=0)
    assert not asyncio.run(ship_deltas(rt, cluster_topic, collab_topic))
    assert [kind for kind, _ in rt.outbox] == ["cluster", "collab"]  # nothing forgotten
    rt.process_events(event_records(SHOP.events[40:60], start=40))
    assert asyncio.run(ship_deltas(rt, cluster_topic, collab_topic))
    assert rt.outbox == []
    # Both rounds reached the broker, oldest first: one delta each, then the newer ones.
    assert len(cluster_topic.sent) == 2 and len(collab_topic.sent) == 2
    first = ClusterDelta.from_bytes(cluster_topic.sent[0][1])
    assert first.n_points > 0


def test_skipped_offsets_are_counted_within_a_generation(minilm_encoder: Any) -> None:
    rt = runtime(minilm_encoder, "w1")
    batch = event_records(SHOP.events[:3])  # offsets 0, 1, 2
    assert rt.check_offsets(batch, generation=1) == 0
    assert rt.check_offsets(event_records(SHOP.events[:2], start=7), generation=1) == 4
    assert rt.metrics.offsets_skipped._value.get() == 4
    # A replay (lower offsets) or a new generation (a rebalance, a seek) is no hole.
    assert rt.check_offsets(event_records(SHOP.events[:2], start=3), generation=1) == 0
    assert rt.check_offsets(event_records(SHOP.events[:2], start=50), generation=2) == 0


class AckingStream:
    """Records what the agent acknowledges (Faust's ``Stream.ack``)."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.message.offset)
        return True


def test_events_are_acknowledged_only_once_their_deltas_are_out(minilm_encoder: Any) -> None:
    """A worker killed between the two would lose the events' counts and cluster updates."""
    rt = with_catalog(runtime(minilm_encoder, "w1"))
    batch = event_records(SHOP.events[:20])
    rt.process_events(batch)
    stream = AckingStream()
    rt.hold_acks(stream, batch)
    cluster_topic, collab_topic = FlakyTopic(failures=1), FlakyTopic(failures=0)
    assert not asyncio.run(ship_deltas(rt, cluster_topic, collab_topic))
    assert stream.acked == []  # a delta they caused is not on the broker: not acknowledged
    assert asyncio.run(ship_deltas(rt, cluster_topic, collab_topic))
    assert stream.acked == list(range(20))
    assert rt.unacked == []
