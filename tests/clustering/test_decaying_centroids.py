"""DecayingCentroids: decay, lifecycle, and the mergeable deltas and snapshots."""

from __future__ import annotations

import math
import struct

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.clustering import (
    NO_CLUSTER,
    PROVISIONAL_ID_START,
    ClusterDelta,
    ClusterSnapshot,
    DecayingCentroids,
)
from models.clustering.cluster_codec import FORMAT_VERSION
from models.settings import EngineSettings

DIM = 8
N_SEEDED = 4
H = 3600.0
T0 = 1_700_000_000.0


def direction(k: int, dim: int = DIM) -> np.ndarray:
    return np.eye(dim)[k]


def seeded_snapshot(points_each: int = 50) -> ClusterSnapshot:
    """An authority holding four orthogonal clusters (ids 0-3), each of weight 50 at T0."""
    model = DecayingCentroids(half_life_s=H)
    rng = np.random.default_rng(0)
    for k in range(N_SEEDED):
        X = direction(k) + 0.01 * rng.normal(size=(points_each, DIM))
        model.learn_predict_many(X, T0)
    snapshot = model.snapshot()
    assert snapshot.ids.tolist() == list(range(N_SEEDED))
    return snapshot


SEEDED = seeded_snapshot()


def stats_at(model: DecayingCentroids, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    snapshot = model.snapshot()
    sums, weights = snapshot.decayed(t)
    return snapshot.ids, sums, weights


# ----------------------------------------------------------------------------- basics


def test_defaults_are_the_engine_settings() -> None:
    settings_ = EngineSettings()
    model = DecayingCentroids()
    assert model.half_life_s == settings_.cluster_half_life_s
    assert model.k_max == settings_.cluster_k_max
    assert model.new_threshold == settings_.cluster_new_threshold
    assert model.merge_threshold == settings_.cluster_merge_threshold
    assert model.retire_weight == settings_.cluster_retire_weight


def test_weight_halves_every_half_life() -> None:
    model = DecayingCentroids(half_life_s=H)
    model.learn_predict_one(direction(0), t=T0, w=2.0)
    assert model.weights(T0).tolist() == [2.0]
    assert model.weights(T0 + H).tolist() == [1.0]
    assert model.weights(T0 + 3 * H).tolist() == [0.25]


def test_order_of_points_does_not_change_the_sums() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, N_SEEDED, size=300)
    X = np.eye(DIM)[labels] + 0.1 * rng.normal(size=(300, DIM))
    t = T0 + rng.uniform(0, 5 * H, size=300)
    w = rng.uniform(0.5, 3.0, size=300)
    in_order, shuffled = (DecayingCentroids.from_snapshot(SEEDED) for _ in range(2))
    assert in_order.learn_predict_many(X, t, w).tolist() == labels.tolist()
    perm = rng.permutation(300)
    assert shuffled.learn_predict_many(X[perm], t[perm], w[perm]).tolist() == labels[perm].tolist()
    for a, b in zip(stats_at(in_order, T0 + 5 * H), stats_at(shuffled, T0 + 5 * H), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_landmark_moves_before_the_exponent_overflows() -> None:
    model = DecayingCentroids(half_life_s=1.0, chunk_size=7)
    t = np.arange(0.0, 2001.0)  # 2000 half-lives: 2^2000 would overflow a float64
    model.learn_predict_many(np.tile(direction(0), (len(t), 1)), t)
    assert model.landmark is not None and model.landmark > 1000.0
    (weight,) = model.weights(2000.0)
    assert math.isclose(weight, 2.0, rel_tol=1e-9)  # sum of 2^-k, k = 0..2000
    assert np.all(np.isfinite(model.snapshot().sums))


def test_centroids_are_unit_directions() -> None:
    model = DecayingCentroids(half_life_s=H)
    model.learn_predict_many(np.array([[3.0, 0.0, 0.0], [2.0, 0.2, 0.0], [0.0, 0.0, 5.0]]), T0)
    ids, centroids = model.centroids()
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(model.centroid(1), [0, 0, 1], atol=1e-7)
    assert model.centroid(99) is None


def test_prediction_edge_cases() -> None:
    model = DecayingCentroids()
    assert model.predict_many(np.ones((2, 3))).tolist() == [NO_CLUSTER, NO_CLUSTER]
    ids, sims = model.similarities(np.ones((2, 3)))
    assert ids.shape == (0,) and sims.shape == (2, 0)
    model.learn_predict_many(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), T0)
    rows = np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert model.predict_many(rows).tolist() == [NO_CLUSTER, NO_CLUSTER, 1, 0]
    ids, sims = model.similarities(np.array([[2.0, 0.0, 0.0]]))
    np.testing.assert_allclose(sims, [[1.0, 0.0]], atol=1e-7)


