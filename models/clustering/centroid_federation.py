"""How decaying centroids run on several workers: deltas out, deltas merged, snapshots adopted.

A worker's clusterer (``role="worker"``) learns locally and sends what it
learned since its last delta (:meth:`CentroidFederation.pop_delta`); the
clusters it opens carry provisional ids until the authority numbers them.
The authority (``role="authority"``, the model agent's) merges the deltas
(:meth:`CentroidFederation.apply_delta`) and publishes versioned snapshots
(:meth:`CentroidFederation.snapshot`) that every worker adopts
(:meth:`CentroidFederation.load_snapshot`), so a cluster id means the same on
every worker. The sums are forward-decayed, so deltas simply add: increments
add to the same ids; a proposal folds into a cluster within ``merge_threshold``
or gets the authority's next id. An adopted snapshot becomes the worker's model
**plus the increments it has not yet sent** (they stay pending and go out with
the next delta; increments sent but not yet in a snapshot are missing locally
until a later snapshot includes them).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, Self, cast

import numpy as np

from models.clustering.cluster_messages import (
    PROVISIONAL_ID_START,
    ClusterDelta,
    ClusterEvent,
    ClusterSnapshot,
    _check_same_half_life,
    _unit_rows,
)
from models.forward_decay import decay_factor

__all__ = ["CentroidFederation", "Role"]

Role = Literal["authority", "worker"]


class CentroidFederation:
    """The distributed half of :class:`~models.clustering.decaying_centroids.DecayingCentroids`."""

    # Declared for the type checker: the learner's state these methods read and write.
    half_life_s: float
    k_max: int
    merge_threshold: float
    role: str
    version: int
    _dim: int | None
    _ids: np.ndarray
    _sums: np.ndarray
    _weights: np.ndarray
    _born_t: np.ndarray
    _pending_sums: np.ndarray
    _pending_weights: np.ndarray
    _pending_points: int
    _pending_t_min: float | None
    _pending_t_max: float | None
    _landmark: float | None
    _last_t: float | None
    _redirects: dict[int, int]
    _unit_cache: np.ndarray | None
    _events: deque[Any]
    _next_id: int
    _next_provisional_id: int

    # The learner's own operations these methods build on (DecayingCentroids has them).
    @property
    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _move_landmark(self, landmark: float) -> None:
        raise NotImplementedError

    def _maintain(self) -> None:
        raise NotImplementedError

    def _remove_rows(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _new_id(self) -> int:
        raise NotImplementedError

    def _reset_rows(self, dim: int) -> None:
        raise NotImplementedError

    def _reset_pending_counters(self) -> None:
        raise NotImplementedError

    def _ensure_dim(self, dim: int) -> None:
        raise NotImplementedError

    @classmethod
    def from_snapshot(cls, snapshot: ClusterSnapshot, role: Role = "authority") -> Self:
        """A model with the snapshot's parameters and state."""
        model: Self = cast(Any, cls)(**snapshot.params, role=role)
        model.load_snapshot(snapshot)
        return model

    def pop_delta(self) -> ClusterDelta:
        """What this instance learned since the last call, as a :class:`ClusterDelta`.

        The pending increments are then forgotten.

        Increments of clusters with an authority id go out by id; clusters this
        worker opened (provisional ids) go out as proposals with their full
        local centroid direction. The local model itself is unchanged.
        """
        if self._dim is None:  # nothing learned yet: no dimension to shape arrays with
            return ClusterDelta.empty(self.half_life_s)
        d = self._dim
        has = self._pending_weights > 0
        provisional = self._ids >= PROVISIONAL_ID_START
        shared, proposed = has & ~provisional, has & provisional
        delta = ClusterDelta(
            landmark=self._landmark,
            half_life_s=self.half_life_s,
            dim=self._dim,
            ids=self._ids[shared],
            sums=self._pending_sums[shared].reshape(-1, d),
            weights=self._pending_weights[shared],
            proposal_ids=self._ids[proposed],
            proposal_centroids=_unit_rows(self._sums[proposed]),
            proposal_sums=self._pending_sums[proposed].reshape(-1, d),
            proposal_weights=self._pending_weights[proposed],
            proposal_born_t=self._born_t[proposed],
            n_points=self._pending_points,
            t_min=self._pending_t_min,
            t_max=self._pending_t_max,
            base_version=self.version,
        )
        self._pending_sums[:] = 0.0
        self._pending_weights[:] = 0.0
        self._reset_pending_counters()
        return delta

    def _resolve(self, cluster_id: int) -> int | None:
        """Row of ``cluster_id``, following merge redirections; ``None`` if gone."""
        cluster_id = self._redirects.get(cluster_id, cluster_id)
        row = int(np.searchsorted(self._ids, cluster_id))
        if row < len(self._ids) and self._ids[row] == cluster_id:
            return row
        return None

    def check_delta(self, delta: ClusterDelta) -> None:
        """Raise ``ValueError`` if ``delta`` cannot be applied to this model.

        A delta made under another half-life (its forward-decayed sums do not
        add to ours) or of another dimension (a worker with another encoder)
        is refused with the reason, before anything changes, so that one bad
        delta never holds back the good ones beside it.
        """
        _check_same_half_life(self.half_life_s, delta.half_life_s, "delta")
        if delta.dim is not None and self._dim is not None and delta.dim != self._dim:
            raise ValueError(
                f"delta holds {delta.dim}-d sums, this model {self._dim}-d clusters "
                "(a worker with another encoder?)"
            )

    def apply_delta(self, delta: ClusterDelta) -> None:
        """Merge a worker's delta into this authoritative model, then bump :attr:`version`.

        Increments add to their clusters (following merges). Proposals, and
        increments for clusters this model no longer has, fold into the live
        cluster of highest cosine if it reaches ``merge_threshold``, else become
        new clusters numbered here (at ``k_max``, the same replace-or-join rule
        as learning). Retirement and merging then run at the latest event time.
        An empty delta changes nothing, not even the version.
        """
        if self.role != "authority":
            raise ValueError("apply_delta needs role='authority'; this instance is a worker")
        _check_same_half_life(self.half_life_s, delta.half_life_s, "delta")
        if delta.is_empty:
            return
        if delta.dim is not None:
            self._ensure_dim(delta.dim)
        d = self._dim or 0
        if delta.landmark is not None:
            if self._landmark is None:
                self._landmark = delta.landmark
            elif delta.landmark > self._landmark:
                self._move_landmark(delta.landmark)
            delta = delta.rescaled(self._landmark)
        orphans: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        born_default = delta.t_min if delta.t_min is not None else (self._last_t or 0.0)
        for cluster_id, sums, weight in zip(delta.ids, delta.sums, delta.weights, strict=True):
            row = self._resolve(int(cluster_id))
            if row is None:
                orphans.append((_unit_rows(sums[None])[0], sums, float(weight), born_default))
            else:
                self._sums[row] += sums
                self._weights[row] += weight
        for centroid, sums, weight, born_t in zip(
            delta.proposal_centroids,
            delta.proposal_sums,
            delta.proposal_weights,
            delta.proposal_born_t,
            strict=True,
        ):
            orphans.append((centroid, sums, float(weight), float(born_t)))
        for centroid, sums, weight, born_t in orphans:
            self._fold_or_open(centroid, sums.reshape(d), weight, born_t)
        self._unit_cache = None
        if delta.t_max is not None:
            self._last_t = delta.t_max if self._last_t is None else max(self._last_t, delta.t_max)
        self._maintain()
        self.version += 1

    def _fold_or_open(
        self, centroid: np.ndarray, sums: np.ndarray, weight: float, t: float
    ) -> None:
        """Add a proposal to the live cluster it matches, or open a cluster for it."""
        if len(self._ids):
            cosines = _unit_rows(self._sums) @ centroid
            nearest = int(cosines.argmax())
            full = len(self._ids) >= self.k_max
            weakest = int(self._weights.argmin())
            if cosines[nearest] >= self.merge_threshold or (
                full and self._weights[weakest] >= weight
            ):
                self._sums[nearest] += sums
                self._weights[nearest] += weight
                self._unit_cache = None
                return
            if full:  # replace the weakest cluster, as when learning
                self._events.append(ClusterEvent("retired", int(self._ids[weakest]), None, t))
                self._remove_rows(np.array([weakest]))
        new_id = self._new_id()
        self._ids = np.append(self._ids, new_id)
        self._sums = np.vstack([self._sums, sums[None, :]])
        self._pending_sums = np.vstack([self._pending_sums, np.zeros((1, len(sums)))])
        self._weights = np.append(self._weights, weight)
        self._pending_weights = np.append(self._pending_weights, 0.0)
        self._born_t = np.append(self._born_t, t)
        self._events.append(ClusterEvent("born", new_id, None, t))
        self._unit_cache = None

    def snapshot(self) -> ClusterSnapshot:
        """The model as the authority publishes it (pending bookkeeping is not included)."""
        return ClusterSnapshot(
            version=self.version,
            ids=self._ids.copy(),
            sums=self._sums.copy(),
            weights=self._weights.copy(),
            born_t=self._born_t.copy(),
            landmark=self._landmark,
            next_id=self._next_id,
            last_t=self._last_t,
            params=self.params,
            dim=self._dim,
            redirect_from=np.array(list(self._redirects.keys()), dtype=np.int64),
            redirect_to=np.array(list(self._redirects.values()), dtype=np.int64),
        )

    def load_snapshot(self, snapshot: ClusterSnapshot) -> None:
        """Adopt the authority's model, keeping this instance's unsent increments.

        The local state becomes the snapshot plus every pending increment
        (added to its cluster, following the snapshot's merge redirections;
        increments of clusters the snapshot does not hold stay as local
        provisional clusters). Pending increments are still sent by the next
        :meth:`pop_delta`. Parameters other than the half-life stay this
        instance's own; no lifecycle events are emitted.
        """
        _check_same_half_life(self.half_life_s, snapshot.half_life_s, "snapshot")
        if self._dim is not None and snapshot.dim is not None and snapshot.dim != self._dim:
            raise ValueError(f"snapshot holds {snapshot.dim}-d clusters, this model {self._dim}-d")
        has = self._pending_weights > 0
        pending = [
            (int(i), s, float(w), float(b), float(self._landmark or 0.0))
            for i, s, w, b in zip(
                self._ids[has],
                self._pending_sums[has],
                self._pending_weights[has],
                self._born_t[has],
                strict=True,
            )
        ]
        self._dim = snapshot.dim if snapshot.dim is not None else self._dim
        self._reset_rows(self._dim or 0)
        self._ids = snapshot.ids.copy()
        self._sums = snapshot.sums.copy()
        self._weights = snapshot.weights.copy()
        self._born_t = snapshot.born_t.copy()
        self._pending_sums = np.zeros_like(self._sums)
        self._pending_weights = np.zeros_like(self._weights)
        self._landmark = snapshot.landmark
        self._next_id = snapshot.next_id
        self.version = snapshot.version
        self._redirects = dict(
            zip(snapshot.redirect_from.tolist(), snapshot.redirect_to.tolist(), strict=True)
        )
        if snapshot.last_t is not None:
            self._last_t = (
                snapshot.last_t if self._last_t is None else max(self._last_t, snapshot.last_t)
            )
        for cluster_id, sums, weight, born_t, landmark in pending:
            if self._landmark is None:
                self._landmark = landmark
            elif landmark > self._landmark:
                self._move_landmark(landmark)
            factor = decay_factor(self._landmark - landmark, self.half_life_s)
            sums, weight = sums * factor, weight * factor
            row = self._resolve(cluster_id)
            if row is None:
                keep_id = self.role == "worker" and cluster_id >= PROVISIONAL_ID_START
                new_id = cluster_id if keep_id else self._new_id()
                insert = int(np.searchsorted(self._ids, new_id))
                self._ids = np.insert(self._ids, insert, new_id)
                self._sums = np.insert(self._sums, insert, 0.0, axis=0)
                self._pending_sums = np.insert(self._pending_sums, insert, 0.0, axis=0)
                self._weights = np.insert(self._weights, insert, 0.0)
                self._pending_weights = np.insert(self._pending_weights, insert, 0.0)
                self._born_t = np.insert(self._born_t, insert, born_t)
                row = insert
            self._sums[row] += sums
            self._weights[row] += weight
            self._pending_sums[row] += sums
            self._pending_weights[row] += weight
        self._unit_cache = None
