"""One test suite that every clusterer runs through, ours and River's alike.

Each entry of ``ESTIMATORS`` builds a fresh clusterer from a seed; every test
is parametrised over all of them (River's ``_unit_test_params`` idea).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
from river import cluster
from sklearn.metrics import adjusted_rand_score

from models.clustering import NO_CLUSTER, Clusterer, DecayingCentroids, RiverClusterer

Factory = Callable[[int], Clusterer]

DIM = 8
N_PER_BLOB = 60

ESTIMATORS: list = [
    pytest.param(lambda seed: DecayingCentroids(), id="DecayingCentroids"),
    pytest.param(
        lambda seed: DecayingCentroids(chunk_size=16, maintenance_every=16, half_life_s=3600.0),
        id="DecayingCentroids-small-chunks",
    ),
    pytest.param(
        lambda seed: RiverClusterer(
            cluster.KMeans(n_clusters=5, halflife=0.5, mu=0, sigma=0.001, seed=seed)
        ),
        id="River-KMeans",
    ),
    pytest.param(
        lambda seed: RiverClusterer(
            cluster.STREAMKMeans(
                chunk_size=10, n_clusters=5, halflife=0.5, mu=0, sigma=0.001, seed=seed
            )
        ),
        id="River-STREAMKMeans",
    ),
    pytest.param(
        lambda seed: RiverClusterer(
            cluster.DBSTREAM(
                clustering_threshold=0.5,
                fading_factor=0.01,
                cleanup_interval=10,
                intersection_factor=0.3,
                minimum_weight=1.0,
            )
        ),
        id="River-DBSTREAM",
    ),
    pytest.param(
        lambda seed: RiverClusterer(
            cluster.DenStream(
                decaying_factor=0.01, beta=0.5, mu=2.5, epsilon=0.5, n_samples_init=30
            )
        ),
        id="River-DenStream",
    ),
    pytest.param(
        lambda seed: RiverClusterer(
            cluster.CluStream(
                n_macro_clusters=3,
                max_micro_clusters=10,
                time_gap=20,
                seed=seed,
                halflife=0.5,
                mu=0,
                sigma=0.001,
            )
        ),
        id="River-CluStream",
    ),
]


def three_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled unit points around three orthogonal directions, with ascending event times."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(3), N_PER_BLOB))
    X = np.eye(DIM)[y] + 0.05 * rng.normal(size=(len(y), DIM))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    t = 1_700_000_000.0 + 60.0 * np.arange(len(y))
    return X.astype(np.float32), y, t


@pytest.fixture(params=ESTIMATORS)
def make(request: pytest.FixtureRequest) -> Factory:
    return request.param


def test_conforms_to_the_protocol(make: Factory) -> None:
    assert isinstance(make(0), Clusterer)


def test_learn_returns_nothing_and_learns_as_learn_predict_does(make: Factory) -> None:
    """River's vocabulary: learn_* return None; learn_predict_* learn the same and say where
    each point went."""
    X, _, t = three_blobs()
    learner, teller = make(0), make(0)
    assert learner.learn_one(X[0], t=float(t[0])) is None
    assert learner.learn_many(X[1:60], t[1:60]) is None
    teller.learn_predict_one(X[0], t=float(t[0]))
    teller.learn_predict_many(X[1:60], t[1:60])
    assert learner.predict_many(X).tolist() == teller.predict_many(X).tolist()


def test_fresh_model_predicts_no_cluster(make: Factory) -> None:
    X, _, _ = three_blobs()
    model = make(0)
    assert model.predict_one(X[0]) is None
    assert model.predict_many(X[:3]).tolist() == [NO_CLUSTER] * 3


def test_one_at_a_time_types(make: Factory) -> None:
    X, _, t = three_blobs()
    model = make(0)
    labels = [model.learn_predict_one(x, t=float(ti)) for x, ti in zip(X[:40], t[:40], strict=True)]
    assert all(type(label) is int for label in labels)
    model.learn_predict_one(X[40], t=float(t[40]), w=2.0)
    prediction = model.predict_one(X[41])
    assert prediction is None or type(prediction) is int


def test_many_shapes_and_dtypes(make: Factory) -> None:
    X, _, t = three_blobs()
    model = make(0)
    labels = model.learn_predict_many(X[:50], t[:50])
    assert labels.shape == (50,) and labels.dtype == np.int64
    labels = model.learn_predict_many(X[50:60], float(t[60]), w=np.full(10, 0.5))
    assert labels.shape == (10,) and labels.dtype == np.int64
    predicted = model.predict_many(X)
    assert predicted.shape == (len(X),) and predicted.dtype == np.int64
    assert model.learn_predict_many(X[:0], t[:0]).shape == (0,)


def test_predict_does_not_change_the_model(make: Factory) -> None:
    X, _, t = three_blobs()
    model = make(0)
    model.learn_predict_many(X[:90], t[:90])
    untouched = copy.deepcopy(model)
    first = model.predict_many(X)
    for x in X[:20]:
        model.predict_one(x)
    assert model.predict_many(X).tolist() == first.tolist()
    assert (
        model.learn_predict_many(X[90:], t[90:]).tolist()
        == untouched.learn_predict_many(X[90:], t[90:]).tolist()
    )
    assert model.predict_many(X).tolist() == untouched.predict_many(X).tolist()


def test_three_separated_blobs_get_three_labels(make: Factory) -> None:
    X, y, t = three_blobs()
    model = make(0)
    model.learn_predict_many(X, t)
    predicted = model.predict_many(X)
    majority = []
    for blob in range(3):
        labels, counts = np.unique(predicted[y == blob], return_counts=True)
        majority.append(int(labels[counts.argmax()]))
        assert counts.max() >= 0.95 * (y == blob).sum(), f"blob {blob} split: {labels}, {counts}"
    assert len(set(majority)) == 3 and NO_CLUSTER not in majority


def test_same_seed_same_labels(make: Factory) -> None:
    X, _, t = three_blobs(seed=3)
    first, second = make(7), make(7)
    assert first.learn_predict_many(X, t).tolist() == second.learn_predict_many(X, t).tolist()
    assert first.predict_many(X).tolist() == second.predict_many(X).tolist()


def test_learn_many_partitions_like_learn_one(make: Factory) -> None:
    X, _, t = three_blobs(seed=4)
    batch, single = make(0), make(0)
    many = batch.learn_predict_many(X, t)
    one = [single.learn_predict_one(x, t=float(ti)) for x, ti in zip(X, t, strict=True)]
    assert adjusted_rand_score(many, one) == 1.0
    assert adjusted_rand_score(batch.predict_many(X), single.predict_many(X)) == 1.0


def test_rejects_points_of_another_dimension(make: Factory) -> None:
    X, _, t = three_blobs()
    model = make(0)
    model.learn_predict_many(X[:40], t[:40])
    with pytest.raises(ValueError, match="dimension"):
        model.learn_predict_one(np.ones(DIM + 1), t=float(t[40]))
    with pytest.raises(ValueError, match="weights must be"):
        model.learn_predict_many(X[:2], t[:2], w=np.array([1.0, -1.0]))
