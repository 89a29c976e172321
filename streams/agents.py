"""The worker's agents: small loops that move records between Kafka and the engine.

Each agent is an ``async for`` over a Faust stream (or, for the topics every
worker must read in full, a :class:`BroadcastReader`) that does the I/O and
hands the work to a plain method of :class:`WorkerRuntime`:

* :func:`events_agent` — ``events`` → :meth:`WorkerRuntime.process_events`
  (one ``Engine.process`` per batch) → ``recommendations`` (through a
  :class:`BatchPublisher`: one Kafka record batch per partition) and
  ``dead-letters``;
* :func:`items_agent` — ``items`` → :meth:`WorkerRuntime.encode_items` (one
  encoder call per batch) → ``item-vectors``;
* :func:`model_agent` — ``cluster-deltas`` (one partition, so one owner) →
  :meth:`WorkerRuntime.merge_cluster_deltas` → ``cluster-model``;
* :func:`ship_deltas` (a timer) — the clusterer's and the collaborative
  counts' deltas → ``cluster-deltas`` and ``collab-deltas``;
* broadcast readers of ``item-vectors``, ``cluster-model`` and
  ``collab-deltas`` → :meth:`WorkerRuntime.apply_item_vector`,
  :meth:`WorkerRuntime.apply_cluster_snapshot`,
  :meth:`WorkerRuntime.apply_collab_delta`.

The engine never awaits Kafka and all of this runs on the worker's event loop,
so engine calls never overlap. :mod:`streams.topology` wires these together.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, TypeVar

import numpy as np
from aiokafka.partitioner import murmur2

from models.clustering.decaying_centroids import (
    ClusterDelta,
    ClusterSnapshot,
    DecayingCentroids,
)
from models.collaborative import CollaborativeDelta
from models.contracts import BehaviourEvent, CatalogItem, EventParser, Recommendation, RecordError
from models.engine import Engine
from models.remote_encoder import EncoderUnavailableError
from streams.batching import take_events_adaptive
from streams.dead_letters import DeadLetter, DeadLetterSink
from streams.metrics import WorkerMetrics
from streams.settings import WorkerSettings
from streams.table_store import FaustTableStore

__all__ = [
    "BatchPublisher",
    "BroadcastReader",
    "EventsOutcome",
    "ItemsOutcome",
    "WorkerRuntime",
    "decode_item_vector",
    "encode_item_vector",
    "events_agent",
    "items_agent",
    "model_agent",
    "retry_while_encoder_unavailable",
    "ship_deltas",
    "topic_partitions",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Header naming the worker that emitted a recommendation (outside the JSON contract).
WORKER_HEADER = "driftrec-worker"
#: Key of the one record of the compacted cluster-model topic.
CLUSTER_MODEL_KEY = b"model"


# --------------------------------------------------------------------------- item vectors


def encode_item_vector(item: CatalogItem, vector: np.ndarray, *, encoder: str) -> bytes:
    """The ``item-vectors`` value of an item: its record, its vector (base64 float32) and encoder.

    >>> item = CatalogItem(item_id="m1", title="Heat (1995)", tags=["Crime"])
    >>> value = encode_item_vector(item, np.array([0.6, 0.8]), encoder="minilm")
    >>> decoded, vector, encoder = decode_item_vector(value, EventParser({"view": 1.0}))
    >>> decoded == item, vector.tolist(), encoder
    (True, [0.6000000238418579, 0.800000011920929], 'minilm')
    """
    little = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    record = {
        "item": json.loads(item.to_json_bytes()),
        "dim": int(little.shape[0]),
        "encoder": encoder,
        "vector": base64.b64encode(little.tobytes()).decode("ascii"),
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_item_vector(
    value: bytes, parser: EventParser, *, key: bytes | None = None
) -> tuple[CatalogItem, np.ndarray, str]:
    """``(item, vector, encoder)`` of an ``item-vectors`` value; ``RecordError`` if malformed."""
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, ValueError) as error:
        raise RecordError("record", f"invalid item-vectors JSON: {error}") from None
    if not isinstance(record, dict):
        raise RecordError("record", "expected an item-vectors JSON object")
    if not isinstance(record.get("item"), dict):
        raise RecordError("item", "missing (expected the catalogue record as an object)")
    item = parser.parse_item(record["item"], key=key)
    if item is None:  # pragma: no cover - parse_item returns None only for a null record
        raise RecordError("item", "expected the catalogue record, got null")
    encoder, dim, encoded = record.get("encoder"), record.get("dim"), record.get("vector")
    if not isinstance(encoder, str) or not isinstance(dim, int) or not isinstance(encoded, str):
        raise RecordError("vector", "expected string 'encoder', integer 'dim', base64 'vector'")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise RecordError("vector", "not valid base64") from None
    if len(raw) != 4 * dim:
        raise RecordError("vector", f"{len(raw)} bytes, expected {dim} float32 values")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise RecordError("vector", "holds NaN or infinite values")
    return item, vector, encoder


# --------------------------------------------------------------------------- outcomes


@dataclass
class EventsOutcome:
    """What one events batch produced: recommendations and the dead letters."""

    recommendations: list[Recommendation] = field(default_factory=list)
    #: Kafka timestamp (s) of the event each recommendation answers (end-to-end latency).
    source_timestamps: list[float | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass
class ItemsOutcome:
    """What one items batch produced: ``item-vectors`` records (None deletes) and dead letters."""

    vector_records: list[tuple[bytes, bytes | None]] = field(default_factory=list)
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
    model_version
        Version of the last cluster snapshot adopted (0 before the first one);
        every recommendation is stamped with it.
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
        self.parser = EventParser.from_settings(settings)
        self.window_store = window_store
        self.metrics = metrics
        self.clock = clock
        self.worker_id = settings.resolved_worker_id
        self.incarnation = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"
        self.model_version = 0
        self.latest_snapshot: ClusterSnapshot | None = None
        self.authority: DecayingCentroids | None = None
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
        self._offsets_seen: dict[int, tuple[int, int]] = {}
        #: Held by whatever uses the engine from the event loop, so engine calls never overlap.
        self.engine_lock = asyncio.Lock()
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="driftrec-engine")
        self._encoder_s = engine.stats.encoder_s

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
        """Re-raise an unavailable encoder when the policy is to retry the whole batch later."""
        if isinstance(error, EncoderUnavailableError) and self.settings.encoder_failure == "retry":
            raise error

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
        """``work()`` — anything that uses the engine — in the engine thread, under the lock.

        The engine is synchronous (its encoder calls may take seconds: a model
        on a CPU, a remote service timing out and backing off); run on the
        event loop they would stop Faust's heartbeats and web views with them.
        """
        async with self.engine_lock:
            return await self._in_engine_thread(work)

    async def _in_engine_thread(self, work: Callable[..., _T], *args: Any) -> _T:
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
        """:meth:`process_events` with the engine's work in the engine thread.

        Parsing, the table reads (on entering :meth:`FaustTableStore.owners`)
        and the table writes (on leaving it) stay on the event loop; the
        engine — encoder calls included, local or remote, with their timeouts
        and backoff — runs in :meth:`run_in_engine_thread`, so a slow or hung
        encoder never stops heartbeats, ``/healthz`` or rebalances.
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
        now = self.clock()
        self.metrics.recommendations_out.inc(len(outcome.recommendations))
        for timestamp in outcome.source_timestamps:
            if timestamp is not None:
                self.metrics.end_to_end_seconds.observe(max(0.0, now - timestamp))

    # ------------------------------------------------------------------ items
    def encode_items(self, batch: Sequence[Any]) -> ItemsOutcome:
        """Parse catalogue records, encode the new texts in one call, return item-vector records."""
        outcome = ItemsOutcome()
        latest: dict[str, tuple[CatalogItem | None, Any]] = {}
        for event in batch:
            message = event.message
            try:
                item = self.parser.parse_item(message.value, key=message.key)
            except RecordError as error:
                outcome.dead_letters.append(self._dead_letter(message, error))
                continue
            item_id = item.item_id if item is not None else bytes(message.key).decode("utf-8")
            latest.pop(item_id, None)  # keep the last record of an item, in arrival order
            latest[item_id] = (item, message)
        upserts = [(item, message) for item, message in latest.values() if item is not None]
        encoder = self.engine.encoder
        vectors: list[np.ndarray | None] = []
        if upserts:
            texts = [item.render_text() for item, _ in upserts]
            started = time.perf_counter()
            try:
                vectors = list(encoder.encode(texts))
            except Exception as batch_error:
                self._raise_if_retrying(batch_error)
                logger.exception("encoder failed on %d items; retrying one by one", len(texts))
                vectors = []
                for text, (_, message) in zip(texts, upserts, strict=True):
                    try:
                        vectors.append(encoder.encode([text])[0])
                    except Exception as error:
                        self._raise_if_retrying(error)
                        outcome.dead_letters.append(self._dead_letter(message, error))
                        vectors.append(None)
            self.metrics.encoder_seconds.observe(time.perf_counter() - started)
        vector_of = {
            item.item_id: vector for (item, _), vector in zip(upserts, vectors, strict=True)
        }
        for item_id, (item, _) in latest.items():
            if item is None:
                outcome.vector_records.append((item_id.encode("utf-8"), None))
            elif (vector := vector_of.get(item_id)) is not None:
                value = encode_item_vector(item, vector, encoder=encoder.model_version)
                outcome.vector_records.append((item_id.encode("utf-8"), value))
        self.metrics.items_encoded.inc(len([v for v in vectors if v is not None]))
        return outcome

    def apply_item_vector(self, key: bytes | None, value: bytes | None) -> None:
        """Adopt one ``item-vectors`` record into the catalogue (a null value deletes)."""
        catalog = self.engine.catalog
        if value is None:
            if key is None:
                raise RecordError("key", "a null item-vectors value needs the item's key")
            self.engine.delete_item(bytes(key).decode("utf-8"))
        else:
            item, vector, encoder = decode_item_vector(value, self.parser, key=key)
            if encoder != self.engine.encoder.model_version or vector.shape[0] != catalog.dim:
                # Another encoder made this vector: encode the text with ours instead.
                self.engine.upsert_items([item])
            else:
                index = catalog.upsert(item)
                catalog.set_vectors([index], vector[None, :])
        self.metrics.item_vectors_applied.inc()
        self.metrics.catalog_items.set(int(catalog.recommendable.sum()))

    # ------------------------------------------------------------------ cluster model
    def pop_deltas(self) -> tuple[bytes | None, bytes | None]:
        """This worker's clusterer and counts deltas since the last call (None when empty)."""
        cluster_bytes = collab_bytes = None
        clusterer = self.engine.clusterer
        if clusterer is not None:
            delta = clusterer.pop_delta()
            if not delta.is_empty:
                cluster_bytes = delta.to_bytes()
        counts_delta = self.engine.counts.pop_delta(self.engine.catalog.id_of)
        if not counts_delta.is_empty():
            collab_bytes = counts_delta.to_bytes()
        return cluster_bytes, collab_bytes

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
        authority.pop_events()
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
            assert clusterer is not None, "the model agent runs only with clustering on"
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
        clusterer = self.engine.clusterer
        if clusterer is not None:
            before = set(clusterer.ids.tolist())
            clusterer.load_snapshot(snapshot)
            for gone in before - set(clusterer.ids.tolist()):
                self.engine.counts.forget_cluster(gone)
        self.model_version = snapshot.version
        self.engine.model_version = snapshot.version
        self._observe_model()
        return True

    # ------------------------------------------------------------------ counts
    def apply_collab_delta(self, key: bytes | None, value: bytes | None) -> bool:
        """Add another worker's counts delta (own deltas are skipped); whether it was applied."""
        if key is not None and bytes(key) == self.incarnation.encode("utf-8"):
            return False
        delta = CollaborativeDelta.from_bytes(value or b"")
        reference = self.engine.catalog.reference
        self.engine.counts.apply_delta(delta, lambda item_id: reference(item_id))
        self.metrics.deltas_applied.labels(kind="collab").inc()
        return True

    # ------------------------------------------------------------------ state views
    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of this worker's state (the ``/state`` view)."""
        clusterer = self.engine.clusterer
        catalog = self.engine.catalog
        return {
            "worker_id": self.worker_id,
            "incarnation": self.incarnation,
            "ready": self.ready,
            "catalog_loaded": self.catalog_loaded.is_set(),
            "model_loaded": self.model_loaded.is_set(),
            "counts_loaded": self.counts_loaded.is_set(),
            "model_version": self.model_version,
            "clusters": [] if clusterer is None else clusterer.ids.tolist(),
            "items": len(catalog),
            "recommendable_items": int(catalog.recommendable.sum()),
            "events_processed": self.engine.stats.events,
            "owns_model": self.authority is not None,
        }

    def decayed_counts(self, at: float) -> dict[str, Any]:
        """Popularity, trending and transitions by item id, decayed to event time ``at``."""
        counts, catalog = self.engine.counts, self.engine.catalog
        n = len(catalog)
        ids = [catalog.id_of(i) for i in range(n)]
        scale = counts.decay.to_decayed(1.0, at)
        trending_scale = counts.trending_decay.to_decayed(1.0, at)
        popularity = counts.popularity_scores(n) * scale
        trending = counts.trending_scores(n) * trending_scale
        transitions: dict[str, dict[str, float]] = {}
        for source in range(n):
            successors, values = counts.transitions.row_arrays(source)
            if len(successors):
                transitions[ids[source]] = {
                    ids[int(s)]: float(v) * scale
                    for s, v in zip(successors, values, strict=True)
                    if int(s) < n
                }
        return {
            "at": at,
            "popularity": {ids[i]: float(v) for i, v in enumerate(popularity) if v},
            "trending": {ids[i]: float(v) for i, v in enumerate(trending) if v},
            "transitions": transitions,
        }

    def item_info(self, item_id: str) -> dict[str, Any] | None:
        """What this worker's catalogue holds for an item (the ``/state/item`` view)."""
        catalog = self.engine.catalog
        index = catalog.index_of(item_id)
        if index is None:
            return None
        return {
            "item_id": item_id,
            "text": catalog.text_of(index),
            "provisional": catalog.is_provisional(item_id),
            "recommendable": bool(catalog.recommendable[index]),
        }

    # ------------------------------------------------------------------ metrics
    def _observe_encoder(self) -> None:
        spent = self.engine.stats.encoder_s - self._encoder_s
        self._encoder_s = self.engine.stats.encoder_s
        if spent > 0:
            self.metrics.encoder_seconds.observe(spent)

    def _observe_model(self) -> None:
        clusterer = self.engine.clusterer
        self.metrics.model_version.set(self.model_version)
        self.metrics.clusters.set(0 if clusterer is None else clusterer.n_clusters)


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


