"""The recovery fix seeks the stream partitions before it resumes them (streams/faust_fixes.py).

Faust's own ``on_recovery_completed`` resumes the partitions first and seeks
after, while its fetcher runs: the race that lost events after a restart on
an empty data directory (the fault suite's ``crash-at-boot`` scenario). Here
the method runs against a recording stand-in for the app and consumer, and the
order of the calls is what is checked.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import faust.transport.consumer
from faust.tables.recovery import Recovery

from streams import faust_fixes


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)

            async def done() -> None:
                return None

            return done()

        return call


def recovery_completed_calls(method: Any) -> list[str]:
    consumer = Recorder()
    consumer.assignment = lambda: {"events-0", "windows-changelog-0"}  # type: ignore[method-assign]
    consumer.resume_partitions = lambda tps: consumer.calls.append(f"resume {sorted(tps)}")  # type: ignore[method-assign]
    consumer.resume_flow = lambda: consumer.calls.append("resume_flow")  # type: ignore[method-assign]

    async def perform_seek() -> None:
        consumer.calls.append("perform_seek")

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]

    async def send() -> None:
        return None

    async def maybe_start() -> None:
        return None

    app = SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=1,
        on_rebalance_complete=SimpleNamespace(send=send),
        conf=SimpleNamespace(broker_request_timeout=5.0),
        flow_control=SimpleNamespace(resume=lambda: consumer.calls.append("flow_control.resume")),
        _fetcher=SimpleNamespace(maybe_start=maybe_start),
        assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: None,
    )

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    recovery = SimpleNamespace(
        app=app,
        log=SimpleNamespace(info=lambda *a, **k: None, dev=lambda *a, **k: None),
        tables=SimpleNamespace(
            values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None
        ),
        completed=SimpleNamespace(set=lambda: None),
        _set_recovery_ended=lambda: None,
        _is_changelog_tp=lambda tp: "changelog" in tp,
        _wait=wait,
    )
    asyncio.run(method(recovery, generation_id=1))
    return consumer.calls


def test_faust_resumes_before_it_seeks_and_the_fix_seeks_first() -> None:
    assert faust.__version__ == faust_fixes.CHECKED_FAUST_VERSION
    calls = recovery_completed_calls(faust_fixes.upstream_on_recovery_completed())
    assert calls.index("resume ['events-0']") < calls.index("perform_seek")  # the race
    assert faust_fixes.apply()
    fixed = recovery_completed_calls(Recovery.on_recovery_completed)
    assert fixed.index("perform_seek") < fixed.index("resume ['events-0']")
    assert fixed.index("resume ['events-0']") < fixed.index("resume_flow")


# --------------------------------------------------------------------------- getmany


class Record(SimpleNamespace):
    offset: int


class FetchingConsumer:
    """The parts of Faust's ``Consumer`` that ``getmany`` touches, recording seeks.

    ``records`` is one fetch from aiokafka, which has moved each partition's
    position past the fetched records; ``active`` is the live set of active
    partitions, which a rebalance may change while the batch is delivered.
    """

    def __init__(self, records: dict[str, list[int]], active: set[str]) -> None:
        self.records = {tp: [Record(offset=o) for o in offsets] for tp, offsets in records.items()}
        self.active = active
        self.positions = {tp: offsets[-1] + 1 for tp, offsets in records.items()}
        self.seeks: list[tuple[str, int]] = []
        self.flow_active = True
        self.should_stop = False
        self._buffered_partitions: set[str] = set()
        self.app = SimpleNamespace(consumer_generation_id=3, monitor=SimpleNamespace())
        self.app.monitor.track_tp_end_offset = lambda tp, offset: None
        self.scheduler = SimpleNamespace(iterate=self._round_robin)
        self.log = SimpleNamespace(dev=lambda *a, **k: None, warning=lambda *a, **k: None)

    @staticmethod
    def _round_robin(records: dict[str, list[Record]]) -> Any:
        iterators = {tp: iter(rs) for tp, rs in records.items()}
        while iterators:
            for tp, it in list(iterators.items()):
                record = next(it, None)
                if record is None:
                    del iterators[tp]
                else:
                    yield tp, record

    async def _wait_next_records(self, timeout: float) -> tuple[dict, set[str]]:
        return self.records, self.active

    def highwater(self, tp: str) -> int:
        return self.positions[tp]

    def _to_message(self, tp: str, record: Record) -> tuple[str, int]:
        return (tp, record.offset)

    async def position(self, tp: str) -> int:
        return self.positions[tp]

    async def seek(self, tp: str, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset


def delivered(getmany: Any, consumer: FetchingConsumer, *, pause_after: int | None = None) -> list:
    async def drain() -> list:
        out = []
        async for _, message in getmany(consumer, 1.0):
            out.append(message)
            if pause_after is not None and len(out) == pause_after:
                consumer.active.discard("events-1")  # a rebalance pauses it mid-batch
        return out

    return asyncio.run(drain())


def test_faust_drops_a_paused_partitions_records_and_the_fix_fetches_them_again() -> None:
    assert faust_fixes.apply()
    fetch = {"events-0": [10, 11, 12], "events-1": [40, 41, 42]}

    upstream = FetchingConsumer(fetch, active={"events-0"})
    got = delivered(faust_fixes.upstream_getmany(), upstream)
    assert got == [("events-0", 10), ("events-0", 11), ("events-0", 12)]
    assert upstream.seeks == [] and upstream.positions["events-1"] == 43  # 40-42: lost

    fixed = FetchingConsumer(fetch, active={"events-0"})
    got = delivered(faust.transport.consumer.Consumer.getmany, fixed)
    assert got == [("events-0", 10), ("events-0", 11), ("events-0", 12)]
    assert fixed.seeks == [("events-1", 40)]  # fetched again once it is resumed


def test_the_fix_holds_back_a_partitions_later_records_once_one_was_not_delivered() -> None:
    fetch = {"events-0": [10, 11, 12], "events-1": [40, 41, 42]}
    consumer = FetchingConsumer(fetch, active={"events-0", "events-1"})
    got = delivered(faust.transport.consumer.Consumer.getmany, consumer, pause_after=2)
    # round robin: 10, 40 delivered; then events-1 is paused: 41 and 42 wait for the refetch
    assert got == [("events-0", 10), ("events-1", 40), ("events-0", 11), ("events-0", 12)]
    assert consumer.seeks == [("events-1", 41)]


def test_the_fix_never_seeks_forward_past_a_rebalances_seek() -> None:
    fetch = {"events-0": [10, 11, 12]}
    consumer = FetchingConsumer(fetch, active=set())
    consumer.positions["events-0"] = 7  # a rebalance already put it at its committed offset
    assert delivered(faust.transport.consumer.Consumer.getmany, consumer) == []
    assert consumer.seeks == []
