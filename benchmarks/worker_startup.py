"""A worker's start-up with a big catalogue: to ready from the item-vectors topic, and on restart.

The item-vectors topic of a shop with 10^6 items holds 10^6 records (about
2 KB each: the item record and its base64 float32 vector). A worker reads it
in full, builds its vector index, and only then reports ready. Restarted on
the same data directory it reads the topic again but adopts the index it
saved when it stopped. Measured here through the local broker:

1. the records are published (vectors derived from MiniLM's, stamped with the
   worker's encoder version so that nothing is encoded again);
2. a ``driftrec worker`` starts on an empty data directory: seconds to
   ``/readyz``, with the index build time from ``/state``;
3. it is stopped (SIGTERM: the index is saved) and started again on the same
   directory: seconds to ready, the index restored.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from benchmarks.kafka_worker import Workers, get_json
from streams.settings import WorkerSettings
from streams.topology import ensure_topics


def catalogue_chunks(n_items: int, derived: bool) -> Iterator[tuple[list[Any], np.ndarray]]:
    """The benchmark catalogue (ids ``i0``, ``i1``, …) in chunks of 50,000: items and vectors,
    the same on every call (derived from MiniLM's item vectors, or generated)."""
    from benchmarks.catalogue_scale import _vectors
    from benchmarks.catalogue_vectors import derived_item_vectors
    from models.contracts import CatalogItem

    chunk = 50_000
    for start in range(0, n_items, chunk):
        count = min(chunk, n_items - start)
        if derived:
            vectors = derived_item_vectors(count, seed=start // chunk)
        else:
            vectors = _vectors(count, derived=False, seed=start // chunk)
        items = [
            CatalogItem(item_id=f"i{k}", title=f"item {k}", tags=[f"t{k % 97}"])
            for k in range(start, start + count)
        ]
        yield items, vectors


async def publish_catalogue(
    bootstrap: str, topic: str, n_items: int, encoder_version: str, derived: bool
) -> tuple[float, np.ndarray]:
    """Publish ``n_items`` item-vectors records (:func:`catalogue_chunks`); returns the seconds
    it took and each item's taste bucket (for :func:`benchmarks.catalogue_scale.shop_stream`)."""
    from benchmarks.catalogue_scale import taste_buckets
    from streams.item_vectors import encode_item_vector

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1
    )
    await producer.start()
    started = time.perf_counter()
    buckets = []
    try:
        for items, vectors in catalogue_chunks(n_items, derived):
            buckets.append(taste_buckets(vectors, n_items))
            for item, vector in zip(items, vectors, strict=True):
                await producer.send(
                    topic,
                    key=item.item_id.encode(),
                    value=encode_item_vector(item, vector, encoder=encoder_version),
                )
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started, np.concatenate(buckets)


async def _until_ready(workers: Workers, n_items: int, timeout_s: float) -> tuple[float, dict]:
    started = time.perf_counter()
    await workers.wait_ready(n_items, partitions=1, timeout_s=timeout_s)
    state = get_json(workers.ports[0], "/state") or {}
    return time.perf_counter() - started, state


async def measure(
    n_items: int,
    *,
    bootstrap: str,
    derived: bool,
    timeout_s: float = 900,
    settings_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    from models.encoder_factory import make_encoder

    prefix = f"bench-start-{uuid.uuid4().hex[:8]}."
    settings = WorkerSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=1)
    await ensure_topics(settings)
    version = make_encoder(settings).model_version
    publish_s, _ = await publish_catalogue(
        bootstrap, settings.topic("item_vectors"), n_items, version, derived
    )
    env = {
        "DRIFTREC_KAFKA_BOOTSTRAP": bootstrap,
        "DRIFTREC_TOPIC_PREFIX": prefix,
        "DRIFTREC_APP_ID": f"bench-start-{uuid.uuid4().hex[:8]}",
        "DRIFTREC_PARTITIONS": "1",
        "DRIFTREC_DEVICE": "cpu",
        "DRIFTREC_LOG_LEVEL": "info",
        **(settings_env or {}),
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_")}, **env}
    root: Path | None = None
    rows = []
    for attempt in ("empty data dir", "restart, index saved"):
        workers = Workers(1, env, root=root)
        root = workers.root
        try:
            seconds, state = await _until_ready(workers, n_items, timeout_s)
        finally:
            workers.stop()
        ranking = state.get("ranking", {})
        rows.append(
            {
                "start": attempt,
                "seconds_to_ready": seconds,
                "index_origin": ranking.get("index_origin"),
                "index_ready_s": ranking.get("index_ready_s"),
                "index_items": ranking.get("index_items"),
            }
        )
    return {"items": n_items, "publish_s": publish_s, "rows": rows}


def run(size: str = "full", bootstrap: str = "127.0.0.1:9092", progress: bool = True) -> dict:
    """Start-up to ready at 10^6 items (10^3 at the smoke test's size)."""
    n_items = 1_000_000 if size == "full" else 1_000
    full = size == "full"
    # Defaults at full size (two-stage by catalogue size); forced two-stage at the smoke size.
    forced = {} if full else {"DRIFTREC_RANKING": "two-stage"}
    figures = asyncio.run(measure(n_items, bootstrap=bootstrap, derived=full, settings_env=forced))
    if progress:
        for row in figures["rows"]:
            print(
                f"  {n_items:,} items, {row['start']}: ready in {row['seconds_to_ready']:.0f} s "
                f"(index {row['index_origin']} in {row['index_ready_s']} s)",
                flush=True,
            )
    first, second = figures["rows"]
    figures["checks"] = {
        "ready_within_5_min": first["seconds_to_ready"] <= 300,
        "restart_within_1_min": second["seconds_to_ready"] <= 60,
        "index_restored_on_restart": second["index_origin"] == "restored",
    }
    figures["met"] = all(figures["checks"].values())
    return figures