# --------------------------------------------------------------------------- agents


async def retry_while_encoder_unavailable(
    process: Callable[[Sequence[Any]], Any],  # returns the outcome, or an awaitable of it
    batch: Sequence[Any],
    settings: WorkerSettings,
    metrics: WorkerMetrics | None = None,
) -> Any:
    """``process(batch)``, tried again with backoff for as long as the encoder service is down.

    Only :class:`EncoderUnavailableError` is retried (the engine calls the
    encoder before it changes a window, a count or a cluster, in either interest
    mode, so a retry learns nothing twice). The agent stays on this batch
    meanwhile, so neither it nor a later batch is acknowledged and their
    offsets are not committed while it waits
    (Faust acknowledges a ``take_events`` batch when the agent asks for the
    next one). The waits are asynchronous: heartbeats and web views go on, and
    ``metrics.encoder_available`` reads 0 until the service answers again.
    """
    delay_s = max(settings.encoder_backoff_s, 0.1)
    while True:
        try:
            outcome = process(batch)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except EncoderUnavailableError as error:
            if metrics is not None:
                metrics.encoder_available.set(0)
            logger.warning(
                "encoder unavailable; trying the batch of %d records again in %.1f s: %s",
                len(batch),
                delay_s,
                error,
            )
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, settings.encoder_retry_max_s)
        else:
            if metrics is not None:
                metrics.encoder_available.set(1)
            return outcome


