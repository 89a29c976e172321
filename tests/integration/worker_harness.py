"""Run driftrec workers as subprocesses against the real broker, and talk to their topics.

Every test gets its own topic prefix and consumer group (:func:`unique_names`),
so tests never see each other's records; :func:`delete_topics` removes them at
the end. :class:`WorkerProcess` starts ``python -m streams.worker_cli worker``
with a ``DRIFTREC_*`` environment, waits for ``/readyz``, and always stops
the process (SIGTERM, then SIGKILL) — as a context manager it cannot leak.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique_names(tag: str) -> tuple[str, str]:
    """``(topic prefix, app id)`` no other test uses."""
    token = uuid.uuid4().hex[:10]
    return f"it-{tag}-{token}.", f"it-{tag}-{token}"


def worker_env(
    bootstrap: str,
    prefix: str,
    app_id: str,
    data_dir: Path,
    *,
    partitions: int = 4,
    **overrides: Any,
) -> dict[str, str]:
    """The environment of a worker subprocess (``DRIFTREC_*``; overrides by setting name)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DRIFTREC_") and not key.startswith("APP_")
    }
    settings = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": prefix,
        "app_id": app_id,
        "data_dir": str(data_dir),
        "partitions": partitions,
        "device": "cpu",
        "dtype": "float32",
        "delta_interval_s": 1.0,
        "commit_interval_s": 0.5,
        "log_level": "info",
        **overrides,
    }
    for name, value in settings.items():
        env[f"DRIFTREC_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A ``driftrec worker`` subprocess with its web port, log file and clean shutdown."""

    def __init__(self, env: dict[str, str], log_path: Path, *, name: str) -> None:
        self.env = dict(env)
        self.name = name
        self.web_port = free_port()
        self.env["DRIFTREC_WEB_PORT"] = str(self.web_port)
        self.env["DRIFTREC_WORKER_ID"] = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.worker_cli", "worker"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, Any]:
        """``(status, JSON body)`` of a web view; ``(0, None)`` when nothing answers."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        except (urllib.error.URLError, OSError):
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def state(self) -> dict[str, Any]:
        status, body = self.get("/state")
        assert status == 200, f"{self.name} /state answered {status}: {body}"
        return body

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout_s: float, what: str, poll_s: float = 0.2
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if predicate():
                return
            time.sleep(poll_s)
        raise AssertionError(f"{self.name}: {what} not within {timeout_s} s\n{self.log_tail()}")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.wait_until(
            lambda: self.get("/readyz")[0] == 200, timeout_s=timeout_s, what="/readyz 200"
        )

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (a clean Faust shutdown), then SIGKILL after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- Kafka I/O


@dataclass(frozen=True)
class Sent:
    """Where a produced record landed."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    rate: float | None = None,
) -> list[Sent]:
    """Send ``(key, value)`` records in order (at ``rate`` per second); where each landed."""
    return asyncio.run(_produce(bootstrap, topic, list(records), rate))


async def _produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], rate: float | None
) -> list[Sent]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_request_size=4 << 20
    )
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        for index, (key, value) in enumerate(records):
            if rate:
                ahead = started + index / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            futures.append(await producer.send(topic, key=key, value=value))
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        Sent(key, value, meta.partition, meta.offset)
        for (key, value), meta in zip(records, metadata, strict=True)
    ]


@dataclass(frozen=True)
class Received:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, bytes]
    received_at: float


def consume(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Received]], bool],
    timeout_s: float,
) -> list[Received]:
    """Read ``topic`` from the beginning until ``until(records)`` or ``timeout_s``."""
    return asyncio.run(_consume(bootstrap, topic, until, timeout_s))


async def _consume(
    bootstrap: str, topic: str, until: Callable[[list[Received]], bool], timeout_s: float
) -> list[Received]:
    consumer = reader(bootstrap)
    await consumer.start()
    received: list[Received] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            cluster = await consumer._client.fetch_all_metadata()
            partitions = set(cluster.partitions_for_topic(topic) or ())
            if not partitions:
                await asyncio.sleep(0.2)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while time.monotonic() < deadline and not until(received):
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                received.extend(
                    Received(
                        r.key,
                        r.value,
                        r.partition,
                        r.offset,
                        r.timestamp,
                        {k: bytes(v) for k, v in (r.headers or ())},
                        now,
                    )
                    for r in records
                )
    finally:
        await consumer.stop()
    return received


def reader(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer outside any group that reads from the beginning (for tests' checks)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 << 20,
        fetch_max_wait_ms=100,
    )


def create_topics(bootstrap: str, prefix: str, *, partitions: int = 4) -> dict[str, int]:
    """Create a test's topics as a worker would (before anything is produced to them)."""
    from streams.settings import WorkerSettings
    from streams.topology import ensure_topics

    settings = WorkerSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions)
    return asyncio.run(ensure_topics(settings))


def delete_topics(bootstrap: str, prefixes: Sequence[str]) -> None:
    """Delete every topic whose name starts with one of ``prefixes`` (test cleanup)."""

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    try:
        asyncio.run(run())
    except Exception as error:  # cleanup must never fail a test
        print(f"could not delete test topics {prefixes}: {error!r}")


def json_records(records: Iterable[Any], key_of: Callable[[Any], str]) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` pairs of contract records (anything with ``to_json_bytes``)."""
    return [(key_of(r).encode("utf-8"), r.to_json_bytes()) for r in records]
