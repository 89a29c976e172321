"""Two workers in one consumer group: shared partitions, one cluster model, merged counts.

* Both workers own events partitions, and every event is answered exactly once
  while neither stops.
* Both stamp recommendations with versions the model agent published, and end
  on the same version and the same clusters.
* Each worker's collaborative counts (popularity, trending, transitions), a few
  seconds behind, equal those of one engine fed the whole stream in-process.
* Stopping one worker mid-stream moves its partitions (and its users' windows)
  to the other, and no event goes unanswered.
* Replaying a MovieLens slice through two workers gives HR@10 within a small
  tolerance of one worker (skipped when the dataset is not on this machine).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from models.contracts import BehaviourEvent, Recommendation
from models.engine import Engine
from models.record_parser import EventParser
from models.settings import EngineSettings
from models.state_store import MemoryStore
from models.synthetic_shop import synthetic_shop

from .worker_harness import (
    REPO_ROOT,
    Received,
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

SHOP = synthetic_shop(
    n_users=48, items_per_topic=8, events_per_user=12, n_topics=8, n_fading=1, n_emerging=1
)
PARTITIONS = 4
MOVIELENS = REPO_ROOT.parent / "shared" / "data" / "ml-1m-partial"


def start_workers(
    bootstrap: str, prefix: str, app_id: str, tmp_path: Path, n: int = 2, **settings: object
) -> list[WorkerProcess]:
    workers = []
    for name in ("worker-a", "worker-b")[:n]:
        env = worker_env(
            bootstrap, prefix, app_id, tmp_path / name, partitions=PARTITIONS, **settings
        )
        workers.append(WorkerProcess(env, tmp_path / f"{name}.log", name=name).start())
    return workers


def wait_shared(workers: Sequence[WorkerProcess]) -> None:
    """Until every worker is ready and the events partitions are split among all of them."""

    def split() -> bool:
        owned = []
        for worker in workers:
            if worker.get("/readyz")[0] != 200:
                return False
            owned.append(worker.state()["events_partitions"])
        flat = [p for parts in owned for p in parts]
        return all(owned) and sorted(flat) == list(range(PARTITIONS))

    workers[0].wait_until(split, timeout_s=120, what="the events partitions shared by all")


def answers(records: Sequence[Received]) -> dict[str, list[tuple[Recommendation, bytes]]]:
    by_event: dict[str, list[tuple[Recommendation, bytes]]] = defaultdict(list)
    for record in records:
        rec = Recommendation.model_validate_json(record.value)
        by_event[rec.event_id].append((rec, record.headers.get("driftrec-worker", b"")))
    return by_event


def reference_counts(
    events: Sequence[BehaviourEvent], encoder: object, at: float
) -> dict[str, object]:
    """The counts of one engine that saw the whole stream (in-process, no broker)."""
    engine = Engine(EngineSettings(), encoder=encoder, store=MemoryStore(), clusterer=None)
    engine.upsert_items(SHOP.items)
    for start in range(0, len(events), 64):
        engine.learn(events[start : start + 64])
    counts, catalog = engine.counts, engine.catalog
    n = len(catalog)
    ids = [catalog.id_of(i) for i in range(n)]
    scale = counts.decay.to_decayed(1.0, at)
    transitions: dict[str, dict[str, float]] = {}
    for source in range(n):
        successors, values = counts.transitions.row_arrays(source)
        if len(successors):
            transitions[ids[source]] = {
                ids[int(s)]: float(v) * scale for s, v in zip(successors, values, strict=True)
            }
    return {
        "popularity": {
            ids[i]: float(v) * scale for i, v in enumerate(counts.popularity_scores(n)) if v
        },
        "trending": {
            ids[i]: float(v) * counts.trending_decay.to_decayed(1.0, at)
            for i, v in enumerate(counts.trending_scores(n))
            if v
        },
        "transitions": transitions,
    }


def same_counts(ours: dict, theirs: dict, rel: float = 1e-6) -> bool:
    def close(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(
            math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-12) for k in a
        )

    rows, expected_rows = ours["transitions"], theirs["transitions"]
    return (
        close(ours["popularity"], theirs["popularity"])
        and close(ours["trending"], theirs["trending"])
        and rows.keys() == expected_rows.keys()
        and all(close(rows[k], expected_rows[k]) for k in rows)
    )


def test_two_workers_share_partitions_converge_and_fail_over(
    kafka_bootstrap: str, tmp_path: Path, minilm_encoder: object
) -> None:
    prefix, app_id = unique_names("scale")
    first, second = SHOP.events[:360], SHOP.events[360:]
    create_topics(kafka_bootstrap, prefix, partitions=PARTITIONS)
    workers = start_workers(kafka_bootstrap, prefix, app_id, tmp_path)
    a, b = workers
    try:
        produce(kafka_bootstrap, prefix + "items", json_records(SHOP.items, lambda i: i.item_id))
        wait_shared(workers)
        for worker in workers:
            worker.wait_until(
                lambda w=worker: w.state()["recommendable_items"] == len(SHOP.items),
                timeout_s=60,
                what="the catalogue loaded",
            )

        # --- phase 1: both workers serve, exactly once --------------------------------
        produce(kafka_bootstrap, prefix + "events", json_records(first, lambda e: e.user_id))
        records = consume(
            kafka_bootstrap,
            prefix + "recommendations",
            until=lambda rs: len(rs) >= len(first),
            timeout_s=120,
        )
        by_event = answers(records)
        assert set(by_event) == {e.event_id for e in first}
        assert all(len(found) == 1 for found in by_event.values())
        assert {sender for found in by_event.values() for _, sender in found} == {
            b"worker-a",
            b"worker-b",
        }

        # --- one cluster model, one set of counts ---------------------------------
        at = first[-1].ts
        expected = reference_counts(first, minilm_encoder, at)
        for worker in workers:
            worker.wait_until(
                lambda w=worker: same_counts(w.get(f"/state/counts?at={at}")[1], expected),
                timeout_s=60,
                what="counts equal to one engine's over the whole stream",
            )
        published = consume(
            kafka_bootstrap, prefix + "cluster-model", until=lambda rs: False, timeout_s=3
        )
        assert published, "the model agent published no cluster snapshot"

        def same_model() -> bool:
            states = [w.state() for w in workers]
            return (
                states[0]["model_version"] == states[1]["model_version"] > 0
                and states[0]["clusters"] == states[1]["clusters"]
                and not any(c >= 1 << 48 for c in states[0]["clusters"])  # none provisional
            )

        a.wait_until(same_model, timeout_s=60, what="the same model version on both workers")
        owners = [w.state()["owns_model"] for w in workers]
        assert sorted(owners) == [False, True]  # one model agent: the owner of the partition
        versions = {rec.model_version for found in by_event.values() for rec, _ in found}
        published_versions = set(range(1, a.state()["model_version"] + 1))
        assert versions <= {0} | published_versions

        # --- phase 2: stop worker b mid-stream --------------------------------------
        consumed_before: dict[str, set[str]] = defaultdict(set)
        for event in first:
            consumed_before[event.user_id].add(event.item_id)
        sender = threading.Thread(
            target=produce,
            args=(kafka_bootstrap, prefix + "events", json_records(second, lambda e: e.user_id)),
            kwargs={"rate": 60.0},
        )
        sender.start()
        time.sleep(1.5)
        assert b.stop() == 0, b.log_tail()
        sender.join(timeout=60)
        records = consume(
            kafka_bootstrap,
            prefix + "recommendations",
            until=lambda rs: {e.event_id for e in second} <= set(answers(rs)),
            timeout_s=120,
        )
        by_event = answers(records)
        unanswered = {e.event_id for e in second} - set(by_event)
        assert not unanswered, f"{len(unanswered)} events unanswered after the failover"
        assert a.state()["events_partitions"] == list(range(PARTITIONS))
        event_of = {e.event_id: e for e in SHOP.events}
        for event in second:
            for rec, _ in by_event[event.event_id]:
                recommended = {item.item_id for item in rec.items}
                assert not recommended & consumed_before[event_of[rec.event_id].user_id], (
                    "a moved user's history was lost"
                )
    finally:
        for worker in workers:
            worker.stop()
        delete_topics(kafka_bootstrap, [prefix, app_id + "-"])


# --------------------------------------------------------------------------- MovieLens


def movielens_slice(n_users: int = 60, per_user: int = 50) -> tuple[list, list[BehaviourEvent]]:
    """The first ratings of the most active users, interleaved user by user, and their movies."""
    from models.datasets import load_dataset

    dataset = load_dataset(MOVIELENS, EventParser.from_settings(EngineSettings()))
    by_user: dict[str, list[BehaviourEvent]] = defaultdict(list)
    for event in dataset.events:
        by_user[event.user_id].append(event)
    active = sorted(by_user, key=lambda u: (-len(by_user[u]), u))[:n_users]
    streams = [by_user[u][:per_user] for u in active]
    interleaved = [s[i] for i in range(per_user) for s in streams if i < len(s)]
    wanted = {e.item_id for e in interleaved}
    return [item for item in dataset.items if item.item_id in wanted], interleaved


def hit_rate(events: Sequence[BehaviourEvent], records: Sequence[Received]) -> float:
    """HR@10 of the next event: is a user's next item in the list answering their previous event."""
    recommended = {}
    for record in records:
        rec = Recommendation.model_validate_json(record.value)
        recommended.setdefault(rec.event_id, {item.item_id for item in rec.items})
    previous: dict[str, str] = {}
    hits = total = 0
    for event in events:
        before = previous.get(event.user_id)
        if before is not None:
            total += 1
            hits += event.item_id in recommended[before]
        previous[event.user_id] = event.event_id
    return hits / total


