"""The engine embedded, without Kafka: events/s, where the time goes, peak memory, scaling.

Replays a MovieLens stream (default ``../shared/data/ml-1m-partial``, 487,650
ratings) in event-time order through :meth:`Engine.process` in micro-batches
of the worker's default size (256), with the real MiniLM encoder and windows in
RocksDB, as a worker does minus Kafka. Every configuration runs in its own
process so its peak RSS is its own. Figures:

- **pooled** over the whole stream, and **sequence** mode (one encoder pass
  per user per batch over the rendered window) over its first events;
- the time breakdown from :class:`models.engine.EngineStats` (window store,
  encoder, interest/facets, clustering, collaborative counts, ranking);
- throughput per tenth of the stream (cost per event must not grow with the
  events seen: windows and counts are bounded);
- throughput at three catalogue sizes: the dataset's own, and padded with
  distractor items (random unit vectors, never consumed, but ranked like any
  other item) to 4× and 16×.

The catalogue is encoded before the clock starts (once per item in a real
deployment, by the items agent); its time is reported separately.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import current_rss_mib, peak_rss_mib

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m-partial"
STAGES = ("store_s", "encoder_s", "interest_s", "clustering_s", "collaborative_s", "ranking_s")


def _load(data: Path | None, limit: int | None, settings: Any) -> Any:
    from models.datasets import Dataset, load_dataset
    from models.record_parser import EventParser
    from models.synthetic_shop import synthetic_shop

    if data is None:  # the smoke-test size: no dataset needed
        shop = synthetic_shop(n_users=40, items_per_topic=10, events_per_user=20)
        return Dataset("synthetic-shop", shop.items, shop.events[:limit])
    return load_dataset(data, EventParser.from_settings(settings), limit=limit)


def replay(
    data: str | None,
    mode: str,
    limit: int | None,
    pad_factor: int,
    batch_size: int,
    device: str,
    dtype: str,
) -> dict[str, Any]:
    """One configuration, run in a fresh process: replay and measure."""
    from models.contracts import CatalogItem
    from models.engine import Engine
    from models.settings import EngineSettings
    from streams.embedded import batched

    with tempfile.TemporaryDirectory(prefix="driftrec-bench-") as tmp:
        settings = EngineSettings(
            data_dir=Path(tmp), interest_mode=mode, device=device, dtype=dtype
        )
        loaded = time.perf_counter()
        dataset = _load(Path(data) if data else None, limit, settings)
        load_s = time.perf_counter() - loaded
        engine = Engine.build(settings)
        try:
            started = time.perf_counter()
            engine.upsert_items(dataset.items)
            catalogue_s = time.perf_counter() - started
            n_native = len(engine.catalog)
            if pad_factor > 1:
                rng = np.random.default_rng(0)
                extra = n_native * (pad_factor - 1)
                pads = [CatalogItem(item_id=f"pad-{i}", title=f"pad {i}") for i in range(extra)]
                vectors = rng.normal(size=(extra, engine.encoder.dim)).astype(np.float32)
                engine.set_item_vectors(pads, vectors, encoder_version=engine.encoder.model_version)
            before = {stage: getattr(engine.stats, stage) for stage in STAGES}
            rss_before = current_rss_mib()
            events = dataset.events
            tenth = max(1, len(events) // 10)
            marks, done, users = [], 0, 0
            started = time.perf_counter()
            for batch in batched(events, batch_size):
                engine.process(batch)
                done += len(batch)
                users += len({e.user_id for e in batch})
                if done // tenth > len(marks) and len(marks) < 10:
                    marks.append((done, time.perf_counter() - started))
            seconds = time.perf_counter() - started
            stats = engine.stats
            breakdown = {stage: getattr(stats, stage) - before[stage] for stage in STAGES}
        finally:
            engine.close()
    deciles, previous = [], (0, 0.0)
    for count, at in marks:
        deciles.append((count - previous[0]) / max(at - previous[1], 1e-9))
        previous = (count, at)
    return {
        "dataset": dataset.name,
        "mode": mode,
        "events": len(events),
        "items": len(engine.catalog),
        "native_items": n_native,
        "batch": batch_size,
        "users_per_batch": users / max(1, -(-len(events) // batch_size)),
        "seconds": seconds,
        "events_per_s": len(events) / seconds,
        "breakdown_s": breakdown,
        "other_s": seconds - sum(breakdown.values()),
        "events_per_s_by_tenth": deciles,
        "catalogue_encode_s": catalogue_s,
        "load_s": load_s,
        "rss_before_replay_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


def _in_child(**kwargs: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(replay, **kwargs).result()


def run(
    size: str = "full",
    data: Path | None = DEFAULT_DATA,
    device: str = "cpu",
    dtype: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Pooled over the stream, sequence over its start, and three catalogue sizes."""
    if size != "full" or data is None or not Path(data).exists():
        if size == "full":
            print(f"  {data} not found: running on the synthetic shop instead")
        data = None
    full = size == "full" and data is not None
    source = str(data) if data else None
    common = {"data": source, "batch_size": 256, "device": device, "dtype": dtype}
    configs = [
        ("pooled, whole stream", {"mode": "pooled", "limit": None, "pad_factor": 1}),
        ("sequence", {"mode": "sequence", "limit": 5_000 if full else 200, "pad_factor": 1}),
    ]
    for factor in (1, 4, 16):
        configs.append(
            (
                f"pooled, catalogue ×{factor}",
                {"mode": "pooled", "limit": 100_000 if full else 300, "pad_factor": factor},
            )
        )
    rows = []
    for name, config in configs:
        row = _in_child(**common, **config)
        row["config"] = name
        rows.append(row)
        if progress:
            parts = ", ".join(
                f"{stage.removesuffix('_s')} {seconds / row['events'] * 1e6:.0f}"
                for stage, seconds in row["breakdown_s"].items()
            )
            print(
                f"  {name:<24} {row['events']:>8,} events, {row['items']:>6,} items: "
                f"{row['events_per_s']:>7,.0f} events/s, peak RSS {row['peak_rss_mib']:,.0f} MiB "
                f"(µs/event: {parts})",
                flush=True,
            )
    pooled = rows[0]
    return {
        "size": size,
        "device": device,
        "rows": rows,
        "goal": {
            "pooled_events_per_s": pooled["events_per_s"],
            "met": pooled["events_per_s"] >= 5_000,
        },
    }
