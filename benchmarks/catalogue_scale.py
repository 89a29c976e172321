"""Catalogue scale: the embedded engine at 10^4, 10^5 and 10^6 items, exact against two-stage.

What a shop runs: the engine through its public API, 384-d MiniLM-derived item
vectors (:mod:`benchmarks.catalogue_vectors`; encoding 10^6 texts would take an
hour and measures the encoder, not ranking), default settings, windows in
RocksDB, micro-batches of 256 events. Two streams over the same catalogue:

- **live shop**: thousands of shoppers at once, so a batch of 256 events holds
  about 250 different users (each ranking is a different user's);
- **bursty replay**: each user's session arrives in one run of ~20 events, as a
  MovieLens replay does (about 13 users per batch).

A shopper has one to three tastes; a taste is a neighbourhood of the catalogue
(items whose vectors share a random-hyperplane bucket), and within it some
items are far more popular than others (Zipf). The first half of the stream
warms the windows and counts; the second half is timed. Exact ranking is the
named baseline in the same run (on fewer events where it is slow, and not at
10^6 items, where its ``[256, n]`` float64 matrices alone take 2 GB each).
Each configuration runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import current_rss_mib, peak_rss_mib

BATCH = 256
STAGES = (
    "store_s", "interest_s", "clustering_s", "collaborative_s", "index_s", "ranking_s",
)  # fmt: skip


def taste_buckets(vectors: np.ndarray, n_total: int, seed: int = 0) -> np.ndarray:
    """Random-hyperplane bucket of each vector (near items share a bucket): a shopper's
    taste. Planes depend on ``n_total`` and ``seed`` only, so chunks can be bucketed apart."""
    rng = np.random.default_rng(seed)
    bits = int(np.clip(np.log2(max(2, n_total / 60)), 4, 14))
    planes = rng.normal(size=(vectors.shape[1], bits)).astype(np.float32)
    return ((vectors @ planes) > 0) @ (1 << np.arange(bits))


def shop_stream(
    bucket: np.ndarray, *, events: int, users: int, bursty: bool, seed: int = 0
) -> list[tuple[str, int, float]]:
    """``(user, item index, ts)`` in event-time order: a live shop or a bursty replay."""
    rng = np.random.default_rng(seed)
    bits = int(bucket.max(initial=0)).bit_length()
    order = np.argsort(bucket, kind="stable")
    edges = np.searchsorted(bucket[order], np.arange((1 << bits) + 1))
    sizes = np.diff(edges)
    tastes = np.flatnonzero(sizes >= 5)
    # Bigger neighbourhoods attract more shoppers; within one, popularity is Zipf.
    taste_p = sizes[tastes] / sizes[tastes].sum()
    user_tastes = [
        rng.choice(tastes, size=int(rng.integers(1, 4)), p=taste_p) for _ in range(users)
    ]

    def item_of(taste: int) -> int:
        members = order[edges[taste] : edges[taste + 1]]
        rank = min(len(members) - 1, int(rng.zipf(1.3)) - 1)
        return int(members[rank])

    out: list[tuple[str, int, float]] = []
    t = 1.7e9
    if bursty:
        while len(out) < events:
            user = int(rng.integers(users))
            taste = int(rng.choice(user_tastes[user]))
            for _ in range(int(rng.integers(10, 30))):
                if rng.random() < 0.15:
                    taste = int(rng.choice(user_tastes[user]))
                out.append((f"u{user}", item_of(taste), t))
                t += 1.0
    else:
        current = [int(rng.choice(tastes_of)) for tastes_of in user_tastes]
        for _ in range(events):
            user = int(rng.integers(users))
            if rng.random() < 0.15:  # drift to another of the user's tastes
                current[user] = int(rng.choice(user_tastes[user]))
            out.append((f"u{user}", item_of(current[user]), t))
            t += 0.05
    return out[:events]


CHUNK = 50_000


def _vectors(n_items: int, derived: bool, seed: int = 0) -> np.ndarray:
    """MiniLM-derived vectors, or (the smoke test's size) clustered random ones."""
    if derived:
        from benchmarks.catalogue_vectors import derived_item_vectors

        return derived_item_vectors(n_items, seed=seed)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n_items // 50), 384))
    x = centres[rng.integers(len(centres), size=n_items)] + 0.7 * rng.normal(size=(n_items, 384))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def replay(
    n_items: int,
    ranking: str,
    bursty: bool,
    events: int,
    timed: int,
    users: int,
    derived: bool = True,
) -> dict[str, Any]:
    """One configuration in a fresh process: catalogue, warm-up, then the timed events."""
    from models.contracts import BehaviourEvent, CatalogItem
    from models.engine import Engine
    from models.settings import EngineSettings

    with tempfile.TemporaryDirectory(prefix="driftrec-scale-") as tmp:
        engine = Engine.build(EngineSettings(data_dir=Path(tmp), ranking=ranking))
        try:
            # The catalogue arrives in chunks, as from the item-vectors topic: the engine's
            # copy is the only whole one (peak RSS is the engine's).
            started = time.perf_counter()
            version = engine.encoder.model_version
            buckets = []
            for start in range(0, n_items, CHUNK):
                stop = min(n_items, start + CHUNK)
                vectors = _vectors(stop - start, derived, seed=start // CHUNK)
                buckets.append(taste_buckets(vectors, n_items))
                items = [
                    CatalogItem(item_id=f"i{k}", title=f"item {k}") for k in range(start, stop)
                ]
                engine.set_item_vectors(items, vectors, encoder_version=version)
                del vectors, items
            catalogue_s = time.perf_counter() - started
            stream = shop_stream(np.concatenate(buckets), events=events, users=users, bursty=bursty)
            index_s = 0.0
            if engine.ranking_mode() == "two-stage":
                started = time.perf_counter()
                engine.sync_index()
                index_s = time.perf_counter() - started
            as_events = [
                BehaviourEvent(user_id=u, item_id=f"i{i}", event="view", ts=t, weight=1.0)
                for u, i, t in stream
            ]
            warm = as_events[: len(as_events) - timed]
            for start in range(0, len(warm), BATCH):
                engine.process(warm[start : start + BATCH])
            gc.freeze()  # what a worker does once it has loaded: see models/engine.py
            before = {stage: getattr(engine.stats, stage) for stage in STAGES}
            rss_before = current_rss_mib()
            timed_events = as_events[len(as_events) - timed :]
            users_per_batch, candidates = [], []
            started = time.perf_counter()
            for start in range(0, len(timed_events), BATCH):
                batch = timed_events[start : start + BATCH]
                engine.process(batch)
                users_per_batch.append(len({e.user_id for e in batch}))
                candidates.append(engine.stats.candidates_per_user)
            seconds = time.perf_counter() - started
            gc.unfreeze()
            breakdown = {s: getattr(engine.stats, s) - before[s] for s in STAGES}
            mode = engine.stats.ranking_mode
        finally:
            engine.close()
    return {
        "items": n_items,
        "ranking": mode,
        "stream": "bursty replay" if bursty else "live shop",
        "events": len(timed_events),
        "users_per_batch": float(np.mean(users_per_batch)),
        "candidates_per_user": float(np.mean(candidates)) if mode == "two-stage" else n_items,
        "seconds": seconds,
        "events_per_s": len(timed_events) / seconds,
        "breakdown_us_per_event": {s: v / len(timed_events) * 1e6 for s, v in breakdown.items()},
        "other_us_per_event": (seconds - sum(breakdown.values())) / len(timed_events) * 1e6,
        "catalogue_s": catalogue_s,
        "index_build_s": index_s,
        "rss_before_timed_mib": rss_before,
        # The machine's 1-minute load at the end: above ~1 other processes took CPU too.
        "load_avg": os.getloadavg()[0],
        "peak_rss_mib": peak_rss_mib(),
    }


def _in_child(**kwargs: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(replay, **kwargs).result()


def run(size: str = "full", progress: bool = True) -> dict[str, Any]:
    """Both rankings at each catalogue size on the live-shop stream, and the bursty replay."""
    full = size == "full"
    sizes = (10_000, 100_000, 1_000_000) if full else (3_000,)
    timed = 10_000 if full else 512
    # 4,000 shoppers: a batch of 256 events holds ~250 of them, and by the timed half
    # each has a short history (a few events), as active shoppers do.
    users = 4_000 if full else 2_000
    configs: list[dict[str, Any]] = []
    for n in sizes:
        configs.append({"n_items": n, "ranking": "two-stage", "bursty": False})
        configs.append({"n_items": n, "ranking": "two-stage", "bursty": True})
        if n <= 100_000:  # exact at 10^6 needs 2 GB per [256, n] matrix: not run
            configs.append({"n_items": n, "ranking": "exact", "bursty": False})
    rows = []
    for config in configs:
        slow = config["ranking"] == "exact" and config["n_items"] >= 100_000
        n_timed = 1_024 if slow else timed
        row = _in_child(
            **config,
            events=n_timed + (n_timed if slow else timed if full else 512),
            timed=n_timed,
            users=users,
            derived=full,
        )
        rows.append(row)
        if progress:
            parts = ", ".join(
                f"{stage.removesuffix('_s')} {us:.0f}"
                for stage, us in row["breakdown_us_per_event"].items()
            )
            print(
                f"  {row['items']:>9,} items, {row['ranking']:<9} {row['stream']:<13} "
                f"{row['users_per_batch']:>5.0f} users/batch: {row['events_per_s']:>7,.0f} "
                f"events/s, peak RSS {row['peak_rss_mib']:,.0f} MiB, index build "
                f"{row['index_build_s']:.0f} s (µs/event: {parts}, "
                f"other {row['other_us_per_event']:.0f})",
                flush=True,
            )
    live = {
        r["items"]: r for r in rows if r["ranking"] == "two-stage" and r["stream"] == "live shop"
    }
    smallest, largest = min(live), max(live)
    checks = {
        "events_per_s_at_least_3000": all(r["events_per_s"] >= 3_000 for r in live.values()),
        "largest_at_least_half_of_smallest": live[largest]["events_per_s"]
        >= 0.5 * live[smallest]["events_per_s"],
        "peak_rss_at_most_4_gib": live[largest]["peak_rss_mib"] <= 4 * 1024,
    }
    return {"size": size, "rows": rows, "checks": checks, "met": all(checks.values())}
