"""The bounded fault suite of ``make test``: kill -9 (also in a crash loop), a rolling restart
and a hung encoder.

Each scenario runs a real worker against the local broker under a steady
stream from an outside client, breaks something, and checks that every event
was answered or (poison records only) dead-lettered, and that no user was
recommended an item they had consumed. Smaller than ``make chaos`` (3,000
events, a 10 s session timeout so that restarts do not wait a minute for
their killed selves); the figures of the full suite are in docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import Report
from tests.faults.scenarios import (
    Rig,
    Size,
    crash_loop,
    encoder_away_at_start,
    encoder_outage,
    kill_restart,
    rolling_restart,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.faults]

SIZE = Size(events=3000, users=150, rate=100.0)
FAST_REJOIN = {"session_timeout_s": 10.0}


def run(kafka_bootstrap: str, tmp_path: Path, tag: str, scenario) -> Report:  # type: ignore[no-untyped-def]
    rig = Rig(kafka_bootstrap, tmp_path, tag, SIZE, overrides=dict(FAST_REJOIN))
    try:
        report = scenario(rig)
    finally:
        rig.close()
    print(report.summary())
    print("\n".join(rig.trail))
    return report


def assert_nothing_lost(report: Report) -> None:
    assert not report.lost, report.summary()
    assert report.leaks == 0, report.summary()
    assert not report.misrouted, report.summary()
    assert report.recommended + report.dead_lettered == report.sent
    assert report.dead_lettered > 0  # the poison records were there, and were caught


def test_kill_and_restart_on_a_lost_volume(kafka_bootstrap: str, tmp_path: Path) -> None:
    report = run(kafka_bootstrap, tmp_path, "lostvol", lambda rig: kill_restart(rig, empty=True))
    assert_nothing_lost(report)
    assert report.restart_to_first_s is not None


def test_crash_loop_then_same_and_empty_data_dir(kafka_bootstrap: str, tmp_path: Path) -> None:
    report = run(kafka_bootstrap, tmp_path, "crashloop", crash_loop)
    assert_nothing_lost(report)
    assert report.restart_to_first_s is not None  # the empty-dir worker answered events


def test_rolling_restart_of_two_workers(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Graceful stops and returns under load (four rebalances): nothing lost, nothing leaked."""
    report = run(kafka_bootstrap, tmp_path, "rolling", rolling_restart)
    assert_nothing_lost(report)


def test_hung_then_down_encoder_service(kafka_bootstrap: str, tmp_path: Path) -> None:
    report = run(
        kafka_bootstrap,
        tmp_path,
        "enchang",
        lambda rig: encoder_outage(rig, hang_s=20.0, down_s=5.0),
    )
    assert_nothing_lost(report)
    assert report.worst_healthz_gap_s <= 5.0, report.summary()


def test_worker_waits_for_an_unreachable_encoder(kafka_bootstrap: str, tmp_path: Path) -> None:
    report = run(
        kafka_bootstrap, tmp_path, "encaway", lambda rig: encoder_away_at_start(rig, away_s=10.0)
    )
    assert_nothing_lost(report)
