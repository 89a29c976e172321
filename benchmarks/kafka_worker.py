"""Benchmark one driftrec worker through a real Kafka broker (not a test: it prints figures).

Two measurements, on fresh topics, with one ``driftrec worker`` subprocess in
pooled mode and the real MiniLM encoder:

1. **Throughput** — a backlog of ``--backlog`` events is published at once;
   events/s is the backlog over the time between the first and the last
   recommendation arriving at a consumer.
2. **Latency** — events are offered at a fixed ``--rate`` for ``--seconds``;
   each event's latency is from just before its ``send`` to the moment a
   consumer receives its recommendation (producer, broker, worker, broker,
   consumer). Reports p50 / p90 / p99 / max.

Usage (the local broker running, ``make kafka-up``)::

    .venv/bin/python benchmarks/kafka_worker.py --backlog 20000 --rate 500 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models.synthetic_shop import synthetic_shop  # noqa: E402
from streams.settings import WorkerSettings  # noqa: E402
from streams.topology import ensure_topics  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


class Recommendations:
    """A consumer of the recommendations topic that notes when each event was answered."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        self.topic = topic
        self.answered: dict[str, float] = {}

    async def start(self) -> None:
        await self.consumer.start()
        cluster = await self.consumer._client.fetch_all_metadata()
        partitions = [
            TopicPartition(self.topic, p) for p in cluster.partitions_for_topic(self.topic)
        ]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)

    async def run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=50, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    event_id = json.loads(record.value)["event_id"]
                    self.answered.setdefault(event_id, now)

    async def wait_for(self, event_ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not event_ids <= self.answered.keys():
            if time.monotonic() > deadline:
                missing = len(event_ids - self.answered.keys())
                raise TimeoutError(f"{missing} events unanswered after {timeout_s} s")
            await asyncio.sleep(0.05)


async def publish(
    producer: AIOKafkaProducer, topic: str, events, sent_at: dict, rate: float | None
):
    started = time.perf_counter()
    for index, event in enumerate(events):
        if rate:
            ahead = started + index / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        sent_at[event.event_id] = time.time()
        await producer.send(topic, key=event.user_id.encode(), value=event.to_json_bytes())
    await producer.flush()


async def benchmark(args: argparse.Namespace) -> None:
    token = uuid.uuid4().hex[:8]
    prefix, app_id = f"bench-{token}.", f"bench-{token}"
    settings = WorkerSettings(
        kafka_bootstrap=args.bootstrap, topic_prefix=prefix, partitions=args.partitions
    )
    await ensure_topics(settings)
    n_latency = int(args.rate * args.seconds)
    shop = synthetic_shop(
        n_users=args.users,
        items_per_topic=40,
        events_per_user=max(2, (args.backlog + n_latency) // args.users + 1),
        n_topics=12,
    )
    events = [e.model_copy(update={"event_id": f"e{i}"}) for i, e in enumerate(shop.events)]
    backlog, offered = events[: args.backlog], events[args.backlog : args.backlog + n_latency]

    data_dir = Path(tempfile.mkdtemp(prefix="driftrec-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_")}
    env.update(
        DRIFTREC_KAFKA_BOOTSTRAP=args.bootstrap,
        DRIFTREC_TOPIC_PREFIX=prefix,
        DRIFTREC_APP_ID=app_id,
        DRIFTREC_DATA_DIR=str(data_dir),
        DRIFTREC_PARTITIONS=str(args.partitions),
        DRIFTREC_WEB_PORT=str(port),
        DRIFTREC_DEVICE=args.device,
        DRIFTREC_INTEREST_MODE="pooled",
        DRIFTREC_LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    log = open(data_dir / "worker.log", "wb")  # noqa: SIM115
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    worker = subprocess.Popen(
        [sys.executable, *profile, "-m", "streams.worker_cli", "worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=1, acks=1)
    await producer.start()
    recommendations = Recommendations(args.bootstrap, prefix + "recommendations")
    await recommendations.start()
    reader = asyncio.create_task(recommendations.run())
    try:
        for item in shop.items:
            await producer.send(
                prefix + "items", key=item.item_id.encode(), value=item.to_json_bytes()
            )
        await producer.flush()
        deadline = time.monotonic() + 300
        while True:
            state = get_json(port, "/state")
            if state and state["ready"] and state["recommendable_items"] == len(shop.items):
                break
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready; see {data_dir / 'worker.log'}")
            await asyncio.sleep(0.5)
        print(
            f"worker ready: {len(shop.items)} items, {args.partitions} partitions, "
            f"batch_max {settings.batch_max}, within {settings.batch_within_s * 1000:.0f} ms"
        )

        # 1. throughput on a backlog
        sent_at: dict[str, float] = {}
        cpu_before = cpu_seconds(worker.pid)
        await publish(producer, prefix + "events", backlog, sent_at, rate=None)
        await recommendations.wait_for({e.event_id for e in backlog}, timeout_s=600)
        cpu_used = cpu_seconds(worker.pid) - cpu_before
        times = [recommendations.answered[e.event_id] for e in backlog]
        span = max(times) - min(times)
        print(
            f"throughput: {len(backlog):,} events answered in {span:.2f} s after the first "
            f"→ {len(backlog) / span:,.0f} events/s ({args.users} users); the worker used "
            f"{cpu_used:.1f} CPU s → {len(backlog) / cpu_used:,.0f} events per CPU second"
        )

        # 2. latency at a fixed offered rate
        await asyncio.sleep(2.0)
        sent_at = {}
        await publish(producer, prefix + "events", offered, sent_at, rate=args.rate)
        await recommendations.wait_for({e.event_id for e in offered}, timeout_s=120)
        latency_ms = np.array(
            [(recommendations.answered[e.event_id] - sent_at[e.event_id]) * 1000 for e in offered]
        )
        p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
        print(
            f"latency at {args.rate:.0f} events/s for {args.seconds:.0f} s "
            f"({len(offered):,} events): p50 {p50:.1f} ms, p90 {p90:.1f} ms, "
            f"p99 {p99:.1f} ms, max {latency_ms.max():.1f} ms"
        )
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        for line in metrics.decode().splitlines():
            if line.startswith(
                (
                    "driftrec_batch_size_sum",
                    "driftrec_batch_size_count",
                    "driftrec_batch_seconds_sum",
                    "driftrec_event_to_recommendation_seconds_bucket",
                    "driftrec_event_to_recommendation_seconds_count",
                )
            ):
                print("  " + line)
    finally:
        reader.cancel()
        await recommendations.consumer.stop()
        await producer.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
        await admin.start()
        names = [t for t in await admin.list_topics() if t.startswith((prefix, app_id + "-"))]
        await admin.delete_topics(names)
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", help="Write a cProfile of the worker's main thread here.")
    asyncio.run(benchmark(parser.parse_args()))


if __name__ == "__main__":
    main()
