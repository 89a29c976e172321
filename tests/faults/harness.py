"""Parts of the fault suite: a planned stream, a load generator, killable workers, a verifier.

Every event of a scenario is planned before it starts (:func:`plan_stream`):
each user walks through distinct catalogue items, so any consumed item that
reappears in one of the user's later recommendations is a leak, and every
event carries a unique ``event_id``, so the verifier can account for each one:
answered by a recommendation, dead-lettered (poison records only), or **lost**.

:class:`LoadGenerator` publishes the plan at a steady rate from its own thread,
as an outside client would, and keeps sending through broker outages.
:class:`ChaosWorker` is a worker subprocess that can be killed with SIGKILL at a
chosen stage of its start-up, with a prober that records its worst ``/healthz``
gap. :func:`verify` reads the recommendations and dead letters and reports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tests.integration.worker_harness import WorkerProcess, reader

__all__ = [
    "ChaosWorker",
    "HealthProbe",
    "LoadGenerator",
    "PlannedEvent",
    "Report",
    "committed_offsets",
    "plan_stream",
    "verify",
    "wipe",
]

START_TS = 1_700_000_000.0


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One record of a scenario's stream: a behaviour event or a poison record."""

    event_id: str
    user_id: str
    #: The item consumed (None for a poison record).
    item_id: str | None
    key: bytes
    value: bytes
    #: Items the user consumed up to and including this event (never to be recommended).
    consumed: frozenset[str]

    @property
    def poison(self) -> bool:
        return self.item_id is None


