"""Clustering on drifting streams: driftrec's ``DecayingCentroids`` against River's clusterers.

Streams: :func:`models.drift_streams.drifting_clusters` with ground truth, in
384-d and 32-d, at noise 0.5 (cosine to the centre 0.89) and 1.0 (0.71);
20 clusters, and halfway through 4 centres rotate by 90°, 4 clusters fade out
and 4 new ones fade in. Every method sees the points in time order and labels
each one as it learns it (prequential). Scores: the adjusted Rand index of
those online labels on the first half (before the drift) and on the last
quarter (after it), and of the final model's labels for the last quarter
(``final``: what a snapshot taken at the end says, which matters for
DBSTREAM and CluStream, whose online labels are renumbered when they
recluster). Points that a method leaves unassigned count as one extra
cluster. Throughput is learn + label, points/s, one thread.

River methods too slow for the whole stream run on every k-th point of the
same stream (same time span and drift, fewer points); the table says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import cluster
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from models.clustering import DecayingCentroids, RiverClusterer
from models.drift_streams import DriftStream, drifting_clusters, expected_cosine


@dataclass(frozen=True)
class Method:
    """A clusterer to run: its name, a factory, and the most points it is given."""

    name: str
    make: Callable[[DriftStream], Any]
    max_points: int | None = None
    recommended: bool = False  # driftrec's setting for this dimension (scored for the goal)


def _euclid_to_centre(noise: float) -> float:
    """Expected distance of a unit point to its (unit) centre: ``sqrt(2 - 2 cos)``."""
    return float(np.sqrt(2.0 - 2.0 * expected_cosine(noise)[0]))


def methods(dim: int, river_points: int, slow_points: int) -> list[Method]:
    """driftrec's clusterer and the River configurations compared with it.

    driftrec's defaults are set for 384-d sentence embeddings. In 32-d, random
    centres are much less orthogonal (cosine ± 0.18) and a point's cosine to
    its centre varies more, so there it also runs with a higher birth
    threshold and a lower merge threshold (``new_threshold=0.5,
    merge_threshold=0.8``), the setting we would give a user with
    low-dimensional vectors; that row is the one scored for the goal.

    River's ``KMeans`` needs ``mu=0, sigma≈0.001`` for unit vectors (its
    defaults draw centres far from the data and put every point in one
    cluster); it is given the true k = 20. The radii of DenStream and
    DBSTREAM are set from the expected point-to-centre distance.
    """
    out = [Method("driftrec DecayingCentroids()", lambda s: DecayingCentroids(), None, dim >= 128)]
    if dim < 128:
        out.append(
            Method(
                "driftrec DecayingCentroids(new=0.5, merge=0.8)",
                lambda s: DecayingCentroids(new_threshold=0.5, merge_threshold=0.8),
                None,
                True,
            )
        )
    for halflife in (0.1, 0.5, 0.9):
        out.append(
            Method(
                f"River KMeans(k=20, halflife={halflife})",
                lambda s, h=halflife: RiverClusterer(
                    cluster.KMeans(n_clusters=20, halflife=h, mu=0, sigma=0.001, seed=0)
                ),
                river_points,
            )
        )
    out += [
        Method(
            "River STREAMKMeans(k=20, chunk=100)",
            lambda s: RiverClusterer(
                cluster.STREAMKMeans(
                    chunk_size=100, n_clusters=20, halflife=0.5, mu=0, sigma=0.001, seed=0
                )
            ),
            river_points,
        ),
        Method(
            "River DenStream",
            lambda s: RiverClusterer(
                cluster.DenStream(
                    decaying_factor=0.01,
                    beta=0.5,
                    mu=2.5,
                    epsilon=1.2 * _euclid_to_centre(s.noise),
                    n_samples_init=200,
                )
            ),
            slow_points,
        ),
        Method(
            "River DBSTREAM",
            lambda s: RiverClusterer(
                cluster.DBSTREAM(
                    clustering_threshold=1.2 * _euclid_to_centre(s.noise),
                    fading_factor=0.001,
                    cleanup_interval=200,
                    minimum_weight=1.0,
                )
            ),
            slow_points,
        ),
    ]
    return out


def _ari(y: np.ndarray, labels: np.ndarray) -> float:
    return float(adjusted_rand_score(y, labels)) if len(y) else float("nan")


def run_method(method: Method, stream: DriftStream) -> dict[str, Any]:
    """Run one method over ``stream`` (thinned to its point cap) and score it."""
    step = 1
    if method.max_points is not None and len(stream) > method.max_points:
        step = int(np.ceil(len(stream) / method.max_points))
    index = np.arange(0, len(stream), step)
    X, y, t = stream.X[index], stream.y[index], stream.t[index]
    model = method.make(stream)
    with threadpool_limits(1):
        started = time.perf_counter()
        labels = model.learn_predict_many(X, t)
        seconds = time.perf_counter() - started
        position = np.arange(len(index)) / len(index)
        first, last = position < 0.5, position >= 0.75
        final = model.predict_many(X[last])
    n_clusters = getattr(model, "n_clusters", None)
    if n_clusters is None:
        n_clusters = len(np.unique(final[final >= 0]))
    return {
        "method": method.name,
        "points": len(index),
        "every": step,
        "points_per_s": len(index) / seconds,
        "ari_first_half": _ari(y[first], labels[first]),
        "ari_last_quarter": _ari(y[last], labels[last]),
        "ari_final_last_quarter": _ari(y[last], final),
        "clusters_at_end": int(n_clusters),
        "recommended": method.recommended,
    }


def run(size: str = "full", progress: bool = True) -> dict[str, Any]:
    """All methods on the four streams; ``size='tiny'`` is the smoke-test size."""
    n_points, river_points, slow_points = (
        (20_000, 10_000, 2_000) if size == "full" else (600, 300, 150)
    )
    results = []
    for dim in (384, 32):
        for noise in (0.5, 1.0):
            stream = drifting_clusters(n_points=n_points, dim=dim, noise=noise, seed=0)
            for method in methods(dim, river_points, slow_points):
                row = run_method(method, stream)
                row.update(dim=dim, noise=noise, stream_points=n_points)
                results.append(row)
                if progress:
                    print(
                        f"  {dim:>3}-d noise {noise}: {row['method']:<48} "
                        f"{row['points_per_s']:>10,.0f} pts/s  ARI first half "
                        f"{row['ari_first_half']:.3f}  last quarter "
                        f"{row['ari_last_quarter']:.3f}  final {row['ari_final_last_quarter']:.3f}"
                        f"  ({row['points']:,} pts)",
                        flush=True,
                    )
    return {"size": size, "stream_points": n_points, "rows": results, "goal": _goal(results)}


def _goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal: ≥100× River KMeans at 384-d, ARI ≥ River's best on every stream.

    River's best on the last quarter takes the better of its online and final
    labels, so renumbering methods are not penalised for renumbering.
    """
    speedups, shortfalls = [], []
    for row in (r for r in rows if r["recommended"]):
        river = [
            r
            for r in rows
            if r["dim"] == row["dim"]
            and r["noise"] == row["noise"]
            and r["method"].startswith("River")
        ]
        kmeans = [r["points_per_s"] for r in river if r["method"].startswith("River KMeans")]
        if row["dim"] == 384 and kmeans:
            speedups.append(row["points_per_s"] / max(kmeans))
        best_first = max(r["ari_first_half"] for r in river)
        best_last = max(max(r["ari_last_quarter"], r["ari_final_last_quarter"]) for r in river)
        shortfalls.append(
            max(best_first - row["ari_first_half"], best_last - row["ari_last_quarter"])
        )
    return {
        "min_speedup_vs_fastest_kmeans_384d": min(speedups) if speedups else None,
        "worst_ari_shortfall_vs_river_best": max(shortfalls) if shortfalls else None,
        "met": bool(speedups and min(speedups) >= 100 and max(shortfalls) <= 0),
    }