def test_learning_rejects_what_it_cannot_place() -> None:
    model = DecayingCentroids()
    with pytest.raises(ValueError, match="all zeros or not finite"):
        model.learn_predict_many(np.array([[1.0, 0.0], [0.0, 0.0]]), T0)
    with pytest.raises(ValueError, match="event times must be finite"):
        model.learn_predict_one(np.array([1.0, 0.0]), t=float("nan"))
    with pytest.raises(ValueError, match="shape"):
        model.learn_predict_many(np.ones((3, 2)), t=np.ones(2))
    with pytest.raises(ValueError, match="new_threshold < merge_threshold"):
        DecayingCentroids(new_threshold=0.9, merge_threshold=0.5)


# ----------------------------------------------------------------------------- lifecycle


def test_two_new_interests_inside_one_chunk_open_two_clusters() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, size=200)
    X = np.eye(DIM)[truth] + 0.3 * rng.normal(size=(200, DIM)) / math.sqrt(DIM)
    model = DecayingCentroids()
    labels = model.learn_predict_many(X, T0 + np.arange(200.0))
    assert model.n_clusters == 2
    assert labels.tolist() == np.where(truth == truth[0], 0, 1).tolist()


def test_ids_only_grow_and_are_never_reused() -> None:
    model = DecayingCentroids(half_life_s=H, maintenance_every=1)
    assert model.learn_predict_many(np.stack([direction(0), direction(1)]), T0).tolist() == [0, 1]
    # Cluster 0 gets nothing for 10 half-lives: its weight 2^-10 < 0.05 and it retires.
    model.learn_predict_one(direction(1), t=T0 + 10 * H)
    assert model.ids.tolist() == [1]
    assert model.learn_predict_one(direction(0), t=T0 + 10 * H) == 2
    events = [(e.kind, e.cluster_id) for e in model.pop_events()]
    assert events == [("born", 0), ("born", 1), ("retired", 0), ("born", 2)]
    assert model.pop_events() == []


def test_at_k_max_only_a_cluster_weaker_than_the_point_is_replaced() -> None:
    model = DecayingCentroids(half_life_s=H, k_max=2)
    model.learn_predict_many(np.stack([direction(0), direction(1)]), T0, w=np.array([1.0, 10.0]))
    # Two half-lives on, cluster 0 weighs 0.25 (< one point), cluster 1 weighs 2.5.
    assert model.learn_predict_one(direction(2), t=T0 + 2 * H) == 2
    assert model.ids.tolist() == [1, 2]
    # Now both weigh at least one point: a far point joins its nearest cluster instead.
    x = direction(3) + 0.1 * direction(2)
    assert model.learn_predict_one(x, t=T0 + 2 * H) == 2
    assert model.ids.tolist() == [1, 2]
    events = [(e.kind, e.cluster_id) for e in model.pop_events()]
    assert events == [("born", 0), ("born", 1), ("retired", 0), ("born", 2)]
    # A worker never replaces: its far point joins the nearest cluster.
    worker = DecayingCentroids(half_life_s=H, k_max=1, role="worker")
    worker.learn_predict_one(direction(0), t=T0)
    assert worker.learn_predict_one(direction(1), t=T0 + 20 * H) == worker.ids[0]


def converging_pair(model: DecayingCentroids) -> None:
    """Open two clusters 66° apart, then feed points between them until their centroids meet."""
    a = direction(0)
    b = 0.4 * direction(0) + math.sqrt(1 - 0.16) * direction(1)  # cosine 0.4 < new_threshold
    assert model.learn_predict_many(np.stack([a, b]), T0).tolist() == [0, 1]
    middle = (a + b) / np.linalg.norm(a + b)
    X = np.array([middle + 0.05 * (a if i % 2 else b) for i in range(100)])
    model.learn_predict_many(X, np.linspace(T0, T0 + H, 100))


