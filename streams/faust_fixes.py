"""A fix to faust-streaming's table recovery that otherwise loses events after a restart.

**The defect** (faust-streaming 0.15.3; upstream reports of the same race:
faust-streaming issues #596 and #216). When a worker has table state to
restore from a changelog — always after it lost its volume, after a
rebalance moved partitions to it, and whenever it is behind — Faust starts
its fetcher during recovery. When recovery ends,
``Recovery.on_recovery_completed`` *resumes* the stream partitions (here:
``events``) and only then awaits ``consumer.perform_seek()`` to put them at
their committed offsets. The fetcher is running and the flow is active, so it
fetches and delivers records of those partitions while the seek is in
flight; the seek then resets the consumer's read offsets under it. The
consumer's gap detection sees the jump, records the undelivered range as a
"gap" (meant for compacted topics and transaction markers) and later commits
over it, and the re-fetched records are dropped as already read. Events are
never processed yet their offsets are committed: lost.

Found with the fault suite (``tests/faults``): a worker killed with SIGKILL
and restarted on an empty data directory under a steady 200 events/s lost
1,232–1,767 of 6,000 events (and recommended items its users had consumed,
since their windows missed those events). With this fix: none.

**The fix** is the order Faust itself uses when there is nothing to recover
(``Recovery._resume_streams`` after upstream PR #217): seek the stream
partitions to their committed offsets *while they are still paused*, then
resume them. Nothing else changes. :func:`apply` installs it once; it refuses
(logging an error) on a Faust version it was not checked against, so an
upgrade cannot silently drop it — the fault suite must pass again first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["CHECKED_FAUST_VERSION", "applied", "apply"]

logger = logging.getLogger(__name__)

#: The faust-streaming release this fix was written for and verified against.
CHECKED_FAUST_VERSION = "0.15.3"

_applied = False
_upstream: Any = None


def upstream_on_recovery_completed() -> Any:
    """Faust's own ``Recovery.on_recovery_completed``, whether or not the fix is in place."""
    from faust.tables.recovery import Recovery

    return _upstream if _upstream is not None else Recovery.on_recovery_completed


def applied() -> bool:
    """Whether :func:`apply` installed the fix in this process."""
    return _applied


def apply() -> bool:
    """Install the recovery fix into faust-streaming (idempotent); whether it is in place."""
    global _applied, _upstream
    if _applied:
        return True
    import faust
    from faust.tables.recovery import Recovery

    if faust.__version__ != CHECKED_FAUST_VERSION:
        logger.error(
            "faust-streaming %s is not the version the recovery fix in streams/faust_fixes.py "
            "was checked against (%s); not applying it. Run the fault suite (make chaos) "
            "before trusting this version with a lost volume or a rebalance.",
            faust.__version__,
            CHECKED_FAUST_VERSION,
        )
        return False
    _upstream = Recovery.on_recovery_completed
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]  # the patch itself
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