@pytest.mark.skipif(
    not (MOVIELENS / "movies.dat").exists(), reason=f"MovieLens 1M not found at {MOVIELENS}"
)
def test_movielens_hit_rate_of_two_workers_matches_one(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    items, events = movielens_slice()
    rates = {}
    for n_workers in (1, 2):
        prefix, app_id = unique_names(f"hr{n_workers}")
        create_topics(kafka_bootstrap, prefix, partitions=PARTITIONS)
        workers = start_workers(
            kafka_bootstrap,
            prefix,
            app_id,
            tmp_path / f"run{n_workers}",
            n=n_workers,
            delta_interval_s=0.25,
        )
        try:
            produce(kafka_bootstrap, prefix + "items", json_records(items, lambda i: i.item_id))
            wait_shared(workers)
            for worker in workers:
                worker.wait_until(
                    lambda w=worker: w.state()["recommendable_items"] == len(items),
                    timeout_s=120,
                    what="the catalogue loaded",
                )
            produce(
                kafka_bootstrap,
                prefix + "events",
                json_records(events, lambda e: e.user_id),
                rate=250.0,
            )
            records = consume(
                kafka_bootstrap,
                prefix + "recommendations",
                until=lambda rs: len(rs) >= len(events),
                timeout_s=180,
            )
            assert len({json.loads(r.value)["event_id"] for r in records}) == len(events)
            rates[n_workers] = hit_rate(events, records)
        finally:
            for worker in workers:
                worker.stop()
            delete_topics(kafka_bootstrap, [prefix, app_id + "-"])
    print(f"MovieLens slice HR@10: one worker {rates[1]:.4f}, two workers {rates[2]:.4f}")
    assert rates[1] > 0.05, "one worker should find the next movie now and then"
    assert abs(rates[2] - rates[1]) <= 0.03