def plan_stream(
    item_ids: list[str],
    *,
    n_events: int,
    n_users: int,
    poison_rate: float = 0.0,
    seed: int = 0,
) -> list[PlannedEvent]:
    """``n_events`` events of ``n_users`` users, each user on distinct items, in send order.

    A ``poison_rate`` share of the records are malformed (a mistyped field,
    an unknown event type, a key that is not the user, bytes that are not
    JSON); each carries its ``event_id`` somewhere in its bytes so that its
    dead letter can be matched.
    """
    rng = random.Random(seed)
    per_user = -(-n_events // n_users)
    if per_user > len(item_ids):
        raise ValueError(f"{per_user} events per user need at least as many items")
    walks = {f"u{u:04d}": rng.sample(item_ids, per_user) for u in range(n_users)}
    progress = dict.fromkeys(walks, 0)
    consumed: dict[str, frozenset[str]] = dict.fromkeys(walks, frozenset())
    users = list(walks)
    planned: list[PlannedEvent] = []
    for index in range(n_events):
        event_id = f"e{index:07d}"
        user = rng.choice([u for u in users if progress[u] < per_user])
        ts = START_TS + 60.0 * index
        if rng.random() < poison_rate:
            key, value = _poison(rng, user, event_id, ts)
            planned.append(PlannedEvent(event_id, user, None, key, value, consumed[user]))
            continue
        item = walks[user][progress[user]]
        progress[user] += 1
        consumed[user] = consumed[user] | {item}
        record = {
            "user_id": user,
            "item_id": item,
            "event": rng.choice(["view", "click", "purchase"]),
            "ts": ts,
            "event_id": event_id,
        }
        value = json.dumps(record).encode()
        planned.append(PlannedEvent(event_id, user, item, user.encode(), value, consumed[user]))
    return planned


def _poison(rng: random.Random, user: str, event_id: str, ts: float) -> tuple[bytes, bytes]:
    kind = rng.randrange(4)
    base = {"user_id": user, "item_id": "m1", "event": "click", "ts": ts, "event_id": event_id}
    if kind == 0:
        base["ts"] = ["not", "a", "time"]
    elif kind == 1:
        base["event"] = "teleport"
    elif kind == 2:
        return b"not-" + user.encode(), json.dumps(base).encode()
    else:
        return user.encode(), b"\xff\xfe{not json " + event_id.encode()
    return user.encode(), json.dumps(base).encode()


# --------------------------------------------------------------------------- load


class LoadGenerator:
    """Publishes a plan at ``rate`` records/s from a thread, through broker outages.

    A record whose delivery fails (broker down, request timed out) is sent
    again until the broker takes it or ``give_up_s`` passes: an outside client
    that does not drop its events. Re-sent records may land twice; the
    verifier counts events by ``event_id``.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        plan: list[PlannedEvent],
        *,
        rate: float,
        hold_at: float | None = None,
    ) -> None:
        #: Share of the plan after which sending pauses until :meth:`release`.
        self.hold_at = hold_at
        self._released = threading.Event()
        self.bootstrap = bootstrap
        self.topic = topic
        self.plan = plan
        self.rate = rate
        self.sent = 0
        self.resent = 0
        self.unsent: list[str] = []
        #: Where each event landed: event_id -> (partition, offset).
        self.landed: dict[str, tuple[int, int]] = {}
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def release(self) -> None:
        """Let a held generator send the rest of its plan (from now on, at its rate)."""
        self._released.set()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("the load generator is still sending")
        if self.error is not None:
            raise RuntimeError(f"load generator failed: {self.error!r}") from self.error

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as error:  # reported by join()
            self.error = error
        finally:
            self.finished_at = time.monotonic()

    async def _send_all(self, give_up_s: float = 180.0) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=1,
            request_timeout_ms=10_000,
            retry_backoff_ms=250,
        )
        await producer.start()
        try:
            self.started_at = time.monotonic()
            pending: dict[asyncio.Future[Any], PlannedEvent] = {}
            retry: list[PlannedEvent] = []
            hold = None if self.hold_at is None else int(self.hold_at * len(self.plan))
            for index, event in enumerate(self.plan):
                if index == hold and not self._released.is_set():
                    await asyncio.to_thread(self._released.wait)
                    self.started_at = time.monotonic() - index / self.rate
                ahead = self.started_at + index / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                retry += _failed(pending, self.landed)
                for again in [event, *retry]:
                    try:
                        future = await producer.send(self.topic, key=again.key, value=again.value)
                    except Exception:
                        retry.append(again)
                        await asyncio.sleep(0.2)
                        continue
                    pending[future] = again
                    if again is not event:
                        self.resent += 1
                retry = [r for r in retry if r not in pending.values()]
                self.sent = index + 1
            deadline = time.monotonic() + give_up_s
            while (pending or retry) and time.monotonic() < deadline:
                if pending:
                    await asyncio.wait(list(pending), timeout=1.0)
                retry += _failed(pending, self.landed)
                while retry:
                    again = retry.pop()
                    try:
                        pending[
                            await producer.send(self.topic, key=again.key, value=again.value)
                        ] = again
                        self.resent += 1
                    except Exception:
                        retry.append(again)
                        await asyncio.sleep(0.5)
                        break
            self.unsent = sorted({e.event_id for e in [*pending.values(), *retry]})
        finally:
            await producer.stop()


def _failed(
    pending: dict[asyncio.Future[Any], PlannedEvent], landed: dict[str, tuple[int, int]]
) -> list[PlannedEvent]:
    """Remove settled futures from ``pending``; the events whose delivery failed."""
    failed = []
    for future in [f for f in pending if f.done()]:
        event = pending.pop(future)
        if future.cancelled() or future.exception() is not None:
            failed.append(event)
        else:
            metadata = future.result()
            landed[event.event_id] = (metadata.partition, metadata.offset)
    return failed


# --------------------------------------------------------------------------- workers


class HealthProbe:
    """Polls a worker's ``/healthz`` and records the longest gap between two answers."""

    def __init__(self, port: int, *, poll_s: float = 0.2, timeout_s: float = 1.0) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.first_ok: float | None = None
        self.last_ok: float | None = None
        self.worst_gap_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{port}", daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                    ok = response.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
            if ok and not self._stop.is_set():
                now = time.monotonic()
                if self.last_ok is not None:
                    self.worst_gap_s = max(self.worst_gap_s, now - self.last_ok)
                else:
                    self.first_ok = now
                self.last_ok = now
            self._stop.wait(self.poll_s)


#: Stages of a worker's start-up at which a crash loop kills it.
STAGES = ("boot", "web", "ready", "serving")


class ChaosWorker(WorkerProcess):
    """A worker subprocess that can be killed (SIGKILL) at a stage of its start-up.

    Stages: ``boot`` (``after_s`` seconds after the process started, while it
    imports and loads its model), ``web`` (the Faust worker's web server
    answers, before it is ready: joining the group, recovering tables,
    reading the catalogue),
    ``ready`` (``/readyz`` answered 200), ``serving`` (``after_s`` seconds after
    it became ready, in the middle of its first batches).
    """

    def __init__(
        self, env: dict[str, str], log_path: Path, *, name: str, pod: str | None = None
    ) -> None:
        super().__init__(env, log_path, name=name)
        #: The worker id, stable across restarts as a StatefulSet pod's name is.
        self.pod = pod or name
        self.env["DRIFTREC_WORKER_ID"] = self.pod
        self.probe: HealthProbe | None = None
        self.spawned_at: float | None = None  # wall clock
        self.killed = False

    def start(self) -> ChaosWorker:
        self.spawned_at = time.time()
        super().start()
        self.probe = HealthProbe(self.web_port).start()
        return self

    def wait_stage(self, stage: str, *, after_s: float = 3.0, timeout_s: float = 180.0) -> None:
        if stage == "boot":
            time.sleep(after_s)
        elif stage == "web":

            def faust_serves() -> bool:  # not the start-up gate, which says "starting"
                status, body = self.get("/readyz")
                return status in (200, 503) and isinstance(body, dict) and "starting" not in body

            self.wait_until(faust_serves, timeout_s=timeout_s, what="Faust's /readyz", poll_s=0.05)
        elif stage in ("ready", "serving"):
            self.wait_until(
                lambda: self.get("/readyz")[0] == 200,
                timeout_s=timeout_s,
                what="/readyz 200",
                poll_s=0.05,
            )
            if stage == "serving":
                time.sleep(after_s)
        else:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self.killed = True
        self.stop_probe()

    def stop_probe(self) -> None:
        if self.probe is not None:
            self.probe.stop()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        code = super().stop(timeout_s)
        self.stop_probe()
        return code

    @property
    def worst_healthz_gap_s(self) -> float:
        return 0.0 if self.probe is None else self.probe.worst_gap_s


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset of each partition of ``topic``."""

    async def read() -> dict[int, int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    return dict(sorted(asyncio.run(read()).items()))


def wipe(data_dir: Path) -> None:
    """A lost volume: the worker's data directory, gone."""
    shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- verifying


@dataclass
class Report:
    """What happened to every event of a scenario."""

    scenario: str
    sent: int
    recommended: int = 0
    dead_lettered: int = 0
    lost: list[str] = field(default_factory=list)
    #: Recommendations beyond the first for an event (at-least-once redelivery).
    duplicates: int = 0
    #: Recommendations that hold an item their user had already consumed.
    leaks: int = 0
    leak_examples: list[str] = field(default_factory=list)
    #: Poison records that were recommended instead of dead-lettered, or good events
    #: that were dead-lettered.
    misrouted: list[str] = field(default_factory=list)
    restart_to_first_s: float | None = None
    worst_healthz_gap_s: float = 0.0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and self.leaks == 0 and not self.misrouted

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "sent": self.sent,
            "recommended": self.recommended,
            "dead-lettered": self.dead_lettered,
            "lost": len(self.lost),
            "duplicates": self.duplicates,
            "leaks": self.leaks,
            "restart→first rec (s)": self.restart_to_first_s,
            "worst /healthz gap (s)": round(self.worst_healthz_gap_s, 2),
            "wall (s)": round(self.wall_s, 1),
        }

    def summary(self) -> str:
        row = self.row()
        text = ", ".join(f"{k} {v}" for k, v in row.items())
        if self.lost:
            text += f"\n  lost e.g. {self.lost[:10]}"
        if self.leak_examples:
            text += f"\n  leaks e.g. {self.leak_examples[:5]}"
        for note in self.notes:
            text += f"\n  {note}"
        if self.misrouted:
            text += f"\n  misrouted e.g. {self.misrouted[:10]}"
        return text


