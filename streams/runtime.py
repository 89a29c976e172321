"""The engine of one worker and everything its agents do with it, without any Kafka I/O.

:class:`WorkerRuntime` parses records, runs the engine (in its engine thread,
off the event loop), and returns what the agents publish; it applies what
the broadcast readers bring (cluster snapshots, other workers' counts deltas),
keeps the deltas to ship in an outbox and the events whose deltas are not
shipped yet unacknowledged. Its :attr:`~WorkerRuntime.catalogue`
(:mod:`streams.worker_catalogue`) encodes items and adopts item vectors.
:mod:`streams.agents` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, TypeVar

from models.clustering.cluster_messages import ClusterDelta, ClusterSnapshot
from models.clustering.decaying_centroids import DecayingCentroids
from models.collaborative import CollaborativeDelta
from models.contracts import BehaviourEvent, InterestEvent, Recommendation, RecordError
from models.engine import Engine
from models.interest_drift import lifecycle_event
from models.record_parser import EventParser
from models.remote_encoder import EncoderUnavailableError
from streams.console import ConsoleFeed
from streams.dead_letters import DeadLetter
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings
from streams.table_store import FaustTableStore
from streams.worker_catalogue import ItemsOutcome, WorkerCatalogue, raise_if_retrying

__all__ = ["EventsOutcome", "ItemsOutcome", "WorkerRuntime"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass
class EventsOutcome:
    """What one events batch produced: recommendations and the dead letters."""

    recommendations: list[Recommendation] = field(default_factory=list)
    #: Users' confirmed moves between interest clusters (``interest-events``).
    interest_events: list[InterestEvent] = field(default_factory=list)
    #: Kafka timestamp (s) of the event each recommendation answers (end-to-end latency).
    source_timestamps: list[float | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass
class _EventsWork:
    """One events batch on its way through the runtime: parsed, then run, then published."""

    received_at: float
    valid: list[BehaviourEvent]
    sources: list[Any]
    owners: dict[str, Any]
    outcome: EventsOutcome
    recommendations: list[Recommendation] = field(default_factory=list)


# --------------------------------------------------------------------------- runtime


class WorkerRuntime:
    """The engine of one worker and everything its agents do with it, without any I/O.

    Parameters
    ----------
    settings
        The worker's settings.
    engine
        The engine; its clusterer must have ``role="worker"`` (the cluster model
        is owned by the model agent) and its store must be ``window_store``.
    window_store
        The Faust-table state store the engine writes windows to.
    metrics
        Where counters and histograms go.
    clock
        Wall clock (dead letters' ``failed_at``, latency); the engine's event time
        always comes from the events.

    Attributes
    ----------
    incarnation
        ``<worker id>/<random>``: the key of this process's deltas, so that it
        skips its own deltas but, after a restart, replays its former self's.
    outbox, unacked
        Deltas not yet on the broker; events whose deltas are not yet shipped.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        engine: Engine,
        *,
        window_store: FaustTableStore,
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(engine.clusterer, DecayingCentroids | None):
            raise TypeError("a worker's engine needs a DecayingCentroids clusterer (or none)")
        if engine.clusterer is not None and engine.clusterer.role != "worker":
            raise ValueError("a worker's clusterer must have role='worker'")
        self.settings = settings
        self.engine = engine
        #: What the live console (/console) shows: recent clusters, events, users.
        self.console = ConsoleFeed(engine)
        self.parser = EventParser.from_settings(settings)
        self.window_store = window_store
        self.metrics = metrics
        self.clock = clock
        self.worker_id = settings.resolved_worker_id
        self.incarnation = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"
        self.latest_snapshot: ClusterSnapshot | None = None
        self.authority: DecayingCentroids | None = None
        #: Cluster births, merges and retirements the model agent has still to publish.
        self.lifecycle_events: list[InterestEvent] = []
        self.catalog_loaded = asyncio.Event()
        self.model_loaded = asyncio.Event()
        self.counts_loaded = asyncio.Event()
        #: Last processed offset of each events partition (consumer lag).
        self.last_offsets: dict[int, int] = {}
        #: Deltas popped from the engine but not yet acknowledged by the broker, oldest first.
        self.outbox: list[tuple[str, bytes]] = []
        #: ``(stream, event)`` of events answered but not acknowledged: their deltas are not
        #: on the broker yet (:func:`ship_deltas` acknowledges them once they are).
        self.unacked: list[tuple[Any, Any]] = []
        #: Set when the worker begins to stop: batches are acknowledged at once from then
        #: on (Faust waits for every acknowledgement before it stops its consumer).
        self.stopping = False
        self._offsets_seen: dict[int, tuple[int, int]] = {}
        #: Held by whatever uses the engine from the event loop, so engine calls never overlap.
        self.engine_lock = asyncio.Lock()
        #: Held while deltas are shipped, so that the timer and the shutdown hook never
        #: send the same outbox twice.
        self.shipping = asyncio.Lock()
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="driftrec-engine")
        #: Whether engine work runs in the engine thread (see ``settings.engine_thread``).
        self.off_loop = settings.engine_thread == "always" or (
            settings.engine_thread == "auto"
            and (settings.encoder_backend == "remote" or settings.interest_mode == "sequence")
        )
        self._encoder_s = engine.stats.encoder_s
        #: Items encoded, item vectors adopted, the catalogue and index saved and restored.
        self.catalogue = WorkerCatalogue(settings, engine, self.parser, metrics, self._dead_letter)

    @property
    def model_version(self) -> int:
        """Version of the cluster model the engine adopted last (0 before the first one)."""
        return self.engine.model_version

    # ------------------------------------------------------------------ readiness
    @property
    def ready(self) -> bool:
        """Whether the catalogue, the cluster model and the counts have caught up."""
        return all(e.is_set() for e in (self.catalog_loaded, self.model_loaded, self.counts_loaded))

    async def wait_ready(self) -> None:
        await self.catalog_loaded.wait()
        await self.model_loaded.wait()
        await self.counts_loaded.wait()

    def _raise_if_retrying(self, error: BaseException) -> None:
        raise_if_retrying(error, self.settings)

    def _dead_letter(self, message: Any, error: BaseException) -> DeadLetter:
        return DeadLetter.from_message(
            message,
            error,
            worker_id=self.worker_id,
            failed_at=self.clock(),
            payload_limit=self.settings.dead_letter_payload_limit,
        )

    def broadcast_dead_letters(
        self, failures: Sequence[tuple[Any, BaseException]]
    ) -> list[DeadLetter]:
        """Dead letters of records a broadcast reader could not apply (aiokafka records)."""
        return [
            DeadLetter.from_record(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                timestamp=None if record.timestamp is None else record.timestamp / 1000.0,
                key=record.key,
                value=record.value,
                error=error,
                worker_id=self.worker_id,
                failed_at=self.clock(),
                payload_limit=self.settings.dead_letter_payload_limit,
            )
            for record, error in failures
        ]

    # ------------------------------------------------------------------ the engine thread
    async def run_in_engine_thread(self, work: Callable[[], _T]) -> _T:
        """``work()`` — anything that uses the engine — under the lock, in the engine thread.

        The engine is synchronous (its encoder calls may take seconds: a model
        on a CPU, a remote service timing out and backing off); run on the
        event loop they would stop Faust's heartbeats and web views with them.
        When :attr:`off_loop` is false (pooled mode on a local encoder, by
        default) the work runs inline: its batches take milliseconds, and a
        thread would contend for the GIL with Faust's own threads (measured:
        about half the events per CPU second, and p50 latency ×20 at 500/s).
        """
        async with self.engine_lock:
            return await self._in_engine_thread(work)

    async def run_off_loop(self, work: Callable[[], _T]) -> _T:
        """``work()`` under the engine lock, always in the engine thread: for work that
        takes seconds or minutes whatever the mode (building the vector index)."""
        async with self.engine_lock:
            return await self._in_engine_thread(work, always=True)

    async def _in_engine_thread(
        self, work: Callable[..., _T], *args: Any, always: bool = False
    ) -> _T:
        if not (self.off_loop or always):
            return work(*args)
        future = asyncio.get_running_loop().run_in_executor(self._engine_thread, work, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be stopped: let it finish before the caller's
            # cleanup (the table writes of an owners() block) runs, then go on
            # being cancelled. The wait is bounded by the encoder's timeouts.
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            raise

    def close(self) -> None:
        """Let the engine thread go (after its current work)."""
        self._engine_thread.shutdown(wait=False)

    # ------------------------------------------------------------------ events
    def parse_events(
        self, batch: Sequence[Any]
    ) -> tuple[list[BehaviourEvent], list[Any], list[DeadLetter]]:
        """Valid events with their Faust events, and dead letters for the rest."""
        valid: list[BehaviourEvent] = []
        sources: list[Any] = []
        letters: list[DeadLetter] = []
        for event in batch:
            message = event.message
            try:
                parsed = self.parser.parse_event(message.value)
                _check_user_key(message.key, parsed.user_id)
            except RecordError as error:
                letters.append(self._dead_letter(message, error))
                continue
            valid.append(parsed)
            sources.append(event)
        return valid, sources, letters

    def process_events(self, batch: Sequence[Any]) -> EventsOutcome:
        """Parse a batch of Faust events, run the engine once, return what to publish.

        A batch the engine fails on is retried event by event, so only the
        events that fail on their own become dead letters (what the failed
        batch call had already learned may then count twice). An unavailable
        encoder service is no fault of the events: with ``encoder_failure=retry``
        :class:`EncoderUnavailableError` propagates (the agent tries the batch
        again later), with ``dead-letter`` every event of the batch is
        dead-lettered with the reason. The engine runs in the calling thread;
        the worker's agent uses :meth:`process_events_off_loop`.
        """
        work = self._prepare_events(batch)
        if work.valid:
            with self.window_store.owners(work.owners):
                self._run_engine(work)
        return self._finish_events(work)

    async def process_events_off_loop(self, batch: Sequence[Any]) -> EventsOutcome:
        """:meth:`process_events` with the engine's work in the engine thread (:attr:`off_loop`).

        Parsing, the table reads (on entering :meth:`FaustTableStore.owners`)
        and the table writes (on leaving it) stay on the event loop; where the
        encoder can block (a remote service, sequence mode) the engine —
        encoder calls included, with their timeouts and backoff — runs in the
        engine thread, so a slow or hung encoder never stops heartbeats,
        ``/healthz`` or rebalances.
        """
        work = self._prepare_events(batch)
        if work.valid:
            async with self.engine_lock:
                with self.window_store.owners(work.owners):
                    await self._in_engine_thread(self._run_engine, work)
        return self._finish_events(work)

    def _prepare_events(self, batch: Sequence[Any]) -> _EventsWork:
        received_at = self.clock()
        self.metrics.events_in.inc(len(batch))
        for event in batch:
            self.last_offsets[event.message.partition] = event.message.offset
        valid, sources, letters = self.parse_events(batch)
        owners = {e.user_id: source for e, source in zip(valid, sources, strict=True)}
        return _EventsWork(received_at, valid, sources, owners, EventsOutcome(dead_letters=letters))

    def _run_engine(self, work: _EventsWork) -> None:
        valid, sources, outcome, received_at = (
            work.valid,
            work.sources,
            work.outcome,
            work.received_at,
        )
        started = time.perf_counter()
        try:
            recommendations = self.engine.process(valid, received_at=received_at)
        except EncoderUnavailableError as error:
            if self.settings.encoder_failure == "retry":
                raise
            logger.error("encoder unavailable; dead-lettering %d events: %s", len(valid), error)
            recommendations = []
            outcome.dead_letters += [self._dead_letter(s.message, error) for s in sources]
        except Exception:
            logger.exception(
                "engine failed on a batch of %d events; retrying one by one", len(valid)
            )
            recommendations = []
            for event, source in zip(valid, sources, strict=True):
                try:
                    recommendations += self.engine.process([event], received_at=received_at)
                except Exception as error:
                    self._raise_if_retrying(error)
                    outcome.dead_letters.append(self._dead_letter(source.message, error))
        work.recommendations = recommendations
        outcome.interest_events = self.engine.pop_interest_events()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _finish_events(self, work: _EventsWork) -> EventsOutcome:
        outcome = work.outcome
        if not work.valid:
            return outcome
        valid, sources, recommendations = work.valid, work.sources, work.recommendations
        timestamp_of = {e.user_id: s.message.timestamp for e, s in zip(valid, sources, strict=True)}
        if self.settings.emit_per == "event" and len(recommendations) == len(valid):
            outcome.source_timestamps = [s.message.timestamp for s in sources]
        else:
            outcome.source_timestamps = [timestamp_of.get(r.user_id) for r in recommendations]
        outcome.recommendations = recommendations
        self.metrics.events_processed.inc(len(valid))
        self.metrics.batch_size.observe(len(valid))
        self._observe_encoder()
        self._observe_model()
        return outcome

    def observe_sent(self, outcome: EventsOutcome) -> None:
        """Count what was published and the end-to-end latency of each recommendation."""
        self.console.observe(outcome.recommendations, outcome.interest_events)
        now = self.clock()
        self.metrics.recommendations_out.inc(len(outcome.recommendations))
        for timestamp in outcome.source_timestamps:
            if timestamp is not None:
                self.metrics.end_to_end_seconds.observe(max(0.0, now - timestamp))

    # ------------------------------------------------------------------ cluster model
    def pop_deltas(self) -> tuple[bytes | None, bytes | None]:
        """This worker's clusterer and counts deltas since the last call (None when empty)."""
        cluster_delta, counts_delta = self.engine.pop_deltas()
        return (
            None if cluster_delta is None else cluster_delta.to_bytes(),
            None if counts_delta is None else counts_delta.to_bytes(),
        )

    def stage_deltas(self) -> list[tuple[str, bytes]]:
        """Move the engine's new deltas to the :attr:`outbox`; what is waiting to be shipped.

        A delta leaves the outbox only through :meth:`shipped`, once the broker
        has acknowledged it, so a send that fails keeps it for the next try.
        """
        cluster_bytes, collab_bytes = self.pop_deltas()
        for kind, value in (("cluster", cluster_bytes), ("collab", collab_bytes)):
            if value is not None:
                self.outbox.append((kind, value))
        return list(self.outbox)

    def hold_acks(self, stream: Any, events: Sequence[Any]) -> None:
        """Keep ``events`` unacknowledged until the deltas they caused are on the broker."""
        self.unacked.extend((stream, event) for event in events)

    def take_unacked(self) -> list[tuple[Any, Any]]:
        """The held events, handed to whoever ships the deltas that cover them."""
        taken, self.unacked = self.unacked, []
        return taken

    def shipped(self, kind: str, value: bytes) -> None:
        """The broker has acknowledged ``value``: forget it and count it."""
        for index, (k, v) in enumerate(self.outbox):
            if k == kind and v is value:
                del self.outbox[index]
                break
        self.metrics.deltas_sent.labels(kind=kind).inc()
        self.metrics.delta_bytes.labels(kind=kind).inc(len(value))

    def check_offsets(self, batch: Sequence[Any], generation: int) -> int:
        """Count offsets of the events partitions that a batch skipped; log each skip.

        Within one consumer generation, a partition's records must arrive
        without holes: a hole means the consumer moved past records that were
        never handed to the agent (what the recovery race fixed in
        :mod:`streams.faust_fixes` did), or the topic holds transaction
        markers or was compacted. Either way operators should know: it is
        logged and counted in ``driftrec_offsets_skipped_total``.
        """
        skipped = 0
        seen = self._offsets_seen
        for event in batch:
            message = event.message
            partition, offset = message.partition, message.offset
            previous = seen.get(partition)
            if previous is not None and previous[0] == generation and offset > previous[1] + 1:
                gap = offset - previous[1] - 1
                skipped += gap
                logger.error(
                    "events partition %d: offsets %d..%d were skipped by the consumer "
                    "(never handed to the events agent)",
                    partition,
                    previous[1] + 1,
                    offset - 1,
                )
            if previous is None or previous[0] != generation or offset > previous[1]:
                seen[partition] = (generation, offset)
        if skipped:
            self.metrics.offsets_skipped.inc(skipped)
        return skipped

    def merge_cluster_deltas(self, batch: Sequence[Any]) -> tuple[bytes | None, list[DeadLetter]]:
        """Merge workers' deltas into the authoritative model; its new snapshot, if it changed."""
        letters: list[DeadLetter] = []
        deltas: list[ClusterDelta] = []
        authority = self._authority()
        dim: int | None = None
        for event in batch:
            # Each record on its own: a delta that does not decode, or does not fit the
            # model (another half-life, another dimension), is dead-lettered alone.
            try:
                delta = ClusterDelta.from_bytes(event.message.value or b"")
                authority.check_delta(delta)
                if delta.dim is not None and dim is not None and delta.dim != dim:
                    raise ValueError(
                        f"delta holds {delta.dim}-d sums, the other deltas of its batch {dim}-d"
                    )
            except ValueError as error:
                letters.append(self._dead_letter(event.message, error))
                continue
            dim = delta.dim if delta.dim is not None else dim
            deltas.append(delta)
        if not deltas:
            return None, letters
        authority.apply_delta(reduce(ClusterDelta.merge, deltas))
        # The one writer of the cluster model reports its lifecycle (interest-events).
        self.lifecycle_events += [
            lifecycle_event(change, authority.version) for change in authority.pop_events()
        ]
        self.metrics.deltas_applied.labels(kind="cluster").inc(len(deltas))
        return authority.snapshot().to_bytes(), letters

    def _authority(self) -> DecayingCentroids:
        """The authoritative model, (re)started from the newest snapshot when that is newer."""
        snapshot = self.latest_snapshot
        stale = snapshot is not None and (
            self.authority is None or snapshot.version > self.authority.version
        )
        if stale:
            assert snapshot is not None
            self.authority = DecayingCentroids.from_snapshot(snapshot, role="authority")
        elif self.authority is None:
            clusterer = self.engine.clusterer
            assert isinstance(clusterer, DecayingCentroids), "the model agent needs clustering on"
            self.authority = DecayingCentroids(**clusterer.params, role="authority")
        return self.authority

    def apply_cluster_snapshot(self, value: bytes | None) -> bool:
        """Adopt a newer published snapshot; returns whether it was adopted."""
        if value is None:
            return False
        snapshot = ClusterSnapshot.from_bytes(value)
        if self.latest_snapshot is not None and snapshot.version <= self.latest_snapshot.version:
            return False
        self.latest_snapshot = snapshot
        self.engine.adopt_cluster_snapshot(snapshot)
        self._observe_model()
        return True

    # ------------------------------------------------------------------ counts
    def apply_collab_delta(self, key: bytes | None, value: bytes | None) -> bool:
        """Add another worker's counts delta (own deltas are skipped); whether it was applied."""
        if key is not None and bytes(key) == self.incarnation.encode("utf-8"):
            return False
        self.engine.apply_counts_delta(CollaborativeDelta.from_bytes(value or b""))
        self.metrics.deltas_applied.labels(kind="collab").inc()
        return True

    # ------------------------------------------------------------------ state views
    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of this worker's state (the ``/state`` view)."""
        return {
            "worker_id": self.worker_id,
            "incarnation": self.incarnation,
            "ready": self.ready,
            "catalog_loaded": self.catalog_loaded.is_set(),
            "model_loaded": self.model_loaded.is_set(),
            "counts_loaded": self.counts_loaded.is_set(),
            **self.engine.summary(),
            "owns_model": self.authority is not None,
        }

    # ------------------------------------------------------------------ metrics
    def _observe_encoder(self) -> None:
        spent = self.engine.stats.encoder_s - self._encoder_s
        self._encoder_s = self.engine.stats.encoder_s
        if spent > 0:
            self.metrics.encoder_seconds.observe(spent)

    def _observe_model(self) -> None:
        self.metrics.model_version.set(self.model_version)
        self.metrics.clusters.set(len(self.engine.cluster_ids))


def _check_user_key(key: bytes | None, user_id: str) -> None:
    """Events are keyed by user id, so that one partition (one worker) owns each user."""
    if key is None:
        raise RecordError("key", f"missing; events must be keyed by their user_id {user_id!r}")
    if bytes(key) != user_id.encode("utf-8"):
        shown = bytes(key)[:60].decode("utf-8", "replace")
        raise RecordError(
            "key",
            f"{shown!r} differs from user_id {user_id!r}; events must be keyed by user_id so "
            "that one worker owns each user's window",
        )
