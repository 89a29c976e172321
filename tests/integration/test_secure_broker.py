"""A worker and an outside client through TLS and SASL/SCRAM, on a real broker.

``deploy/kafka/kafka.sh`` starts a second local broker whose extra listener
speaks SASL_SSL (a self-signed CA made at its first start, a SCRAM user). A
worker configured as a production one would be (``DRIFTREC_SECURITY_PROTOCOL``,
``DRIFTREC_SASL_*``, ``DRIFTREC_SSL_CAFILE``) answers every event an outside
client publishes through the same listener; a client with a wrong password is
refused, and one that does not trust the CA cannot connect.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from models.synthetic_shop import synthetic_shop
from streams.settings import WorkerSettings
from streams.topology import ensure_topics

from .conftest import REPO_ROOT, run_kafka_script
from .worker_harness import WorkerProcess, delete_topics, unique_names, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PLAIN_PORT, SECURE_PORT = 9192, 9194
USER, PASSWORD = "driftrec", "driftrec-secret"
DATA_DIR = REPO_ROOT / ".cache" / f"kafka-data-{PLAIN_PORT}"
SHOP = synthetic_shop(
    n_users=20, items_per_topic=6, events_per_user=6, n_topics=4, n_fading=1, n_emerging=1
)


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[dict[str, str]]:
    """The TLS + SASL/SCRAM broker: the ``DRIFTREC_*`` security settings of a client."""
    env = dict(os.environ)
    env.update(
        KAFKA_PORT=str(PLAIN_PORT),
        KAFKA_SECURE_PORT=str(SECURE_PORT),
        KAFKA_SASL_USER=USER,
        KAFKA_SASL_PASSWORD=PASSWORD,
        KAFKA_DATA_DIR=str(DATA_DIR),
    )
    started = run_kafka_script("up", env)
    assert started.returncode == 0, started.stdout
    try:
        yield {
            "kafka_bootstrap": f"127.0.0.1:{SECURE_PORT}",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password": PASSWORD,
            "ssl_cafile": str(DATA_DIR / "tls" / "ca.pem"),
        }
    finally:
        run_kafka_script("down", env, timeout_s=120.0)


def client_settings(security: dict[str, str], prefix: str, **overrides: Any) -> WorkerSettings:
    return WorkerSettings(**{**security, "topic_prefix": prefix, "partitions": 2, **overrides})


async def publish(settings: WorkerSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.aiokafka_security()
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def answered(
    settings: WorkerSettings, topic: str, want: set[str], timeout_s: float
) -> set[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        **settings.aiokafka_security(),
    )
    await consumer.start()
    got: set[str] = set()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not want <= got and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got |= {json.loads(r.value)["event_id"] for r in records}
    finally:
        await consumer.stop()
    return got


def test_worker_and_client_through_tls_and_sasl_scram(
    secure_broker: dict[str, str], tmp_path: Path
) -> None:
    prefix, app_id = unique_names("secure")
    settings = client_settings(secure_broker, prefix)
    asyncio.run(ensure_topics(settings))
    env = worker_env(
        secure_broker["kafka_bootstrap"],
        prefix,
        app_id,
        tmp_path / "data",
        partitions=2,
        **{k: v for k, v in secure_broker.items() if k != "kafka_bootstrap"},
    )
    items = [(i.item_id.encode(), i.to_json_bytes()) for i in SHOP.items]
    events = [
        (e.user_id.encode(), e.model_copy(update={"event_id": f"s{n}"}).to_json_bytes())
        for n, e in enumerate(SHOP.events[:60])
    ]
    try:
        with WorkerProcess(env, tmp_path / "worker.log", name="secure") as worker:
            asyncio.run(publish(settings, prefix + "items", items))
            worker.wait_ready()
            worker.wait_until(
                lambda: worker.state()["recommendable_items"] == len(SHOP.items),
                timeout_s=60,
                what="the catalogue loaded through SASL_SSL",
            )
            asyncio.run(publish(settings, prefix + "events", events))
            want = {f"s{n}" for n in range(len(events))}
            got = asyncio.run(answered(settings, prefix + "recommendations", want, 90.0))
            assert want <= got, f"{len(want - got)} events unanswered\n{worker.log_tail()}"
    finally:
        delete_topics(f"127.0.0.1:{PLAIN_PORT}", [prefix, app_id + "-"])


def test_wrong_password_and_untrusted_certificate_are_refused(
    secure_broker: dict[str, str],
) -> None:
    for overrides in ({"sasl_password": "not-the-password"}, {"ssl_cafile": None}):
        settings = client_settings(secure_broker, "refused.", **overrides)
        with pytest.raises(KafkaConnectionError):
            asyncio.run(asyncio.wait_for(publish(settings, "refused.events", []), 30))
