"""Micro-batches from a Faust stream whose wait adapts to the backlog.

Faust's ``Stream.take_events(max, within)`` yields a batch when ``max``
events are buffered or ``within`` seconds have passed, with one fixed
``within``. A worker wants two: short when it is caught up (each event waits
at most ``within`` before it is processed, so latency stays low), longer when
a backlog is queued (events are late anyway, and a fuller batch spreads the
engine's and the publisher's per-batch costs over more events). This is
Faust 0.15's ``take_events`` with the timeout asked of ``within()`` before
each batch; a batch's events are acknowledged when the agent asks for the
next batch (not when it was cancelled or failed on it) unless the caller takes
acknowledgement over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from mode.utils.aiter import aiter
from mode.utils.futures import notify

__all__ = ["take_events_adaptive"]


async def take_events_adaptive(
    stream: Any, max_: int, within: Callable[[], float], *, auto_ack: bool = True
) -> AsyncIterator[list[Any]]:
    """Batches of at most ``max_`` events of ``stream``, each awaited at most ``within()`` s.

    With ``auto_ack`` a batch is acknowledged when the next one is asked for —
    never when the consumer of the batches was cancelled or failed on it (Faust's
    ``take_events`` acknowledges then too, which loses a stopping worker's batch
    in flight). Without, acknowledging is the caller's (``await stream.ack(event)``
    per event), so a batch is acknowledged only once everything it caused is safe.
    """
    buffer: list[Any] = []
    events: list[Any] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_consuming: asyncio.Future[Any] | None = None
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming
        try:
            if buffer_consuming is not None:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            buffer.append(value)
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            events.append(event)
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # pragma: no cover - as Faust does: crash the stream
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False  # the batch is acknowledged below, once it has been handled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(buffer_full, timeout=within())
            if not buffer:
                continue
            buffer_consuming = stream.loop.create_future()
            handled = False
            try:
                yield list(events)
                # Resumed: the consumer asked for the next batch, so it is done with this one.
                handled = True
            finally:
                buffer.clear()
                # Only a handled batch is acknowledged. When the consumer was cancelled or
                # failed inside its loop (a worker stopping mid-batch, its recommendations
                # not yet published), this generator is closed at the yield instead: the
                # batch stays unacknowledged and its offsets uncommitted, so whoever owns the
                # partition next processes it again (Faust's own take_events acknowledged it
                # here in every case, which lost a stopping worker's batch in flight).
                if auto_ack and handled:
                    for event in events:
                        await stream.ack(event)
                events.clear()
                notify(buffer_consuming)
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        # enable_acks stays False. Faust's take_events restores it here, but the stream goes
        # on pulling fetched events after this generator is closed (a stopping worker closes
        # its agents before its consumer): with acks back on and no processor, each such
        # event was acknowledged unprocessed and its offset committed on the way out — lost
        # events on every graceful failover under load (the scale-out test). Unacknowledged,
        # they are processed by the partition's next owner.
        stream._processors.remove(add_to_buffer)
