"""Two fixes to faust-streaming's consumer that otherwise lose events on a restart or rebalance.

Both defects commit offsets of events the agents never saw: the events are
lost although no worker failed to process them. Both were found with the
repository's own tests under load; :func:`apply` installs both once, and
refuses (logging an error) on a Faust version they were not checked against,
so an upgrade cannot silently drop them — the fault suite must pass again first.

**1. Recovery resumes before it seeks** (faust-streaming 0.15.3; upstream
reports of the same race: faust-streaming issues #596 and #216). When a
worker has table state to restore from a changelog — always after it lost its
volume, after a rebalance moved partitions to it, and whenever it is behind —
Faust starts its fetcher during recovery. When recovery ends,
``Recovery.on_recovery_completed`` *resumes* the stream partitions (here:
``events``) and only then awaits ``consumer.perform_seek()`` to put them at
their committed offsets. The fetcher is running and the flow is active, so it
fetches and delivers records of those partitions while the seek is in
flight; the seek then resets the consumer's read offsets under it. The
consumer's gap detection sees the jump, records the undelivered range as a
"gap" (meant for compacted topics and transaction markers) and later commits
over it, and the re-fetched records are dropped as already read. Found with
the fault suite (``tests/faults``): a worker killed with SIGKILL and restarted
on an empty data directory under a steady 200 events/s lost 1,232–1,767 of
6,000 events. The fix is the order Faust itself uses when there is nothing to
recover (``Recovery._resume_streams`` after upstream PR #217): seek the stream
partitions to their committed offsets *while they are still paused*, then
resume them.

**2. Fetched records of a paused partition are dropped** (0.15.3).
``Consumer.getmany`` takes a batch of records from aiokafka — whose position
has then moved past them — and yields only those of partitions in the live
set of active partitions; the rest are dropped without a seek back. That set
is mutated in place by every pause, resume and assignment while the fetch is
in flight in the consumer thread, so a rebalance (a worker leaving, the
survivor taking its partitions) regularly drops records: of the survivor's
own partitions (the next fetch starts after them, the commit moves past
them) and of the partitions it takes over (the first fetch after the seek to
the committed offset is dropped; the next starts later and the gap is
committed over). Found with the scale-out test's failover
(``tests/integration/test_worker_scale_out.py``) beside two CPU hogs: 1–59
events lost in 9 of 25 runs. The fix keeps Faust's ``getmany`` and, for every
partition whose records it did not deliver (inactive partition, flow stopped
or generation changed mid-batch), seeks the consumer back to the first
undelivered offset, so the records are fetched again once the partition is
active — and stops delivering that partition's later records of the batch,
which would otherwise overtake them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["CHECKED_FAUST_VERSION", "applied", "apply", "upstream_getmany"]

logger = logging.getLogger(__name__)

#: The faust-streaming release this fix was written for and verified against.
CHECKED_FAUST_VERSION = "0.15.3"

_applied = False
_upstream: Any = None
_upstream_getmany: Any = None


def upstream_on_recovery_completed() -> Any:
    """Faust's own ``Recovery.on_recovery_completed``, whether or not the fix is in place."""
    from faust.tables.recovery import Recovery

    return _upstream if _upstream is not None else Recovery.on_recovery_completed


def upstream_getmany() -> Any:
    """Faust's own ``Consumer.getmany``, whether or not the fix is in place."""
    from faust.transport.consumer import Consumer

    return _upstream_getmany if _upstream_getmany is not None else Consumer.getmany


def applied() -> bool:
    """Whether :func:`apply` installed the fixes in this process."""
    return _applied


def apply() -> bool:
    """Install both fixes into faust-streaming (idempotent); whether they are in place."""
    global _applied, _upstream, _upstream_getmany
    if _applied:
        return True
    import faust
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer

    if faust.__version__ != CHECKED_FAUST_VERSION:
        logger.error(
            "faust-streaming %s is not the version the consumer fixes in streams/faust_fixes.py "
            "was checked against (%s); not applying it. Run the fault suite (make chaos) "
            "before trusting this version with a lost volume or a rebalance.",
            faust.__version__,
            CHECKED_FAUST_VERSION,
        )
        return False
    _upstream = Recovery.on_recovery_completed
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]  # the patch itself
    _upstream_getmany = Consumer.getmany
    Consumer.getmany = _getmany  # type: ignore[method-assign]  # the patch itself
    _applied = True
    return True


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` of faust-streaming 0.15.3, seeking before resuming."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table],
                self.standbys_for_table[table],
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    stream_tps = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    if assignment:
        # The fix: seek while the stream partitions are paused, so the running
        # fetcher cannot deliver records from before the seek.
        self.log.info("Seek stream partitions to committed offsets (before resuming them).")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions(stream_tps)
    self.completed.set()
    self.log.dev("Resume stream partitions")
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    """``Consumer.getmany`` of faust-streaming 0.15.3, seeking back to what it did not deliver."""
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return  # stopping: nothing is acknowledged past what the agents handled
    if not self.flow_active:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as exc:
            self.log.warning(f"exception performing seek when flow not active {exc}")
        return
    undelivered: dict[Any, int] = {}  # partition -> first offset not delivered
    to_message = self._to_message
    for tp, record in self.scheduler.iterate(records):
        if tp in undelivered:
            continue  # a record after one not delivered waits for the refetch too
        if (
            not self.flow_active
            or self.app.consumer_generation_id != generation_id
            or not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            )
        ):
            undelivered[tp] = record.offset
            continue
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        yield tp, to_message(tp, record)
    for tp, offset in undelivered.items():
        await _seek_back(self, tp, offset)


async def _seek_back(consumer: Any, tp: Any, offset: int) -> bool:
    """Move ``tp``'s fetch position back to ``offset`` if the fetch moved it past; whether it did.

    Only ever backwards, and not across a rebalance: one that completed
    meanwhile has already put the partition at its committed offset, which
    may lie before ``offset`` (its delivered records were dropped from the
    agents' buffers), and seeking forward from there would skip them.
    """
    generation = consumer.app.consumer_generation_id
    try:
        position = await consumer.position(tp)
        if (
            position is None
            or position <= offset
            or consumer.app.consumer_generation_id != generation
        ):
            return False
        await consumer.seek(tp, offset)
    except Exception as exc:  # no longer assigned: its next owner starts at the commit
        logger.info("not seeking %s back to %d: %r", tp, offset, exc)
        return False
    logger.info("%s: records from offset %d were fetched while paused; fetching again", tp, offset)
    return True
