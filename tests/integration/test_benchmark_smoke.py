"""Smoke test of the Kafka benchmark at a tiny size, on the real broker."""

from __future__ import annotations

import pytest

from benchmarks import kafka_worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_kafka_benchmark_runs_one_and_two_workers(kafka_bootstrap: str) -> None:
    figures = kafka_worker.run("tiny", bootstrap=kafka_bootstrap, progress=False)
    assert [r["workers"] for r in figures["rows"]] == [1, 2]
    for row in figures["rows"]:
        assert row["events_per_s"] > 0
        (lat,) = row["latency"]
        assert lat["rate"] == 50.0 and lat["offered"] > 0
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_startup_benchmark_builds_then_restores_the_index(kafka_bootstrap: str) -> None:
    from benchmarks import worker_startup

    figures = worker_startup.run("tiny", bootstrap=kafka_bootstrap, progress=False)
    first, restart = figures["rows"]
    assert first["index_origin"] == "built" and restart["index_origin"] == "restored"
    assert first["index_items"] == restart["index_items"] == figures["items"]
    assert figures["checks"]["index_restored_on_restart"]
