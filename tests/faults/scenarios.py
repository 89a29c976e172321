"""The fault scenarios: each puts a worker under steady load, breaks something, and verifies.

Every scenario runs on its own topics and consumer group (:class:`Rig`), publishes
the synthetic shop's catalogue, starts its worker(s), sends a planned stream at a
steady rate from an outside client (1 % poison records unless told otherwise),
does its damage while the stream flows, and ends with :func:`~tests.faults.harness.verify`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.synthetic_shop import synthetic_shop
from tests.faults.harness import (
    ChaosWorker,
    LoadGenerator,
    PlannedEvent,
    Report,
    committed_offsets,
    plan_stream,
    verify,
    wipe,
)
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import run_kafka_script, script_env
from tests.integration.worker_harness import (
    create_topics,
    delete_topics,
    free_port,
    json_records,
    produce,
    unique_names,
    worker_env,
)

__all__ = ["SCENARIOS", "Rig", "Size"]


@dataclass(frozen=True)
class Size:
    """How big a scenario is: events, users, rate (events/s)."""

    events: int = 6000
    users: int = 300
    rate: float = 200.0
    poison_rate: float = 0.01


@dataclass
class Rig:
    """One scenario's topics, catalogue, plan and workers."""

    bootstrap: str
    root: Path
    tag: str
    size: Size
    partitions: int = 4
    overrides: dict[str, Any] = field(default_factory=dict)
    workers: list[ChaosWorker] = field(default_factory=list)
    trail: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix, self.app_id = unique_names(self.tag)
        self.catalog = synthetic_shop(n_users=2).items
        self.plan: list[PlannedEvent] = plan_stream(
            [item.item_id for item in self.catalog],
            n_events=self.size.events,
            n_users=self.size.users,
            poison_rate=self.size.poison_rate,
        )
        self.started = time.monotonic()
        self._load: LoadGenerator | None = None
        create_topics(self.bootstrap, self.prefix, partitions=self.partitions)
        produce(
            self.bootstrap, self.prefix + "items", json_records(self.catalog, lambda i: i.item_id)
        )

    def note(self, what: str) -> None:
        """Log a step with the group's committed offsets (for the report's trail)."""
        offsets = committed_offsets(self.bootstrap, self.app_id, self.prefix + "events")
        line = f"{time.monotonic() - self.started:6.1f}s {what}: committed {offsets}"
        self.trail.append(line)
        print(line, flush=True)

    def data_dir(self, name: str) -> Path:
        return self.root / f"data-{name}"

    def worker(
        self, name: str, data_dir: Path, *, pod: str = "driftrec-0", **overrides: Any
    ) -> ChaosWorker:
        env = worker_env(
            self.bootstrap,
            self.prefix,
            self.app_id,
            data_dir,
            partitions=self.partitions,
            **{**self.overrides, **overrides},
        )
        worker = ChaosWorker(env, self.root / "logs" / f"{name}.log", name=name, pod=pod)
        self.workers.append(worker)
        return worker.start()

    def wait_serving(self, worker: ChaosWorker, timeout_s: float = 180.0) -> None:
        worker.wait_ready(timeout_s)
        worker.wait_until(
            lambda: worker.state()["recommendable_items"] == len(self.catalog),
            timeout_s=60,
            what="the catalogue loaded",
        )

    def load(self, *, hold_at: float | None = None) -> LoadGenerator:
        self._load = LoadGenerator(
            self.bootstrap, self.prefix + "events", self.plan, rate=self.size.rate, hold_at=hold_at
        ).start()
        return self._load

    def verify(
        self, scenario: str, *, last: ChaosWorker | None = None, timeout_s: float = 180.0
    ) -> Report:
        report = verify(
            self.bootstrap,
            self.prefix,
            self.plan,
            scenario=scenario,
            timeout_s=timeout_s,
            last_worker=None if last is None else last.pod,
            restarted_at=None if last is None else last.spawned_at,
            landed=self._load.landed if self._load is not None else None,
        )
        report.worst_healthz_gap_s = max((w.worst_healthz_gap_s for w in self.workers), default=0.0)
        report.wall_s = time.monotonic() - self.started
        return report

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout_s=30)
        delete_topics(self.bootstrap, [self.prefix, self.app_id + "-"])


def wait_share(load: LoadGenerator, share: float) -> None:
    """Until ``share`` of the plan has been sent."""
    while load.sent < share * len(load.plan) and not load.done:
        time.sleep(0.05)


# --------------------------------------------------------------------------- scenarios


