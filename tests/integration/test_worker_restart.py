"""A worker's state survives restarts: from its RocksDB data directory, or from the changelog.

Alice consumes 20 of 31 catalogue items; the worker stops. Started again on
the same data directory it must still know her history: after she consumes a
21st item her top-10 is exactly the 10 items she has not consumed (a worker
that forgot her would recommend some of the 20). Stopped again and started on
an *empty* data directory, it restores her window from the table's changelog
topic: after a 22nd item her list is exactly the 9 items left.

The worker ranks in two-stage mode (candidates from its vector index): its
lists must be as exact as the catalogue is small, and the index it saved on
stopping is adopted by the restart on the same data directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.contracts import Recommendation
from models.synthetic_shop import synthetic_shop

from .worker_harness import (
    WorkerProcess,
    consume,
    create_topics,
    delete_topics,
    json_records,
    produce,
    unique_names,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CATALOG = synthetic_shop(n_users=2, items_per_topic=8, n_topics=4, n_fading=1, n_emerging=1).items[
    :31
]
START_TS = 1_700_000_000.0


def alice_event(index: int) -> tuple[bytes, bytes]:
    record = {
        "user_id": "alice",
        "item_id": CATALOG[index].item_id,
        "event": "purchase",
        "ts": START_TS + 600.0 * index,
        "event_id": f"alice-{index}",
    }
    return b"alice", json.dumps(record).encode()


def answer_to(bootstrap: str, prefix: str, event_id: str) -> Recommendation:
    records = consume(
        bootstrap,
        prefix + "recommendations",
        until=lambda rs: any(json.loads(r.value)["event_id"] == event_id for r in rs),
        timeout_s=90,
    )
    answers = [
        Recommendation.model_validate_json(r.value)
        for r in records
        if json.loads(r.value)["event_id"] == event_id
    ]
    assert answers, f"no recommendation answered {event_id}"
    return answers[-1]


def test_history_survives_restart_and_a_lost_data_directory(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix, app_id = unique_names("restart")
    first_dir, empty_dir = tmp_path / "data", tmp_path / "fresh-data"

    def worker(data_dir: Path, name: str) -> WorkerProcess:
        env = worker_env(kafka_bootstrap, prefix, app_id, data_dir, top_k=10, ranking="two-stage")
        return WorkerProcess(env, tmp_path / f"{name}.log", name=name)

    def wait_catalog(process: WorkerProcess) -> None:
        process.wait_ready()
        process.wait_until(
            lambda: process.state()["recommendable_items"] == len(CATALOG),
            timeout_s=60,
            what="the catalogue loaded",
        )

    try:
        create_topics(kafka_bootstrap, prefix)
        with worker(first_dir, "first") as first:
            produce(kafka_bootstrap, prefix + "items", json_records(CATALOG, lambda i: i.item_id))
            wait_catalog(first)
            produce(kafka_bootstrap, prefix + "events", [alice_event(i) for i in range(20)])
            before = answer_to(kafka_bootstrap, prefix, "alice-19")
        assert first.process is not None and first.process.returncode == 0, first.log_tail()

        with worker(first_dir, "same-dir") as again:
            wait_catalog(again)
            produce(kafka_bootstrap, prefix + "events", [alice_event(20)])
            rec = answer_to(kafka_bootstrap, prefix, "alice-20")
            assert {i.item_id for i in rec.items} == {i.item_id for i in CATALOG[21:]}
            # Her cluster id came back too (None when it was still the first worker's
            # provisional id, which never leaves a worker).
            assert rec.cluster.previous == before.cluster.id
            ranking = again.state()["ranking"]
            assert ranking["mode"] == "two-stage" and ranking["index_origin"] == "restored"
            # The catalogue came from the data dir, not from reading the topic again.
            assert ranking["catalogue_from_checkpoint"]
            assert ranking["index_items"] == len(CATALOG)

        with worker(empty_dir, "empty-dir") as restored:
            wait_catalog(restored)
            produce(kafka_bootstrap, prefix + "events", [alice_event(21)])
            rec = answer_to(kafka_bootstrap, prefix, "alice-21")
            assert {i.item_id for i in rec.items} == {i.item_id for i in CATALOG[22:]}
            assert rec.cluster.previous is not None
            ranking = restored.state()["ranking"]
            assert ranking["index_origin"] == "built" and not ranking["catalogue_from_checkpoint"]
    finally:
        delete_topics(kafka_bootstrap, [prefix, app_id + "-"])