def verify(
    bootstrap: str,
    prefix: str,
    plan: list[PlannedEvent],
    *,
    scenario: str,
    timeout_s: float = 120.0,
    last_worker: str | None = None,
    restarted_at: float | None = None,
    landed: dict[str, tuple[int, int]] | None = None,
) -> Report:
    """Read recommendations and dead letters until every event is accounted for (or timeout)."""
    return asyncio.run(
        _verify(
            bootstrap, prefix, plan, scenario, timeout_s, last_worker, restarted_at, landed or {}
        )
    )


async def _verify(
    bootstrap: str,
    prefix: str,
    plan: list[PlannedEvent],
    scenario: str,
    timeout_s: float,
    last_worker: str | None,
    restarted_at: float | None,
    landed: dict[str, tuple[int, int]],
) -> Report:
    by_id = {e.event_id: e for e in plan}
    answers: Counter[str] = Counter()
    lettered: set[str] = set()
    report = Report(scenario=scenario, sent=len(plan))
    first_of_last: float | None = None
    consumer = reader(bootstrap)
    await consumer.start()
    try:
        topics = {prefix + "recommendations": "rec", prefix + "dead-letters": "dead"}
        cluster = await consumer._client.fetch_all_metadata()
        assigned = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, records in batches.items():
                for record in records:
                    if topics[tp.topic] == "rec":
                        rec = json.loads(record.value)
                        event = by_id.get(rec.get("event_id"))
                        if event is None:
                            continue
                        answers[event.event_id] += 1
                        if event.poison:
                            report.misrouted.append(f"{event.event_id} (poison recommended)")
                        leaked = [
                            i["item_id"] for i in rec["items"] if i["item_id"] in event.consumed
                        ]
                        if leaked:
                            report.leaks += 1
                            if len(report.leak_examples) < 20:
                                report.leak_examples.append(
                                    f"{event.event_id}/{event.user_id}: {leaked}"
                                )
                        worker = dict(record.headers or ()).get("driftrec-worker", b"").decode()
                        emitted = float(rec.get("emitted_at") or 0.0)
                        if (
                            last_worker is not None
                            and worker == last_worker
                            and (restarted_at is None or emitted >= restarted_at)
                            and (first_of_last is None or emitted < first_of_last)
                        ):
                            first_of_last = emitted
                    else:
                        letter = json.loads(record.value)
                        payload = base64.b64decode(letter.get("payload_b64") or "")
                        event_id = _event_id_in(payload)
                        if event_id in by_id:
                            lettered.add(event_id)
                            if not by_id[event_id].poison:
                                report.misrouted.append(
                                    f"{event_id} (dead-lettered: {letter['error']})"
                                )
            accounted = answers.keys() | lettered
            if len(accounted) >= len(by_id) and not batches:
                break
    finally:
        await consumer.stop()
    report.recommended = len(answers)
    report.dead_lettered = len(lettered)
    report.duplicates = sum(n - 1 for n in answers.values())
    report.lost = sorted(set(by_id) - answers.keys() - lettered)
    where: dict[int, list[int]] = {}
    for event_id in report.lost:
        if event_id in landed:
            partition, offset = landed[event_id]
            where.setdefault(partition, []).append(offset)
    for partition, offsets in sorted(where.items()):
        report.notes.append(
            f"lost in partition {partition}: {len(offsets)} between offsets "
            f"{min(offsets)} and {max(offsets)}"
        )
    if first_of_last is not None and restarted_at is not None:
        report.restart_to_first_s = round(first_of_last - restarted_at, 1)
    return report


def _event_id_in(payload: bytes) -> str | None:
    try:
        return str(json.loads(payload)["event_id"])
    except (ValueError, KeyError, TypeError):
        marker = payload.rfind(b" e")
        if marker < 0:
            return None
        return payload[marker + 1 :].decode("ascii", "replace")