def kill_restart(rig: Rig, *, empty: bool) -> Report:
    """kill -9 at 40 % of the stream, restarted on the same (or an empty) data dir."""
    first = rig.worker("first", rig.data_dir("first"))
    rig.wait_serving(first)
    load = rig.load()
    wait_share(load, 0.4)
    first.kill()
    data_dir = rig.data_dir("first")
    if empty:
        wipe(data_dir)
    again = rig.worker("again", data_dir)
    load.join(600)
    name = "kill -9, lost volume" if empty else "kill -9, same data dir"
    return rig.verify(name, last=again)


def crash_loop(rig: Rig) -> Report:
    """kill -9 mid-stream, then killed again at each stage of start-up, then same, then empty dir.

    The pod of a worker in CrashLoopBackOff: its restarts die in the middle of
    importing, of joining the group and recovering its tables, right after it
    became ready and in its first batches; then it comes back on its own data,
    dies once more, and finally comes back on an empty volume.
    """
    data_dir = rig.data_dir("loop")
    first = rig.worker("loop-0", data_dir)
    rig.wait_serving(first)
    # The last 30 % waits for the final worker, so that it has events to answer from
    # the windows it restored (a leak would show there) whatever the loop's length.
    load = rig.load(hold_at=0.7)
    wait_share(load, 0.25)
    first.kill()
    rig.note("killed mid-stream")
    for index, (stage, after_s) in enumerate(
        [("boot", 3.0), ("web", 0.0), ("ready", 0.0), ("serving", 2.0)], start=1
    ):
        worker = rig.worker(f"loop-{index}-{stage}", data_dir)
        worker.wait_stage(stage, after_s=after_s)
        worker.kill()
        rig.note(f"killed at {stage}")
    survivor = rig.worker("loop-5-same-dir", data_dir)
    rig.wait_serving(survivor)
    wait_share(load, 0.7)
    time.sleep(2.0)
    survivor.kill()
    rig.note("same-dir worker killed")
    wipe(data_dir)
    last = rig.worker("loop-6-empty-dir", data_dir)
    load.release()
    load.join(600)
    return rig.verify("crash loop, then same and empty data dir", last=last, timeout_s=240)


def crash_at_boot(rig: Rig) -> Report:
    """kill -9, restarted on the same dir and killed 3 s into its start-up, then an empty dir."""
    data_dir = rig.data_dir("boot")
    first = rig.worker("boot-0", data_dir)
    rig.wait_serving(first)
    load = rig.load()
    wait_share(load, 0.4)
    first.kill()
    rig.note("first killed")
    second = rig.worker("boot-1", data_dir)
    second.wait_stage("boot", after_s=3.0)
    second.kill()
    rig.note("second killed at boot")
    wipe(data_dir)
    last = rig.worker("boot-2-empty-dir", data_dir)
    load.join(600)
    rig.note("load sent")
    rig.wait_serving(last)
    rig.note("last serving")
    time.sleep(5)
    rig.note("last serving + 5 s")
    return rig.verify("killed at boot, then an empty data dir", last=last, timeout_s=240)


def two_workers_one_killed(rig: Rig) -> Report:
    """Two workers; one killed for good at 40 %: its partitions and windows move to the other."""
    keeper = rig.worker("keeper", rig.data_dir("keeper"), pod="driftrec-0")
    victim = rig.worker("victim", rig.data_dir("victim"), pod="driftrec-1")
    rig.wait_serving(keeper)
    rig.wait_serving(victim)
    load = rig.load()
    wait_share(load, 0.4)
    victim.kill()
    load.join(600)
    return rig.verify("two workers, one killed for good", timeout_s=300)


def rolling_restart(rig: Rig) -> Report:
    """Two workers restarted one after the other (SIGTERM, same data dir), as a rolling update does.

    Each graceful stop and each return moves partitions under load: four
    rebalances in which a worker's fetched, buffered and in-flight events must
    neither be acknowledged unprocessed nor dropped (streams/batching.py,
    streams/faust_fixes.py).
    """
    workers = {
        name: rig.worker(name, rig.data_dir(name), pod=pod)
        for name, pod in (("a", "driftrec-0"), ("b", "driftrec-1"))
    }
    for worker in workers.values():
        rig.wait_serving(worker)
    load = rig.load()
    last = workers["b"]
    for share, name in ((0.25, "a"), (0.6, "b")):
        wait_share(load, share)
        code = workers[name].stop(timeout_s=60)
        rig.note(f"{name} stopped gracefully (exit {code}) at {share:.0%} of the stream")
        last = rig.worker(f"{name}-again", rig.data_dir(name), pod=workers[name].pod)
        rig.wait_serving(last)
    load.join(600)
    return rig.verify("rolling restart of two workers", timeout_s=300)


