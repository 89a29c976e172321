"""Clustering quality on synthetic drifting streams with ground truth.

Prequential labels (those ``learn_predict_many`` returns, each given before the
point is learned into the centroids of later chunks) are scored with the
adjusted Rand index before the drift and on the last quarter, after it.
"""

from __future__ import annotations

import numpy as np
import pytest
from river import cluster
from sklearn.metrics import adjusted_rand_score

from models.clustering import DecayingCentroids, RiverClusterer
from models.drift_streams import DAY_S, DriftStream, drifting_clusters

#: Floors below the ARI measured (1.000 / 0.999+ at both noise levels, seeds 0-2), so not flaky.
ARI_FLOOR = 0.9


def ari(stream: DriftStream, labels: np.ndarray, start: float, stop: float) -> float:
    part = stream.between(start, stop)
    return float(adjusted_rand_score(stream.y[part], labels[part]))


def majority_label(labels: np.ndarray) -> int:
    values, counts = np.unique(labels, return_counts=True)
    return int(values[counts.argmax()])


@pytest.mark.parametrize("noise", [0.5, 1.0], ids=["tight", "loose"])
def test_default_model_follows_a_384d_drifting_stream(noise: float) -> None:
    stream = drifting_clusters(n_points=20_000, dim=384, n_clusters=20, noise=noise, seed=0)
    model = DecayingCentroids()  # the engine's defaults: 3-day half-life over a 60-day stream
    labels = model.learn_predict_many(stream.X, stream.t)
    assert ari(stream, labels, 0.0, 0.5) >= ARI_FLOOR
    assert ari(stream, labels, 0.75, 1.0) >= ARI_FLOOR
    assert model.n_clusters <= model.k_max


def test_faded_interests_retire_and_new_ones_stay() -> None:
    stream = drifting_clusters(n_points=20_000, dim=384, noise=1.0, seed=1)
    model = DecayingCentroids(half_life_s=1 * DAY_S)
    labels = model.learn_predict_many(stream.X, stream.t)
    early, late = stream.between(0.0, 0.5), stream.between(0.75, 1.0)
    live = set(model.ids.tolist())
    for label in stream.vanished:
        assert majority_label(labels[early & (stream.y == label)]) not in live
    for label in (*stream.appeared, *stream.rotated):
        assert majority_label(labels[late & (stream.y == label)]) in live
    retired = {e.cluster_id for e in model.pop_events() if e.kind == "retired"}
    assert retired >= {majority_label(labels[early & (stream.y == v)]) for v in stream.vanished}


def test_beats_river_kmeans_with_the_true_k_after_drift() -> None:
    stream = drifting_clusters(n_points=2_000, dim=384, n_clusters=20, noise=0.5, seed=0)
    ours = DecayingCentroids().learn_predict_many(stream.X, stream.t)
    kmeans = cluster.KMeans(n_clusters=20, halflife=0.5, mu=0, sigma=0.001, seed=0)
    river = RiverClusterer(kmeans).learn_predict_many(stream.X, stream.t)
    # Before the drift both find the 20 interests; after it, k-means has no free centre for
    # the interests that appear while its centres still sit on those that vanished.
    assert ari(stream, ours, 0.0, 0.5) >= ARI_FLOOR and ari(stream, river, 0.0, 0.5) >= ARI_FLOOR
    assert ari(stream, ours, 0.75, 1.0) >= ari(stream, river, 0.75, 1.0) + 0.1
