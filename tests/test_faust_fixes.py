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