def test_near_duplicate_clusters_merge_into_the_heavier() -> None:
    model = DecayingCentroids(half_life_s=H, maintenance_every=8)
    converging_pair(model)
    assert model.ids.tolist() == [0]
    merged = [e for e in model.pop_events() if e.kind == "merged"]
    assert [(e.cluster_id, e.other_id) for e in merged] == [(1, 0)]
    # Increments still addressed to the absorbed id are added to the survivor.
    before = model.weights(T0 + H)[0]
    model.apply_delta(
        ClusterDelta(
            landmark=model.landmark,
            half_life_s=H,
            dim=DIM,
            ids=[1],
            sums=[direction(0)],
            weights=[1.0],
            n_points=1,
            t_min=T0,
            t_max=T0 + H,
        )
    )
    assert model.ids.tolist() == [0]
    assert model.weights(T0 + H)[0] == pytest.approx(before + 0.5)
    snapshot = model.snapshot()
    redirects = zip(snapshot.redirect_from.tolist(), snapshot.redirect_to.tolist(), strict=True)
    assert dict(redirects) == {1: 0}


# ----------------------------------------------------------------------------- distribution


point_strategy = st.tuples(
    st.integers(0, N_SEEDED - 1),
    hnp.arrays(np.float64, DIM, elements=st.floats(-0.2, 0.2)),
    st.floats(0.0, 2 * H),
    st.floats(0.1, 5.0),
)