async def events_agent(
    stream: Any,
    runtime: WorkerRuntime,
    recommendations: BatchPublisher,
    dead_letters: DeadLetterSink,
    backlog: Callable[[], int] | None = None,
    generation: Callable[[], int] = lambda: 0,
    hold_acks: bool = False,
) -> None:
    """``events`` → engine → ``recommendations`` (keyed by user) and ``dead-letters``.

    The batch's events are acknowledged (and their offsets later committed)
    only once the broker has taken its recommendations: at-least-once.
    ``backlog`` (events queued behind those processed) lets a batch wait up to
    ``batch_backlog_within_s`` to fill while a backlog is queued, and only
    ``batch_within_s`` when the worker is caught up. ``generation`` (the
    consumer group generation) scopes :meth:`WorkerRuntime.check_offsets`.
    With ``hold_acks`` (the worker, which ships deltas; needs ``backlog``) a
    published batch is not acknowledged yet: :func:`ship_deltas` does it once
    the deltas the batch caused are on the broker.
    """
    settings = runtime.settings
    topic = settings.topic("recommendations")
    headers = [(WORKER_HEADER, runtime.worker_id.encode("utf-8"))]
    if backlog is None:
        batches = stream.take_events(settings.batch_max, within=settings.batch_within_s)
    else:

        def within() -> float:
            if backlog() >= settings.batch_max:
                return settings.batch_backlog_within_s
            return settings.batch_within_s

        batches = take_events_adaptive(stream, settings.batch_max, within, auto_ack=not hold_acks)
    async for batch in batches:
        runtime.check_offsets(batch, generation())
        await runtime.wait_ready()
        outcome = await retry_while_encoder_unavailable(
            runtime.process_events_off_loop, batch, settings, runtime.metrics
        )
        records = [(r.user_id.encode("utf-8"), r.to_json_bytes()) for r in outcome.recommendations]
        delay_s = 0.5
        while True:  # the batch is acknowledged only once its recommendations are out
            try:
                await recommendations.publish(topic, records, headers=headers)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "could not publish %d recommendations; retrying in %.1f s",
                    len(records),
                    delay_s,
                )
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, 30.0)
        await dead_letters.send(outcome.dead_letters)
        runtime.observe_sent(outcome)
        if hold_acks:
            runtime.hold_acks(stream, batch)


