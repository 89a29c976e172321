"""Decaying centroids: global interest clusters as forward-decayed, mergeable sums.

The learner. Its lifecycle events and its messages are in
:mod:`~models.clustering.cluster_messages`, their bytes in
:mod:`~models.clustering.cluster_codec`, and how instances on several workers
exchange deltas and snapshots in :mod:`~models.clustering.centroid_federation`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from models.clustering.base import NO_CLUSTER, LearnsInBatches, check_learn_inputs, check_points
from models.clustering.centroid_federation import CentroidFederation, Role
from models.clustering.cluster_messages import (
    PROVISIONAL_ID_START,
    ClusterEvent,
    _unit_rows,
)
from models.forward_decay import RESCALE_AFTER_HALF_LIVES, decay_factor

if TYPE_CHECKING:
    from models.settings import EngineSettings

__all__ = ["DecayingCentroids"]

#: Merge redirections (absorbed id -> survivor id) remembered and published.
_MAX_REDIRECTS = 4096


# --------------------------------------------------------------------------- clusterer


class DecayingCentroids(CentroidFederation, LearnsInBatches):
    r"""Online cosine clustering whose clusters decay, are born, merge and retire with time.

    Each cluster $k$ keeps two forward-decayed sufficient statistics: the
    weighted sum of its members $S_k = \sum_i w_i g(t_i) x_i$ and their weight
    $W_k = \sum_i w_i g(t_i)$, with $g(t) = 2^{(t - L)/h}$ for a landmark event
    time $L$ and half-life $h$ (forward decay, Cormode et al. 2009). The
    plain decayed weight at event time $T$ is $W_k 2^{-(T - L)/h}$: each point
    counts half after one half-life. Its centroid direction is
    $\mu_k = S_k / \lVert S_k \rVert$ (the decay factor cancels). Because
    nothing is multiplied as time passes, updates commute: the same points in
    any order, split over any number of workers, give the same sums, and two
    workers' sums simply add. When event time runs $64h$ past $L$ the
    landmark moves forward and every sum is rescaled once, so nothing overflows.

    A point $x$ (normalised to unit length) joins the cluster of highest cosine
    $\mu_k \cdot x$ if that cosine is at least ``new_threshold``; otherwise it
    opens a new cluster. At ``k_max`` clusters a far point **replaces the
    weakest cluster if that cluster holds less decayed weight than the point
    itself** (it then carries less evidence than one fresh observation, so a
    drifting stream makes room for new interests without waiting for
    retirement), and otherwise joins its nearest cluster (existing evidence
    wins; the point moves that centroid only by its small share). Every
    ``maintenance_every`` points, clusters whose decayed weight fell under
    ``retire_weight`` retire, and pairs whose centroids have cosine at least
    ``merge_threshold`` merge (the heavier keeps its id; the lighter's sums are
    added to it). Ids are ints that only grow and are never reused.

    ``learn_predict_many`` is vectorised: points are taken in chunks of ``chunk_size``
    and assigned by one matrix product against the centroids as of the start
    of the chunk; points that would open a cluster are then handled in order,
    so that the second point of a new interest inside the same chunk joins the
    cluster the first one opened. Sums are added per cluster with one
    segmented reduction.

    **Distributed use** (:mod:`models.clustering.centroid_federation`): with
    ``role="worker"`` an instance learns as usual but never merges, retires or
    replaces clusters, and numbers the clusters it opens with provisional ids
    from :data:`PROVISIONAL_ID_START` up; :meth:`pop_delta` hands what it
    learned to the one ``role="authority"`` instance (the model agent), which
    merges deltas (:meth:`apply_delta`), maintains and publishes :meth:`snapshot`
    for workers to adopt (:meth:`load_snapshot`). A single process (the embedded
    runner) is an authority that just learns; :attr:`authoritative` says which.

    Parameters
    ----------
    half_life_s
        Event-time seconds after which a point's weight in its cluster halves.
    k_max
        Most clusters held at once.
    new_threshold
        Cosine to the nearest centroid under which a point opens a new cluster.
    merge_threshold
        Cosine between two centroids at or above which they merge; also the
        cosine at which the authority folds a proposal into an existing cluster.
    retire_weight
        Decayed weight under which a cluster retires.
    chunk_size
        Points assigned per matrix product in ``learn_predict_many``.
    maintenance_every
        Points learned between retirement / merge checks (authority only; the
        check runs at the end of a ``learn_predict_many`` chunk, so the interval is
        never shorter than ``chunk_size`` points for large batches).
    role
        ``"authority"`` (default; single process or model agent) or ``"worker"``.
    max_events
        Lifecycle events kept for :meth:`pop_events`; older ones are dropped.

    Attributes
    ----------
    version
        Count of deltas applied by the authority (adopted from a loaded
        snapshot); 0 for a model that has only learned locally.
    ids
        Live cluster ids, ascending.
    n_clusters
        Number of live clusters.

    Examples
    --------
    Two interests in three dimensions, one of them early only; later the
    stream drifts to a third interest and the early one retires.

    >>> import numpy as np
    >>> from models.clustering import ClusterDelta
    >>> rng = np.random.default_rng(0)
    >>> def near(direction, n):
    ...     return np.asarray(direction, float) + 0.1 * rng.normal(size=(n, 3))
    >>> day = 86_400.0
    >>> model = DecayingCentroids(half_life_s=day, maintenance_every=10)
    >>> model.learn_predict_many(near([1, 0, 0], 10), t=np.linspace(0, day, 10)).tolist()
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    >>> model.learn_predict_many(near([0, 1, 0], 10), t=np.linspace(0, 8 * day, 10)).tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    >>> model.learn_predict_many(near([0, 0, 1], 10), t=np.linspace(8 * day, 9 * day, 10)).tolist()
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    >>> model.ids.tolist()
    [1, 2]
    >>> [(e.kind, e.cluster_id, e.t / day) for e in model.pop_events()]
    [('born', 0, 0.0), ('born', 1, 0.0), ('born', 2, 8.0), ('retired', 0, 9.0)]
    >>> model.predict_one(np.array([0.1, 0.9, 0.0]))
    1
    >>> model.weights(9 * day).round(2).tolist()
    [1.08, 7.25]

    A worker starts from the authority's snapshot, learns, and sends a delta back:

    >>> worker = DecayingCentroids.from_snapshot(model.snapshot(), role="worker")
    >>> worker.learn_predict_many(near([0, 0, 1], 5), t=9 * day).tolist()
    [2, 2, 2, 2, 2]
    >>> model.apply_delta(ClusterDelta.from_bytes(worker.pop_delta().to_bytes()))
    >>> model.version, model.weights(9 * day).round(2).tolist()
    (1, [1.08, 12.25])

    References
    ----------
    [^1]: Cormode, G., Shkapenyuk, V., Srivastava, D. and Xu, B. (2009).
          Forward Decay: A Practical Time Decay Model for Streaming Systems. ICDE.
    [^2]: Aggarwal, C., Han, J., Wang, J. and Yu, P. (2003). A Framework for
          Clustering Evolving Data Streams (CluStream). VLDB.
    [^3]: Pal, A. et al. (2020). PinnerSage: Multi-Modal User Embedding
          Framework for Recommendations at Pinterest. KDD.
    """

    _PARAM_NAMES: ClassVar[tuple[str, ...]] = (
        "half_life_s",
        "k_max",
        "new_threshold",
        "merge_threshold",
        "retire_weight",
        "chunk_size",
        "maintenance_every",
    )

    @classmethod
    def from_settings(cls, settings: EngineSettings, role: Role = "authority") -> DecayingCentroids:
        """The clusterer as the engine's ``cluster_*`` settings configure it."""
        return cls(
            half_life_s=settings.cluster_half_life_s,
            k_max=settings.cluster_k_max,
            new_threshold=settings.cluster_new_threshold,
            merge_threshold=settings.cluster_merge_threshold,
            retire_weight=settings.cluster_retire_weight,
            role=role,
        )

    def __init__(
        self,
        half_life_s: float = 3 * 86_400.0,
        k_max: int = 64,
        new_threshold: float = 0.45,
        merge_threshold: float = 0.92,
        retire_weight: float = 0.05,
        chunk_size: int = 256,
        maintenance_every: int = 256,
        role: Role = "authority",
        max_events: int = 10_000,
    ) -> None:
        if not half_life_s > 0 or not math.isfinite(half_life_s):
            raise ValueError(f"half_life_s must be a positive number of seconds, got {half_life_s}")
        if k_max < 1:
            raise ValueError(f"k_max must be at least 1, got {k_max}")
        if not -1.0 <= new_threshold < merge_threshold:
            raise ValueError(
                "thresholds must satisfy -1 <= new_threshold < merge_threshold, got "
                f"new_threshold={new_threshold}, merge_threshold={merge_threshold}"
            )
        if retire_weight < 0:
            raise ValueError(f"retire_weight must be >= 0, got {retire_weight}")
        if chunk_size < 1 or maintenance_every < 1:
            raise ValueError(
                f"chunk_size and maintenance_every must be >= 1, got {chunk_size}, "
                f"{maintenance_every}"
            )
        if role not in ("authority", "worker"):
            raise ValueError(f"role must be 'authority' or 'worker', got {role!r}")
        self.half_life_s = float(half_life_s)
        self.k_max = int(k_max)
        self.new_threshold = float(new_threshold)
        self.merge_threshold = float(merge_threshold)
        self.retire_weight = float(retire_weight)
        self.chunk_size = int(chunk_size)
        self.maintenance_every = int(maintenance_every)
        self.role: Role = role
        self.version = 0

        self._dim: int | None = None
        self._landmark: float | None = None
        self._last_t: float | None = None
        self._next_id = 0
        self._next_provisional_id = PROVISIONAL_ID_START
        self._since_maintenance = 0
        self._events: deque[ClusterEvent] = deque(maxlen=max_events)
        self._redirects: dict[int, int] = {}
        self._reset_rows(0)
        self._reset_pending_counters()

    # ------------------------------------------------------------------ state

    def _reset_rows(self, dim: int) -> None:
        self._ids = np.empty(0, dtype=np.int64)
        self._sums = np.empty((0, dim))
        self._weights = np.empty(0)
        self._born_t = np.empty(0)
        self._pending_sums = np.empty((0, dim))
        self._pending_weights = np.empty(0)
        self._unit_cache: np.ndarray | None = None

    def _reset_pending_counters(self) -> None:
        self._pending_points = 0
        self._pending_t_min: float | None = None
        self._pending_t_max: float | None = None

    def _ensure_dim(self, dim: int) -> None:
        if self._dim is None:
            self._dim = int(dim)
            self._reset_rows(self._dim)
        elif dim != self._dim:
            raise ValueError(
                f"points have dimension {dim}, this model holds {self._dim}-d clusters"
            )

    @property
    def params(self) -> dict[str, Any]:
        """Constructor parameters that travel with a snapshot."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    @property
    def authoritative(self) -> bool:  # numbers clusters and owns their lifecycle: not a worker
        return self.role == "authority"

    @property
    def dim(self) -> int | None:
        """Dimension of the vectors, fixed by the first point learned (``None`` before)."""
        return self._dim

    @property
    def ids(self) -> np.ndarray:
        """Live cluster ids, ascending (int64)."""
        return self._ids.copy()

    @property
    def n_clusters(self) -> int:
        return len(self._ids)

    @property
    def landmark(self) -> float | None:
        """Event time the stored sums are relative to."""
        return self._landmark

    @property
    def last_t(self) -> float | None:
        """Latest event time learned (or applied from a delta)."""
        return self._last_t

    def _unit_centroids(self) -> np.ndarray:
        """Unit centroid directions, float32 ``[K, d]``, cached until the sums change."""
        if self._unit_cache is None:
            self._unit_cache = _unit_rows(self._sums).astype(np.float32)
        return self._unit_cache

    def _move_landmark(self, landmark: float) -> None:
        assert self._landmark is not None
        factor = decay_factor(landmark - self._landmark, self.half_life_s)
        for array in (self._sums, self._weights, self._pending_sums, self._pending_weights):
            array *= factor
        self._landmark = float(landmark)
        self._unit_cache = None

    def _decay_to(self, t: float) -> float:
        """Factor turning stored forward-decay units into plain decayed values at ``t``."""
        assert self._landmark is not None
        return decay_factor(t - self._landmark, self.half_life_s)

    def weights(self, t: float) -> np.ndarray:
        """Decayed weight of every live cluster at event time ``t`` (aligned with :attr:`ids`)."""
        if self._landmark is None:
            return np.zeros(len(self._ids))
        return self._weights * self._decay_to(t)

    def centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, unit centroid directions float32 [K, d])``."""
        return self._ids.copy(), self._unit_centroids().copy()

    def centroid(self, cluster_id: int) -> np.ndarray | None:
        """Unit centroid direction (float32) of ``cluster_id``, ``None`` if it is not live."""
        row = np.searchsorted(self._ids, cluster_id)
        if row < len(self._ids) and self._ids[row] == cluster_id:
            return self._unit_centroids()[row].copy()
        return None

    # ------------------------------------------------------------------ prediction

    def similarities(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, cosine of every row of X with every centroid, float32 [n, K])``.

        Rows of ``X`` are normalised first; an all-zero row has cosine 0 with everything.
        """
        points = check_points(X)
        if self._dim is not None and points.shape[1] != self._dim:
            raise ValueError(f"X has dimension {points.shape[1]}, clusters are {self._dim}-d")
        if not len(self._ids):
            return self._ids.copy(), np.zeros((len(points), 0), dtype=np.float32)
        unit = _unit_rows(np.nan_to_num(points.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))
        return self._ids.copy(), unit @ self._unit_centroids().T

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Nearest cluster (highest cosine) of every row; ``NO_CLUSTER`` when there is none.

        "None" means the model holds no cluster yet, or the row is all zeros or not finite.
        """
        points = check_points(X)
        labels = np.full(len(points), NO_CLUSTER, dtype=np.int64)
        if not len(self._ids) or not len(points):
            return labels
        _, sims = self.similarities(points)
        valid = np.all(np.isfinite(points), axis=1) & np.any(points != 0, axis=1)
        labels[valid] = self._ids[sims[valid].argmax(axis=1)]
        return labels

    def predict_one(self, x: np.ndarray) -> int | None:
        """Nearest cluster of ``x`` (``None`` when there is none), learning nothing."""
        label = int(self.predict_many(np.asarray(x).reshape(1, -1))[0])
        return None if label == NO_CLUSTER else label

    # ------------------------------------------------------------------ learning

    def learn_predict_many(
        self, X: np.ndarray, t: np.ndarray | float, w: np.ndarray | float | None = None
    ) -> np.ndarray:
        """Learn the rows of ``X`` in order; return the cluster each joined (int64).

        Rows are normalised to unit length; a zero or non-finite row raises ``ValueError``.
        """
        points, times, weights = check_learn_inputs(X, t, w)
        labels = np.empty(len(points), dtype=np.int64)
        if not len(points):
            return labels
        self._ensure_dim(points.shape[1])
        points = points.astype(np.float64)
        norms = np.linalg.norm(points, axis=1)
        bad = ~(np.isfinite(norms) & (norms > 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"row {row} of X is all zeros or not finite; expected a direction")
        points /= norms[:, None]
        for start in range(0, len(points), self.chunk_size):
            stop = start + self.chunk_size
            labels[start:stop] = self._learn_chunk(
                points[start:stop], times[start:stop], weights[start:stop]
            )
            self._since_maintenance += len(labels[start:stop])
            if self._since_maintenance >= self.maintenance_every:
                self._since_maintenance = 0
                if self.authoritative:
                    self._maintain()
        return labels

    def _new_id(self) -> int:
        if self.authoritative:
            self._next_id += 1
            return self._next_id - 1
        self._next_provisional_id += 1
        return self._next_provisional_id - 1

    def _learn_chunk(self, X: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Assign and learn one chunk of unit rows ``X``; return the cluster ids."""
        t_max = float(t.max())
        if self._landmark is None:
            self._landmark = t_max  # gains in the first chunk stay <= w
        elif (t_max - self._landmark) / self.half_life_s > RESCALE_AFTER_HALF_LIVES:
            self._move_landmark(t_max)
        gain = w * decay_factor(self._landmark - t, self.half_life_s)
        n_old = len(self._ids)
        rows = np.full(len(X), -1, dtype=np.int64)
        sims: np.ndarray | None = None
        if n_old:
            sims = X.astype(np.float32) @ self._unit_centroids().T
            best = sims.argmax(axis=1)
            near = sims[np.arange(len(X)), best] >= self.new_threshold
            rows[near] = best[near]
        else:
            near = np.zeros(len(X), dtype=bool)
        far = np.flatnonzero(~near)
        births: list[tuple[int, float, bool]] = []  # (row, event time, replaces an old row)
        if far.size:
            births = self._place_far_points(X, t, gain, far, rows, sims, near)

        # Make room: a replaced row retires and starts afresh; new rows are appended.
        n_appended = sum(1 for _, _, replaces in births if not replaces)
        if n_appended:
            d = X.shape[1]
            self._ids = np.concatenate([self._ids, np.zeros(n_appended, dtype=np.int64)])
            self._sums = np.vstack([self._sums, np.zeros((n_appended, d))])
            self._pending_sums = np.vstack([self._pending_sums, np.zeros((n_appended, d))])
            self._weights = np.concatenate([self._weights, np.zeros(n_appended)])
            self._pending_weights = np.concatenate([self._pending_weights, np.zeros(n_appended)])
            self._born_t = np.concatenate([self._born_t, np.zeros(n_appended)])
        for row, born_t, replaces in births:
            if replaces:
                self._events.append(ClusterEvent("retired", int(self._ids[row]), None, born_t))
                self._sums[row] = self._pending_sums[row] = 0.0
                self._weights[row] = self._pending_weights[row] = 0.0
            self._ids[row] = self._new_id()
            self._born_t[row] = born_t
            self._events.append(ClusterEvent("born", int(self._ids[row]), None, born_t))

        # Add every point's forward-decayed contribution, one segment per cluster.
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
        targets = sorted_rows[starts]
        sum_increments = np.add.reduceat(X[order] * gain[order, None], starts, axis=0)
        weight_increments = np.add.reduceat(gain[order], starts)
        self._sums[targets] += sum_increments
        self._weights[targets] += weight_increments
        self._pending_sums[targets] += sum_increments
        self._pending_weights[targets] += weight_increments
        self._unit_cache = None
        labels = self._ids[rows]
        if any(replaces for _, _, replaces in births):
            self._sort_rows()  # a replaced slot took a new, larger id: keep ids ascending

        self._last_t = t_max if self._last_t is None else max(self._last_t, t_max)
        t_min = float(t.min())
        self._pending_points += len(X)
        self._pending_t_min = (
            t_min if self._pending_t_min is None else min(self._pending_t_min, t_min)
        )
        self._pending_t_max = (
            t_max if self._pending_t_max is None else max(self._pending_t_max, t_max)
        )
        return labels

    def _place_far_points(
        self,
        X: np.ndarray,
        t: np.ndarray,
        gain: np.ndarray,
        far: np.ndarray,
        rows: np.ndarray,
        sims: np.ndarray | None,
        near: np.ndarray,
    ) -> list[tuple[int, float, bool]]:
        """Handle, in order, the chunk's points that no centroid holds; fills ``rows`` in place.

        Returns the clusters opened in the chunk as ``(row, birth time, replaces)``:
        rows from ``len(ids)`` up are to be appended; ``replaces`` marks an
        existing row whose cluster is replaced at ``k_max``.
        """
        n_old = len(self._ids)
        # Existing rows that took points in this chunk hold fresh evidence: never replace them.
        protected = np.zeros(n_old, dtype=bool)
        protected[rows[near]] = True
        new_sums = np.zeros((len(far), X.shape[1]))
        new_units = np.zeros((len(far), X.shape[1]))
        births: list[tuple[int, float, bool]] = []
        room = max(0, self.k_max - n_old)
        n_appended = 0

        def join_new(i: int, j: int) -> None:
            rows[i] = births[j][0]
            new_sums[j] += gain[i] * X[i]
            new_units[j] = _unit_rows(new_sums[j][None, :])[0]

        for i in far:
            m = len(births)
            new_sims = new_units[:m] @ X[i] if m else None
            if new_sims is not None and new_sims.max() >= self.new_threshold:
                join_new(i, int(new_sims.argmax()))
                continue
            target, replaces = -1, False
            if n_appended < room:
                target = n_old + n_appended
                n_appended += 1
            elif self.authoritative and n_old:
                candidates = np.where(protected, np.inf, self._weights)
                weakest = int(candidates.argmin())
                if candidates[weakest] < gain[i]:
                    target, replaces = weakest, True
                    protected[weakest] = True
                    if sims is not None:
                        sims[:, weakest] = -np.inf  # its old centroid no longer exists
            if target >= 0:
                births.append((target, float(t[i]), replaces))
                new_sums[m] = gain[i] * X[i]
                new_units[m] = X[i]
                rows[i] = target
                continue
            # No room: join the nearest cluster, existing or opened in this chunk.
            best_old = int(sims[i].argmax()) if sims is not None else -1
            best_old_sim = float(sims[i, best_old]) if sims is not None else -np.inf
            if new_sims is not None and float(new_sims.max()) > best_old_sim:
                join_new(i, int(new_sims.argmax()))
            else:
                rows[i] = best_old
                protected[best_old] = True
        return births

    def _sort_rows(self) -> None:
        """Reorder rows by ascending id."""
        order = np.argsort(self._ids, kind="stable")
        for name in ("_ids", "_sums", "_weights", "_born_t", "_pending_sums", "_pending_weights"):
            setattr(self, name, getattr(self, name)[order])
        self._unit_cache = None

    # ------------------------------------------------------------------ maintenance

    def _remove_rows(self, rows: np.ndarray) -> None:
        keep = np.ones(len(self._ids), dtype=bool)
        keep[rows] = False
        for name in ("_ids", "_sums", "_weights", "_born_t", "_pending_sums", "_pending_weights"):
            setattr(self, name, getattr(self, name)[keep])
        self._unit_cache = None

    def _remember_redirect(self, absorbed: int, survivor: int) -> None:
        for source, target in self._redirects.items():  # keep chains one hop long
            if target == absorbed:
                self._redirects[source] = survivor
        self._redirects[absorbed] = survivor
        while len(self._redirects) > _MAX_REDIRECTS:
            del self._redirects[next(iter(self._redirects))]

    def _maintain(self) -> None:
        """Retire clusters whose weight decayed away; merge near-duplicate centroids."""
        if self._last_t is None or not len(self._ids):
            return
        now = self._last_t
        dead = np.flatnonzero(self.weights(now) < self.retire_weight)
        for row in dead:
            self._events.append(ClusterEvent("retired", int(self._ids[row]), None, now))
        if dead.size:
            self._remove_rows(dead)
        while len(self._ids) >= 2:
            unit = _unit_rows(self._sums)
            cosines = unit @ unit.T
            cosines[np.tril_indices(len(unit))] = -np.inf
            a, b = np.unravel_index(int(cosines.argmax()), cosines.shape)
            if cosines[a, b] < self.merge_threshold:
                break
            # The heavier cluster survives (ties: the older, smaller id).
            survivor, absorbed = (a, b) if self._weights[a] >= self._weights[b] else (b, a)
            self._sums[survivor] += self._sums[absorbed]
            self._weights[survivor] += self._weights[absorbed]
            self._pending_sums[survivor] += self._pending_sums[absorbed]
            self._pending_weights[survivor] += self._pending_weights[absorbed]
            self._born_t[survivor] = min(self._born_t[survivor], self._born_t[absorbed])
            absorbed_id, survivor_id = int(self._ids[absorbed]), int(self._ids[survivor])
            self._events.append(ClusterEvent("merged", absorbed_id, survivor_id, now))
            self._remember_redirect(absorbed_id, survivor_id)
            self._remove_rows(np.array([absorbed]))

    def pop_events(self) -> list[ClusterEvent]:
        """Lifecycle events since the last call, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def __repr__(self) -> str:
        return (
            f"DecayingCentroids(n_clusters={self.n_clusters}, version={self.version}, "
            f"role={self.role!r}, half_life_s={self.half_life_s}, k_max={self.k_max})"
        )
