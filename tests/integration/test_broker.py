"""The local Apache Kafka broker, end to end, with the client the workers use (aiokafka).

Checks that a 3-partition topic created through the admin API keeps 100 keyed
records, each key on the partition Kafka's default partitioner gives it
(``toPositive(murmur2(key)) % partitions``, as Java producers compute it), in
send order per key, and that a consumer group reads them all back and commits
its offsets. Also checks that ``deploy/kafka/kafka.sh`` is idempotent on a fresh
data dir: format, ``up`` twice, ``status``, ``down`` twice.

"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from .conftest import broker_answers, run_kafka_script

pytestmark = pytest.mark.kafka

PARTITION_COUNT = 3
RECORD_COUNT = 100
KEY_COUNT = 12
CONSUME_DEADLINE_S = 30.0


@dataclasses.dataclass(frozen=True)
class StoredRecord:
    """One record as the broker reports it: where it landed and what it holds."""

    key: bytes
    value: bytes
    partition: int
    offset: int


@dataclasses.dataclass
class RoundTrip:
    """What one produce/consume round trip through the broker observed."""

    partitions_described: int
    produced: list[StoredRecord]
    consumed: list[StoredRecord]
    assignment: set[TopicPartition]
    committed: dict[int, int]


def keyed_records() -> list[tuple[bytes, bytes]]:
    """``RECORD_COUNT`` (key, value) pairs over ``KEY_COUNT`` keys, values numbered."""
    return [
        (f"user-{index % KEY_COUNT}".encode(), f"event-{index}".encode())
        for index in range(RECORD_COUNT)
    ]


def java_partition(key: bytes, partition_count: int) -> int:
    """Kafka's default partition of a keyed record: toPositive(murmur2(key)) % n."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