async def items_agent(
    stream: Any, runtime: WorkerRuntime, item_vectors: Any, dead_letters: DeadLetterSink
) -> None:
    """``items`` → encoder (once per text) → ``item-vectors`` (compacted)."""
    settings = runtime.settings
    async for batch in stream.take_events(settings.item_batch_max, within=0.05):
        outcome = await retry_while_encoder_unavailable(
            lambda records: runtime.run_in_engine_thread(lambda: runtime.encode_items(records)),
            batch,
            settings,
            runtime.metrics,
        )
        for key, value in outcome.vector_records:
            await item_vectors.send(key=key, value=value)
        await dead_letters.send(outcome.dead_letters)


async def model_agent(
    stream: Any, runtime: WorkerRuntime, cluster_model: Any, dead_letters: DeadLetterSink
) -> None:
    """``cluster-deltas`` (owner of its one partition) → authoritative model → ``cluster-model``."""
    async for batch in stream.take_events(1000, within=0.2):
        await runtime.model_loaded.wait()
        snapshot, letters = runtime.merge_cluster_deltas(batch)
        if snapshot is not None:
            await cluster_model.send(key=CLUSTER_MODEL_KEY, value=snapshot)
        await dead_letters.send(letters)


async def ship_deltas(runtime: WorkerRuntime, cluster_deltas: Any, collab_deltas: Any) -> bool:
    """Send this worker's clusterer and counts deltas (a timer, every ``delta_interval_s``).

    Deltas go out oldest first and each is forgotten only once the broker
    acknowledged it; when a send fails, it and the deltas after it stay in
    the runtime's outbox for the next call. The events the events agent held
    (:meth:`WorkerRuntime.hold_acks`) are acknowledged once every delta staged
    with them is on the broker — so a worker killed at any moment has either
    shipped an event's deltas or will process the event again. Returns
    whether the outbox is empty.
    """
    key = runtime.incarnation.encode("utf-8")
    topics = {"cluster": cluster_deltas, "collab": collab_deltas}
    async with runtime.engine_lock:  # the engine thread is idle while the lock is held
        # Taken together: the staged deltas hold everything the held events caused.
        staged = runtime.stage_deltas()
        covered = runtime.take_unacked()
    for kind, value in staged:
        try:
            delivery = await topics[kind].send(key=key, value=value)
            await delivery  # the broker's acknowledgement
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning(
                "could not ship a %s delta (%d bytes; %d deltas wait): %r",
                kind,
                len(value),
                len(runtime.outbox),
                error,
            )
            runtime.unacked[:0] = covered  # still not safe: acknowledged after a later try
            return False
        runtime.shipped(kind, value)
    for stream, event in covered:  # their recommendations and their deltas are out
        await stream.ack(event)
    return True