def _broker(rig: Rig, command: str) -> None:
    """``deploy/kafka/kafka.sh up|down`` for the broker the scenario runs against."""
    result = run_kafka_script(command, script_env(rig.bootstrap), timeout_s=180.0)
    if result.returncode != 0:
        raise RuntimeError(f"kafka.sh {command} failed:\n{result.stdout}")


def broker_restart(rig: Rig, *, down_s: float = 20.0) -> Report:
    """The broker stopped for ``down_s`` at 30 % of the stream, then started again."""
    worker = rig.worker("through-outage", rig.data_dir("outage"))
    rig.wait_serving(worker)
    load = rig.load()
    wait_share(load, 0.3)
    _broker(rig, "down")
    time.sleep(down_s)
    _broker(rig, "up")
    load.join(600)
    return rig.verify(f"broker down {down_s:.0f} s", timeout_s=300)


def encoder_outage(rig: Rig, *, hang_s: float = 60.0, down_s: float = 15.0) -> Report:
    """The remote encoder hangs (accepts, never answers) for ``hang_s``, is down, comes back.

    Sequence mode, so that every batch calls the encoder. The worker must
    stay live (``/healthz`` answering throughout), keep every event and
    recommend it once the service is back.
    """
    with encoder_service() as service:
        proxy = FaultProxy(service).start()
        try:
            rig.overrides.update(
                encoder_backend="remote", encoder_url=proxy.url, interest_mode="sequence"
            )
            worker = rig.worker("remote", rig.data_dir("remote"))
            rig.wait_serving(worker)
            load = rig.load()
            wait_share(load, 0.3)
            proxy.set_mode("hang")
            rig.note(f"encoder hangs for {hang_s:.0f} s")
            time.sleep(hang_s)
            proxy.set_mode("down")
            rig.note(f"encoder down for {down_s:.0f} s")
            time.sleep(down_s)
            proxy.set_mode("pass")
            rig.note("encoder back")
            load.join(600)
            report = rig.verify(
                f"remote encoder hung {hang_s:.0f} s, down {down_s:.0f} s", timeout_s=300
            )
        finally:
            proxy.stop()
    return report


def encoder_away_at_start(rig: Rig, *, away_s: float = 20.0) -> Report:
    """A worker started while the encoder service is unreachable: up, not ready, then serving."""
    with encoder_service() as service:
        proxy = FaultProxy(service, mode="down").start()
        try:
            rig.overrides.update(encoder_backend="remote", encoder_url=proxy.url)
            worker = rig.worker("early", rig.data_dir("early"))
            deadline = time.monotonic() + away_s
            alive = not_ready = 0
            while time.monotonic() < deadline:
                worker.check_alive()
                alive += worker.get("/healthz")[0] == 200
                not_ready += worker.get("/readyz")[0] == 503
                time.sleep(1.0)
            rig.note(
                f"encoder away {away_s:.0f} s: /healthz 200 {alive}x, /readyz 503 {not_ready}x"
            )
            proxy.set_mode("pass")
            rig.wait_serving(worker)
            rig.note("encoder back, worker serving")
            load = rig.load()
            load.join(600)
            report = rig.verify(f"encoder unreachable at start for {away_s:.0f} s")
            if alive < away_s / 2 or not_ready < away_s / 2:
                report.misrouted.append(
                    f"while the encoder was away: /healthz 200 {alive}x, /readyz 503 "
                    f"{not_ready}x in {away_s:.0f} s"
                )
        finally:
            proxy.stop()
    return report


def steady_with_poison(rig: Rig) -> Report:
    """No fault but 1 % poison records: every poison record dead-lettered, every event answered."""
    worker = rig.worker("steady", rig.data_dir("steady"))
    rig.wait_serving(worker)
    load = rig.load()
    load.join(600)
    return rig.verify("poison records at 1 %")


@contextlib.contextmanager
def encoder_service() -> Iterator[int]:
    """``driftrec serve-encoder`` (MiniLM behind TEI's API) on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "driftrec"),
            "serve-encoder",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("serve-encoder did not start") from None
                time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(30)


SCENARIOS: dict[str, Callable[[Rig], Report]] = {
    "kill-same-dir": lambda rig: kill_restart(rig, empty=False),
    "kill-empty-dir": lambda rig: kill_restart(rig, empty=True),
    "crash-loop": crash_loop,
    "crash-at-boot": crash_at_boot,
    "two-workers-one-killed": two_workers_one_killed,
    "rolling-restart": rolling_restart,
    "broker-restart": broker_restart,
    "encoder-outage": encoder_outage,
    "encoder-away-at-start": encoder_away_at_start,
    "poison": steady_with_poison,
}