def as_stream(points: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    labels = np.array([p[0] for p in points], dtype=np.int64)
    X = np.array([direction(k) + noise for k, noise, _, _ in points]).reshape(-1, DIM)
    t = T0 + np.array([p[2] for p in points], dtype=np.float64)
    w = np.array([p[3] for p in points], dtype=np.float64)
    return labels, X, t, w


@settings(max_examples=60, deadline=None)
@given(st.lists(point_strategy, max_size=25), st.lists(point_strategy, max_size=25))
def test_two_workers_deltas_add_up_to_one_worker_seeing_both(
    stream_a: list, stream_b: list
) -> None:
    labels_a, X_a, t_a, w_a = as_stream(stream_a)
    labels_b, X_b, t_b, w_b = as_stream(stream_b)
    worker_1 = DecayingCentroids.from_snapshot(SEEDED, role="worker")
    worker_2 = DecayingCentroids.from_snapshot(SEEDED, role="worker")
    assert worker_1.learn_predict_many(X_a, t_a, w_a).tolist() == labels_a.tolist()
    assert worker_2.learn_predict_many(X_b, t_b, w_b).tolist() == labels_b.tolist()

    single = DecayingCentroids.from_snapshot(SEEDED)
    X, t, w = np.vstack([X_a, X_b]), np.concatenate([t_a, t_b]), np.concatenate([w_a, w_b])
    for i in np.argsort(t, kind="stable"):
        single.learn_predict_one(X[i], t=float(t[i]), w=float(w[i]))

    authority = DecayingCentroids.from_snapshot(SEEDED)
    for worker in (worker_1, worker_2):
        authority.apply_delta(ClusterDelta.from_bytes(worker.pop_delta().to_bytes()))
    assert authority.version == SEEDED.version + bool(len(X_a)) + bool(len(X_b))

    query_t = T0 + 3 * H
    ids, sums, weights = stats_at(authority, query_t)
    single_ids, single_sums, single_weights = stats_at(single, query_t)
    assert ids.tolist() == single_ids.tolist() == list(range(N_SEEDED))
    np.testing.assert_allclose(weights, single_weights, rtol=1e-10)
    np.testing.assert_allclose(sums, single_sums, rtol=1e-10, atol=1e-12)


def delta_strategy(dim: int = 3) -> st.SearchStrategy[ClusterDelta]:
    finite = st.floats(-10.0, 10.0)

    @st.composite
    def build(draw: st.DrawFn) -> ClusterDelta:
        ids = draw(st.lists(st.integers(0, 6), unique=True, max_size=4))
        n_proposals = draw(st.integers(0, 2))
        centroids = draw(hnp.arrays(np.float64, (n_proposals, dim), elements=finite))
        t_min = draw(st.floats(T0, T0 + 5 * H))
        return ClusterDelta(
            landmark=draw(st.floats(T0, T0 + 10 * H)),
            half_life_s=H,
            dim=dim,
            ids=np.array(ids, dtype=np.int64),
            sums=draw(hnp.arrays(np.float64, (len(ids), dim), elements=finite)),
            weights=draw(hnp.arrays(np.float64, len(ids), elements=st.floats(0.01, 10.0))),
            proposal_ids=PROVISIONAL_ID_START + np.arange(n_proposals),
            proposal_centroids=centroids,
            proposal_sums=centroids * 2.0,
            proposal_weights=draw(
                hnp.arrays(np.float64, n_proposals, elements=st.floats(0.01, 10.0))
            ),
            proposal_born_t=draw(
                hnp.arrays(np.float64, n_proposals, elements=st.floats(T0, T0 + H))
            ),
            n_points=draw(st.integers(0, 100)),
            t_min=t_min,
            t_max=t_min + draw(st.floats(0.0, H)),
            base_version=draw(st.integers(0, 9)),
        )

    return build()


def proposal_rows(delta: ClusterDelta) -> np.ndarray:
    """Proposals as rows sorted lexicographically, to compare them as a multiset."""
    rows = np.column_stack(
        [
            delta.proposal_born_t,
            delta.proposal_weights,
            delta.proposal_ids,
            delta.proposal_sums,
            delta.proposal_centroids,
        ]
    )
    return rows[np.lexsort(rows.T[::-1])] if len(rows) else rows


def assert_same_delta(x: ClusterDelta, y: ClusterDelta) -> None:
    assert x.landmark == y.landmark and x.dim == y.dim
    assert (x.n_points, x.t_min, x.t_max, x.base_version) == (
        y.n_points,
        y.t_min,
        y.t_max,
        y.base_version,
    )
    x_order, y_order = np.argsort(x.ids), np.argsort(y.ids)
    assert x.ids[x_order].tolist() == y.ids[y_order].tolist()
    np.testing.assert_allclose(x.sums[x_order], y.sums[y_order], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(x.weights[x_order], y.weights[y_order], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(proposal_rows(x), proposal_rows(y), rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(delta_strategy(), delta_strategy(), delta_strategy())
def test_merging_deltas_is_commutative_and_associative(
    a: ClusterDelta, b: ClusterDelta, c: ClusterDelta
) -> None:
    assert_same_delta(a + b, b + a)
    assert_same_delta((a + b) + c, a + (b + c))
    assert_same_delta(a + ClusterDelta.empty(H, dim=3), a)


@settings(max_examples=60, deadline=None)
@given(delta_strategy())
def test_delta_bytes_round_trip(delta: ClusterDelta) -> None:
    back = ClusterDelta.from_bytes(delta.to_bytes())
    for name in delta.__dataclass_fields__:
        ours, theirs = getattr(delta, name), getattr(back, name)
        if isinstance(ours, np.ndarray):
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        else:
            assert ours == theirs


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, (12, 4), elements=st.floats(0.1, 1.0)),
    st.lists(st.floats(0.0, 10 * H), min_size=12, max_size=12),
)
def test_snapshot_bytes_round_trip(X: np.ndarray, offsets: list[float]) -> None:
    model = DecayingCentroids(
        half_life_s=H, maintenance_every=4, new_threshold=0.95, merge_threshold=0.99
    )
    model.learn_predict_many(X, T0 + np.sort(offsets))
    snapshot = model.snapshot()
    back = ClusterSnapshot.from_bytes(snapshot.to_bytes())
    for name in snapshot.__dataclass_fields__:
        ours, theirs = getattr(snapshot, name), getattr(back, name)
        if isinstance(ours, np.ndarray):
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        else:
            assert ours == theirs
    restored = DecayingCentroids.from_snapshot(back)
    assert restored.predict_many(X).tolist() == model.predict_many(X).tolist()


def test_bytes_from_elsewhere_are_rejected_with_a_reason() -> None:
    data = SEEDED.to_bytes()
    assert data[:4] == b"DRCS" and struct.unpack_from("<H", data, 4)[0] == FORMAT_VERSION
    future = data[:4] + struct.pack("<H", FORMAT_VERSION + 1) + data[6:]
    with pytest.raises(ValueError, match="unsupported cluster snapshot format version 2"):
        ClusterSnapshot.from_bytes(future)
    with pytest.raises(ValueError, match="magic b'DRCS', expected b'DRCD'"):
        ClusterDelta.from_bytes(data)
    with pytest.raises(ValueError, match="truncated"):
        ClusterSnapshot.from_bytes(data[:-8])
    with pytest.raises(ValueError, match="trailing bytes"):
        ClusterSnapshot.from_bytes(data + b"\0")
    with pytest.raises(ValueError, match="shorter than the header"):
        ClusterDelta.from_bytes(b"DRC")


def test_proposals_from_two_workers_become_one_authority_cluster() -> None:
    authority = DecayingCentroids.from_snapshot(SEEDED)
    workers = [DecayingCentroids.from_snapshot(SEEDED, role="worker") for _ in range(2)]
    rng = np.random.default_rng(3)
    for worker in workers:
        X = direction(5) + 0.05 * rng.normal(size=(10, DIM))
        labels = worker.learn_predict_many(X, T0 + H)
        assert labels.tolist() == [PROVISIONAL_ID_START] * 10  # provisional, local only
        authority.apply_delta(worker.pop_delta())
    assert authority.ids.tolist() == [0, 1, 2, 3, SEEDED.next_id]
    assert [(e.kind, e.cluster_id) for e in authority.pop_events()] == [("born", SEEDED.next_id)]
    assert authority.weights(T0 + H)[-1] == pytest.approx(20.0)
    for worker in workers:
        worker.load_snapshot(authority.snapshot())
        assert worker.ids.tolist() == authority.ids.tolist()  # sent proposals are not kept twice
        assert worker.predict_one(direction(5)) == SEEDED.next_id
        assert worker.version == authority.version == 2
        assert worker.pop_delta().is_empty


def test_unsent_increments_survive_a_snapshot_and_are_sent_once() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, N_SEEDED, size=60)
    X = np.eye(DIM)[labels] + 0.05 * rng.normal(size=(60, DIM))
    X[50:] = direction(6) + 0.05 * rng.normal(size=(10, DIM))  # a new interest, not yet sent
    t = T0 + np.sort(rng.uniform(0, H, size=60))
    single = DecayingCentroids.from_snapshot(SEEDED)
    single.learn_predict_many(X, t)

    authority = DecayingCentroids.from_snapshot(SEEDED)
    worker = DecayingCentroids.from_snapshot(SEEDED, role="worker")
    worker.learn_predict_many(X[:30], t[:30])
    authority.apply_delta(worker.pop_delta())
    worker.learn_predict_many(X[30:], t[30:])  # learned, not yet sent
    worker.load_snapshot(authority.snapshot())
    # Local view: the authority's clusters plus what the worker has not sent.
    assert worker.ids.tolist() == [0, 1, 2, 3, PROVISIONAL_ID_START]
    _, _, local = stats_at(worker, T0 + H)
    _, _, expected = stats_at(single, T0 + H)
    np.testing.assert_allclose(local, expected, rtol=1e-10)
    authority.apply_delta(worker.pop_delta())
    for ours, theirs in zip(stats_at(authority, T0 + H), stats_at(single, T0 + H), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_applying_a_merged_delta_equals_applying_its_parts() -> None:
    rng = np.random.default_rng(5)
    deltas = []
    for start in (0.0, 30 * H, 70 * H):  # landmarks far apart: the merge must rescale
        worker = DecayingCentroids.from_snapshot(SEEDED, role="worker")
        labels = rng.integers(0, N_SEEDED, size=20)
        worker.learn_predict_many(
            np.eye(DIM)[labels] + 0.05 * rng.normal(size=(20, DIM)), T0 + start
        )
        deltas.append(worker.pop_delta())
    one_by_one, merged = (DecayingCentroids.from_snapshot(SEEDED) for _ in range(2))
    for delta in deltas:
        one_by_one.apply_delta(delta)
    merged.apply_delta(deltas[2] + deltas[0] + deltas[1])
    query_t = T0 + 70 * H
    for ours, theirs in zip(stats_at(one_by_one, query_t), stats_at(merged, query_t), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-300)


def test_apply_delta_guards() -> None:
    worker = DecayingCentroids.from_snapshot(SEEDED, role="worker")
    with pytest.raises(ValueError, match="needs role='authority'"):
        worker.apply_delta(ClusterDelta.empty(H, DIM))
    authority = DecayingCentroids.from_snapshot(SEEDED)
    authority.apply_delta(ClusterDelta.empty(H, DIM))
    assert authority.version == SEEDED.version  # nothing applied, no new version
    with pytest.raises(ValueError, match=r"half_life_s=60\.0"):
        authority.apply_delta(ClusterDelta.empty(60.0, DIM))
    with pytest.raises(ValueError, match="half_life_s"):
        DecayingCentroids(half_life_s=60.0).load_snapshot(SEEDED)
    worker.learn_predict_one(direction(0), t=T0)
    with pytest.raises(ValueError, match="dimension"):
        authority.apply_delta(worker.pop_delta().merge(ClusterDelta.empty(H, DIM + 1)))