# --------------------------------------------------------------------------- publishing


class BatchPublisher:
    """Publishes a batch of keyed records with one Kafka record batch per partition.

    The hot path of a worker sends one recommendation per event; going through
    Faust's per-message send costs several times the engine's own work per
    event. This publisher owns a plain aiokafka producer, places each record by
    Kafka's default partitioner (``murmur2(key) mod partitions``, as Java
    clients do, so recommendations land where a keyed producer would put them),
    appends them to one batch per partition and waits until the broker has them.

    Parameters
    ----------
    settings
        Bootstrap servers, security, the largest request.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"driftrec-{self.settings.resolved_worker_id}-publisher",
            acks="all",
            linger_ms=0,
            max_batch_size=1 << 20,
            max_request_size=self.settings.max_message_bytes,
            **self.settings.aiokafka_security(),
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()  # flushes what is pending

    async def publish(
        self,
        topic: str,
        records: Sequence[tuple[bytes, bytes | None]],
        *,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Send ``(key, value)`` records and wait until the broker acknowledged them all."""
        if not records:
            return
        await self.start()
        producer = self._producer
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        header_list = list(headers)
        batches: dict[int, Any] = {}
        deliveries = []
        for key, value in records:
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=header_list) is None:
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=header_list) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes exceeds a batch")
        for partition, batch in batches.items():
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*deliveries)