async def described_partition_count(
    admin: AIOKafkaAdminClient, topic: str, deadline_s: float = 10.0
) -> int:
    """Partitions of ``topic`` in the broker's metadata, once the new topic shows there.

    CreateTopics answers when the controller has committed the topic; the broker's
    metadata cache catches up a moment later, so poll until it lists partitions.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        described = await admin.describe_topics([topic])
        partitions = described[0]["partitions"] if described else []
        if partitions or time.monotonic() >= deadline:
            return len(partitions)
        await asyncio.sleep(0.1)


async def produce_and_consume(bootstrap: str, topic: str, group_id: str) -> RoundTrip:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITION_COUNT, replication_factor=1)]
        )
        errors = [error for _, error, *_ in response.topic_errors if error != 0]
        assert not errors, f"CreateTopics answered error codes {errors} for {topic}"
        partitions_described = await described_partition_count(admin, topic)

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            pairs = keyed_records()
            futures = [await producer.send(topic, key=key, value=value) for key, value in pairs]
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        produced = [
            StoredRecord(key, value, meta.partition, meta.offset)
            for (key, value), meta in zip(pairs, metadata, strict=True)
        ]

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumed: list[StoredRecord] = []
            deadline = time.monotonic() + CONSUME_DEADLINE_S
            while len(consumed) < RECORD_COUNT and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    consumed.extend(
                        StoredRecord(record.key, record.value, record.partition, record.offset)
                        for record in batch
                    )
            assignment = set(consumer.assignment())
            await consumer.commit()
        finally:
            await consumer.stop()

        offsets = await admin.list_consumer_group_offsets(group_id)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    return RoundTrip(partitions_described, produced, consumed, assignment, committed)


def test_keyed_records_round_trip_through_a_consumer_group(kafka_bootstrap: str) -> None:
    topic = f"driftrec-it-{uuid.uuid4().hex[:12]}"
    group_id = f"driftrec-it-group-{uuid.uuid4().hex[:12]}"
    trip = asyncio.run(produce_and_consume(kafka_bootstrap, topic, group_id))

    assert trip.partitions_described == PARTITION_COUNT
    # Every key lands on the partition a Java producer would pick, and all
    # partitions are used (12 keys over 3 partitions).
    for record in trip.produced:
        assert record.partition == java_partition(record.key, PARTITION_COUNT), record
    assert {record.partition for record in trip.produced} == set(range(PARTITION_COUNT))

    # All records come back exactly once, where the producer was told they landed.
    assert len(trip.consumed) == RECORD_COUNT
    assert sorted(trip.consumed, key=_position) == sorted(trip.produced, key=_position)

    # Per key, the consumer sees the values in the order they were sent.
    sent_per_key: dict[bytes, list[bytes]] = defaultdict(list)
    seen_per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in keyed_records():
        sent_per_key[key].append(value)
    for record in trip.consumed:
        seen_per_key[record.key].append(record.value)
    assert seen_per_key == sent_per_key

    # The one group member owns all partitions and committed the end of each.
    assert trip.assignment == {TopicPartition(topic, p) for p in range(PARTITION_COUNT)}
    per_partition = Counter(record.partition for record in trip.consumed)
    assert trip.committed == dict(per_partition)
    assert sum(trip.committed.values()) == RECORD_COUNT


def _position(record: StoredRecord) -> tuple[int, int]:
    return record.partition, record.offset


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _script_env(data_dir: Path, port: int, controller_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_HOST="127.0.0.1",
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(controller_port),
        KAFKA_DATA_DIR=str(data_dir),
    )
    return env


def test_script_is_idempotent_on_a_fresh_data_dir(kafka_bootstrap: str, tmp_path: Path) -> None:
    # kafka_bootstrap first: the jars are then cached, so this `up` downloads nothing.
    port, controller_port = _free_port(), _free_port()
    data_dir = tmp_path / "kafka-data"
    env = _script_env(data_dir, port, controller_port)
    bootstrap = f"127.0.0.1:{port}"

    down_when_down = run_kafka_script("down", env, timeout_s=30.0)
    assert down_when_down.returncode == 0, down_when_down.stdout
    assert "not running" in down_when_down.stdout
    assert run_kafka_script("status", env, timeout_s=30.0).returncode == 1

    try:
        first_up = run_kafka_script("up", env, timeout_s=300.0)
        assert first_up.returncode == 0, first_up.stdout
        assert "formatting" in first_up.stdout
        assert (data_dir / "kraft-combined-logs" / "meta.properties").is_file()
        pid = int((data_dir / "kafka.pid").read_text())
        assert broker_answers(bootstrap)

        second_up = run_kafka_script("up", env, timeout_s=30.0)
        assert second_up.returncode == 0, second_up.stdout
        assert f"already up: pid {pid}" in second_up.stdout
        assert "formatting" not in second_up.stdout

        status = run_kafka_script("status", env, timeout_s=30.0)
        assert status.returncode == 0, status.stdout
        assert f"pid {pid}" in status.stdout
    finally:
        down = run_kafka_script("down", env, timeout_s=120.0)
    assert down.returncode == 0, down.stdout
    assert not Path(f"/proc/{pid}").exists(), f"broker pid {pid} still alive after `down`"
    assert not (data_dir / "kafka.pid").exists()
    assert not broker_answers(bootstrap)

    down_again = run_kafka_script("down", env, timeout_s=30.0)
    assert down_again.returncode == 0, down_again.stdout
    assert "not running" in down_again.stdout
    assert run_kafka_script("status", env, timeout_s=30.0).returncode == 1


def test_script_rejects_unknown_commands_and_bad_ports(tmp_path: Path) -> None:
    env = _script_env(tmp_path / "kafka-data", _free_port(), _free_port())
    unknown = run_kafka_script("restart-everything", env, timeout_s=30.0)
    assert unknown.returncode == 2
    assert "usage:" in unknown.stdout

    env["KAFKA_PORT"] = "90920"
    bad_port = run_kafka_script("up", env, timeout_s=30.0)
    assert bad_port.returncode == 1
    assert "KAFKA_PORT must be a TCP port number in 1..65535, got '90920'" in bad_port.stdout
