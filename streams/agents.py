"""The worker's agents: small loops that move records between Kafka and the engine.

Each agent is an ``async for`` over a Faust stream (or, for the topics every
worker must read in full, a :class:`~streams.broadcast.BroadcastReader`) that does the I/O and
hands the work to a plain method of :class:`~streams.runtime.WorkerRuntime` (or its catalogue):

* :func:`events_agent` — ``events`` → :meth:`WorkerRuntime.process_events`
  (one ``Engine.process`` per batch) → ``recommendations`` (through a
  :class:`~streams.publisher.BatchPublisher`: one Kafka record batch per partition) and
  ``dead-letters``;
* :func:`items_agent` — ``items`` →
  :meth:`~streams.worker_catalogue.WorkerCatalogue.encode_items` (one encoder call per
  batch) → ``item-vectors``;
* :func:`model_agent` — ``cluster-deltas`` (one partition, so one owner) →
  :meth:`WorkerRuntime.merge_cluster_deltas` → ``cluster-model``;
* :func:`ship_deltas` (a timer) — the clusterer's and the collaborative
  counts' deltas → ``cluster-deltas`` and ``collab-deltas``;
* broadcast readers of ``item-vectors``, ``cluster-model`` and
  ``collab-deltas`` → :meth:`~streams.worker_catalogue.WorkerCatalogue.apply_item_vector`,
  :meth:`WorkerRuntime.apply_cluster_snapshot`,
  :meth:`WorkerRuntime.apply_collab_delta`.

The engine never awaits Kafka; its work runs in the runtime's engine thread,
one call at a time. :mod:`streams.topology` wires these together.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from models.remote_encoder import EncoderUnavailableError
from streams.batching import take_events_adaptive
from streams.dead_letters import DeadLetterSink
from streams.metrics import WorkerMetrics
from streams.publisher import BatchPublisher
from streams.retry import retry_with_backoff
from streams.runtime import WorkerRuntime
from streams.settings import WorkerSettings

__all__ = [
    "CLUSTER_MODEL_KEY",
    "WORKER_HEADER",
    "events_agent",
    "items_agent",
    "model_agent",
    "retry_while_encoder_unavailable",
    "ship_deltas",
]

logger = logging.getLogger(__name__)

#: Header naming the worker that emitted a recommendation (outside the JSON contract).
WORKER_HEADER = "driftrec-worker"
#: Key of the one record of the compacted cluster-model topic.
CLUSTER_MODEL_KEY = b"model"


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

    async def attempt() -> Any:
        outcome = process(batch)
        return await outcome if inspect.isawaitable(outcome) else outcome

    def unavailable(error: Exception, delay_s: float) -> None:
        if metrics is not None:
            metrics.encoder_available.set(0)
        logger.warning(
            "encoder unavailable; trying the batch of %d records again in %.1f s: %s",
            len(batch),
            delay_s,
            error,
        )

    outcome = await retry_with_backoff(
        attempt,
        retry_on=(EncoderUnavailableError,),
        first_delay_s=max(settings.encoder_backoff_s, 0.1),
        max_delay_s=settings.encoder_retry_max_s,
        on_retry=unavailable,
    )
    if metrics is not None:
        metrics.encoder_available.set(1)
    return outcome


def _publish_failed(n_records: int, error: Exception, delay_s: float) -> None:
    logger.error(
        "could not publish %d recommendations; retrying in %.1f s",
        n_records,
        delay_s,
        exc_info=error,
    )


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
    With ``hold_acks`` (``DRIFTREC_ACK_AFTER_DELTAS``, experimental; needs
    ``backlog``) a published batch is not acknowledged yet: :func:`ship_deltas` does it once
    the deltas the batch caused are on the broker.
    """
    settings = runtime.settings
    topic = settings.topic("recommendations")
    interest_topic = settings.topic("interest_events")
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
        # the batch is acknowledged only once its recommendations are out
        await retry_with_backoff(
            functools.partial(recommendations.publish, topic, records, headers=headers),
            first_delay_s=0.5,
            max_delay_s=30.0,
            on_retry=functools.partial(_publish_failed, len(records)),
        )
        if outcome.interest_events:
            moves = [(e.key(), e.to_json_bytes()) for e in outcome.interest_events]
            await retry_with_backoff(
                functools.partial(recommendations.publish, interest_topic, moves, headers=headers),
                first_delay_s=0.5,
                max_delay_s=30.0,
                on_retry=functools.partial(_publish_failed, len(moves)),
            )
        await dead_letters.send(outcome.dead_letters)
        runtime.console.lag = backlog() if backlog is not None else 0
        runtime.observe_sent(outcome)
        if hold_acks and not runtime.stopping:
            runtime.hold_acks(stream, batch)
        elif hold_acks:  # stopping: the shutdown hook ships the last deltas right after
            for event in batch:
                await stream.ack(event)


async def items_agent(
    stream: Any, runtime: WorkerRuntime, item_vectors: Any, dead_letters: DeadLetterSink
) -> None:
    """``items`` → encoder (once per text) → ``item-vectors`` (compacted)."""
    settings = runtime.settings
    async for batch in stream.take_events(settings.item_batch_max, within=0.05):
        outcome = await retry_while_encoder_unavailable(
            lambda records: runtime.run_in_engine_thread(
                lambda: runtime.catalogue.encode_items(records)
            ),
            batch,
            settings,
            runtime.metrics,
        )
        for key, value in outcome.vector_records:
            await item_vectors.send(key=key, value=value)
        await dead_letters.send(outcome.dead_letters)


async def model_agent(
    stream: Any,
    runtime: WorkerRuntime,
    cluster_model: Any,
    dead_letters: DeadLetterSink,
    interest_events: Any,
) -> None:
    """``cluster-deltas`` (owner of its one partition) → authoritative model → ``cluster-model``,
    and the clusters' births, merges and retirements → ``interest-events``."""
    async for batch in stream.take_events(1000, within=0.2):
        await runtime.model_loaded.wait()
        snapshot, letters = runtime.merge_cluster_deltas(batch)
        if snapshot is not None:
            await cluster_model.send(key=CLUSTER_MODEL_KEY, value=snapshot)
        while runtime.lifecycle_events:
            change = runtime.lifecycle_events.pop(0)
            await interest_events.send(key=change.key(), value=change.to_json_bytes())
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
    async with runtime.shipping:
        return await _ship(runtime, cluster_deltas, collab_deltas)


async def _ship(runtime: WorkerRuntime, cluster_deltas: Any, collab_deltas: Any) -> bool:
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