# --------------------------------------------------------------------------- broadcast


async def topic_partitions(consumer: Any, topic: str) -> set[int]:
    """Partition ids of ``topic`` from fresh cluster metadata (empty if it does not exist).

    ``AIOKafkaConsumer.partitions_for_topic`` only knows subscribed topics, so
    this asks the consumer's client for the metadata of all topics.
    """
    cluster = await consumer._client.fetch_all_metadata()  # aiokafka 0.14
    return set(cluster.partitions_for_topic(topic) or ())


class BroadcastReader:
    """Reads every partition of a topic from its beginning, outside any consumer group.

    Faust agents share their topics' partitions among the workers of a group;
    the item vectors, the cluster model and the counts deltas must instead
    reach *every* worker in full. A reader assigns itself all partitions,
    starts at the earliest offset, hands each record to ``handle(key, value)``
    and sets :attr:`caught_up` once it has read up to the end offsets it found
    at start. Records ``handle`` fails on are passed, with their exceptions,
    to ``on_errors`` after each fetch and skipped. If the reader's consumer
    fails it starts again from the next unread offset (never re-applying a
    record: counts deltas are not idempotent).

    Parameters
    ----------
    settings
        Bootstrap servers and security.
    topic
        The topic to read.
    handle
        Called with each record's key and value, in offset order per partition.
    on_errors
        Awaited with ``[(record, exception), …]`` when ``handle`` raised.
    start_after
        An event to wait for before reading (e.g. the catalogue before the counts).
    caught_up
        The event to set once caught up (a new one by default).
    runner
        Runs the handling of each fetch, given as a function without arguments
        (the worker passes :meth:`WorkerRuntime.run_in_engine_thread`: the
        handlers change the engine); by default it runs inline.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        topic: str,
        handle: Callable[[bytes | None, bytes | None], Any],
        *,
        on_errors: Callable[[list[tuple[Any, BaseException]]], Awaitable[None]] | None = None,
        start_after: asyncio.Event | None = None,
        caught_up: asyncio.Event | None = None,
        runner: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.topic = topic
        self.handle = handle
        self.on_errors = on_errors
        self.start_after = start_after
        self.caught_up = caught_up if caught_up is not None else asyncio.Event()
        self.records_read = 0
        #: Next offset to read, per partition.
        self.positions: dict[int, int] = {}

    async def run_forever(self, retry_s: float = 2.0) -> None:
        """:meth:`run`, restarted after ``retry_s`` whenever it fails."""
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reader of %s failed; restarting in %.0f s", self.topic, retry_s)
                await asyncio.sleep(retry_s)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        if self.start_after is not None:
            await self.start_after.wait()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"driftrec-{self.settings.resolved_worker_id}-{self.topic}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=self.settings.max_message_bytes,
            **self.settings.aiokafka_security(),
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self.topic)
            while not partitions:
                logger.info("waiting for topic %s to exist", self.topic)
                await asyncio.sleep(0.5)
                partitions = await topic_partitions(consumer, self.topic)
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            for tp in assigned:
                if tp.partition in self.positions:
                    consumer.seek(tp, self.positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            end_offsets = await consumer.end_offsets(assigned)
            await self._check_caught_up(consumer, end_offsets)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                failures: list[tuple[Any, BaseException]] = []
                if batches:

                    def handle_all(fetched: dict = batches, failed: list = failures) -> None:
                        for records in fetched.values():
                            for record in records:
                                self._handle(record, failed)

                    if self.runner is None:
                        handle_all()
                    else:
                        await self.runner(handle_all)
                if failures:
                    await self._report(failures)
                if not self.caught_up.is_set():
                    await self._check_caught_up(consumer, end_offsets)
        finally:
            await consumer.stop()

    def _handle(self, record: Any, failures: list[tuple[Any, BaseException]]) -> None:
        self.records_read += 1
        self.positions[record.partition] = record.offset + 1
        try:
            self.handle(record.key, record.value)
        except Exception as error:
            failures.append((record, error))

    async def _report(self, failures: list[tuple[Any, BaseException]]) -> None:
        if self.on_errors is not None:
            await self.on_errors(failures)
            return
        for record, error in failures:
            logger.error(
                "could not apply %s[%d]@%d: %r",
                record.topic,
                record.partition,
                record.offset,
                error,
            )

    async def _check_caught_up(self, consumer: Any, end_offsets: dict) -> None:
        for tp, end in end_offsets.items():
            if await consumer.position(tp) < end:
                return
        if not self.caught_up.is_set():
            logger.info("%s: caught up after %d records", self.topic, self.records_read)
            self.caught_up.set()
