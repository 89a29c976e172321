"""The clusterer's messages: lifecycle events, a worker's delta, the authority's snapshot.

A worker's :class:`~models.clustering.decaying_centroids.DecayingCentroids`
sends what it learned as a :class:`ClusterDelta`; the authority merges deltas
and publishes a :class:`ClusterSnapshot` every worker adopts; both learners
report the clusters' lifecycle as :class:`ClusterEvent`. Their bytes are
:mod:`~models.clustering.cluster_codec`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from models.clustering.cluster_codec import DELTA_MAGIC, SNAPSHOT_MAGIC
from models.clustering.cluster_codec import decode as _decode
from models.clustering.cluster_codec import encode as _encode
from models.forward_decay import decay_factor

__all__ = ["PROVISIONAL_ID_START", "ClusterDelta", "ClusterEvent", "ClusterSnapshot"]

#: Ids from here up name clusters a worker opened that the authority has not yet numbered.
PROVISIONAL_ID_START = 1 << 48


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """One change in the set of clusters.

    ``kind`` is ``"born"`` (a new cluster ``cluster_id``), ``"retired"`` (its
    weight decayed below ``retire_weight``, or a new cluster replaced it at
    ``k_max``) or ``"merged"`` (``cluster_id`` was folded into ``other_id`` and
    no longer exists). ``t`` is the event time at which it happened.

    >>> ClusterEvent("merged", 7, 3, 100.0)
    ClusterEvent(kind='merged', cluster_id=7, other_id=3, t=100.0)
    """

    kind: Literal["born", "retired", "merged"]
    cluster_id: int
    other_id: int | None
    t: float


def _check_same_half_life(ours: float, theirs: float, what: str) -> None:
    if not math.isclose(ours, theirs, rel_tol=1e-12):
        raise ValueError(
            f"{what} has half_life_s={theirs}, this model uses {ours}: forward-decayed sums "
            "only add under the same half-life"
        )


def _no_rows() -> np.ndarray:
    """Default of an array field: no rows (``__post_init__`` gives it its shape)."""
    return np.empty(0)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


# --------------------------------------------------------------------------- delta


@dataclass(frozen=True, eq=False)
class ClusterDelta:
    """What a worker learned since its last delta, in forward-decay units.

    Increments ``sums`` / ``weights`` belong to the clusters ``ids`` the worker
    shares with the authority; *proposals* are clusters the worker opened
    itself (provisional ids ≥ :data:`PROVISIONAL_ID_START`), each with its
    increments and its full local centroid direction, which the authority uses
    to fold the proposal into a cluster it already has (cosine ≥ its
    ``merge_threshold``) or to number it as a new cluster. All sums are scaled
    by ``2^((t - landmark)/half_life_s)``, so two deltas add once one is
    rescaled to the other's landmark (:meth:`merge`); merging is commutative
    and associative up to float rounding.

    Examples
    --------
    >>> import numpy as np
    >>> a = ClusterDelta.empty(half_life_s=10.0, dim=2)
    >>> b = ClusterDelta(
    ...     landmark=0.0, half_life_s=10.0, dim=2, ids=np.array([3]),
    ...     sums=np.array([[2.0, 0.0]]), weights=np.array([2.0]), n_points=2, t_min=0.0, t_max=0.0,
    ... )
    >>> c = a + b + b
    >>> c.ids.tolist(), c.weights.tolist()
    ([3], [4.0])
    >>> ClusterDelta.from_bytes(c.to_bytes()).sums.tolist()
    [[4.0, 0.0]]
    """

    landmark: float | None
    half_life_s: float
    dim: int | None
    ids: np.ndarray
    sums: np.ndarray
    weights: np.ndarray
    proposal_ids: np.ndarray = field(default_factory=_no_rows)
    proposal_centroids: np.ndarray = field(default_factory=_no_rows)
    proposal_sums: np.ndarray = field(default_factory=_no_rows)
    proposal_weights: np.ndarray = field(default_factory=_no_rows)
    proposal_born_t: np.ndarray = field(default_factory=_no_rows)
    n_points: int = 0
    t_min: float | None = None
    t_max: float | None = None
    base_version: int = 0

    def __post_init__(self) -> None:
        d = self.dim or 0
        set_ = object.__setattr__
        set_(self, "ids", np.asarray(self.ids, dtype=np.int64).reshape(-1))
        m = len(self.ids)
        set_(self, "sums", np.asarray(self.sums, dtype=np.float64).reshape(m, d))
        set_(self, "weights", np.asarray(self.weights, dtype=np.float64).reshape(m))
        ids = np.empty(0) if self.proposal_ids is None else self.proposal_ids  # None: no proposal
        set_(self, "proposal_ids", np.asarray(ids, dtype=np.int64).reshape(-1))
        p = len(self.proposal_ids)
        for name, shape in [
            ("proposal_centroids", (p, d)),
            ("proposal_sums", (p, d)),
            ("proposal_weights", (p,)),
            ("proposal_born_t", (p,)),
        ]:
            value = getattr(self, name)
            value = np.zeros(shape) if value is None else np.asarray(value, dtype=np.float64)
            set_(self, name, value.reshape(shape))

    @classmethod
    def empty(cls, half_life_s: float, dim: int | None = None) -> ClusterDelta:
        """A delta that carries nothing."""
        d = dim or 0
        return cls(None, half_life_s, dim, np.empty(0), np.empty((0, d)), np.empty(0))

    @property
    def n_proposals(self) -> int:
        return len(self.proposal_ids)

    @property
    def is_empty(self) -> bool:
        """Whether applying the delta would change nothing."""
        return self.n_points == 0 and len(self.ids) == 0 and self.n_proposals == 0

    def rescaled(self, landmark: float) -> ClusterDelta:
        """The same delta in the units of ``landmark``."""
        if self.landmark is None or landmark == self.landmark:
            return self if self.landmark is not None else _replace(self, landmark=landmark)
        factor = decay_factor(landmark - self.landmark, self.half_life_s)
        return _replace(
            self,
            landmark=landmark,
            sums=self.sums * factor,
            weights=self.weights * factor,
            proposal_sums=self.proposal_sums * factor,
            proposal_weights=self.proposal_weights * factor,
        )

    def merge(self, other: ClusterDelta) -> ClusterDelta:
        """One delta holding both: increments of the same id add, proposals are kept apart.

        The result is in canonical order (ids ascending, proposals by birth
        time), so ``a + b`` and ``b + a`` are the same delta; an empty delta is
        the identity, and ``base_version`` is the oldest of the non-empty parts'.
        """
        _check_same_half_life(self.half_life_s, other.half_life_s, "delta")
        if self.dim is not None and other.dim is not None and self.dim != other.dim:
            raise ValueError(f"cannot merge deltas of dimension {self.dim} and {other.dim}")
        dim = self.dim if self.dim is not None else other.dim
        landmarks = [lm for lm in (self.landmark, other.landmark) if lm is not None]
        landmark = max(landmarks) if landmarks else None
        a = self.rescaled(landmark) if landmark is not None else self
        b = other.rescaled(landmark) if landmark is not None else other
        d = dim or 0
        all_ids = np.concatenate([a.ids, b.ids])
        ids, inverse = np.unique(all_ids, return_inverse=True)
        sums = np.zeros((len(ids), d))
        weights = np.zeros(len(ids))
        np.add.at(sums, inverse, np.concatenate([a.sums.reshape(-1, d), b.sums.reshape(-1, d)]))
        np.add.at(weights, inverse, np.concatenate([a.weights, b.weights]))

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(a, name), getattr(b, name)])

        p_ids, p_born, p_w = cat("proposal_ids"), cat("proposal_born_t"), cat("proposal_weights")
        p_sums = np.concatenate([a.proposal_sums.reshape(-1, d), b.proposal_sums.reshape(-1, d)])
        p_cent = np.concatenate(
            [a.proposal_centroids.reshape(-1, d), b.proposal_centroids.reshape(-1, d)]
        )
        first = p_sums[:, 0] if d else np.zeros(len(p_ids))
        order = np.lexsort((first, p_ids, p_w, p_born))  # canonical: merge order does not matter
        t_mins = [x for x in (a.t_min, b.t_min) if x is not None]
        t_maxs = [x for x in (a.t_max, b.t_max) if x is not None]
        return ClusterDelta(
            landmark=landmark,
            half_life_s=self.half_life_s,
            dim=dim,
            ids=ids,
            sums=sums,
            weights=weights,
            proposal_ids=p_ids[order],
            proposal_centroids=p_cent[order],
            proposal_sums=p_sums[order],
            proposal_weights=p_w[order],
            proposal_born_t=p_born[order],
            n_points=a.n_points + b.n_points,
            t_min=min(t_mins) if t_mins else None,
            t_max=max(t_maxs) if t_maxs else None,
            base_version=_merged_base_version(a, b),
        )

    __add__ = merge

    def to_bytes(self) -> bytes:
        """Versioned binary form (magic ``DRCD``, format version, JSON scalars, float64 arrays)."""
        meta = {
            "landmark": self.landmark,
            "half_life_s": self.half_life_s,
            "dim": self.dim,
            "n_points": self.n_points,
            "t_min": self.t_min,
            "t_max": self.t_max,
            "base_version": self.base_version,
        }
        names = ["ids", "sums", "weights", "proposal_ids", "proposal_centroids", "proposal_sums"]
        names += ["proposal_weights", "proposal_born_t"]
        return _encode(DELTA_MAGIC, meta, {n: getattr(self, n) for n in names})

    @classmethod
    def from_bytes(cls, data: bytes) -> ClusterDelta:
        """Read :meth:`to_bytes` output; raises ``ValueError`` on anything else."""
        meta, arrays = _decode(data, DELTA_MAGIC, "cluster delta")
        fields: dict[str, Any] = {**meta, **arrays}  # checked by __post_init__
        return cls(**fields)


def _merged_base_version(a: ClusterDelta, b: ClusterDelta) -> int:
    """Oldest model version the non-empty parts learned on (empty parts: the newest seen)."""
    carrying = [x.base_version for x in (a, b) if not x.is_empty]
    return min(carrying) if carrying else max(a.base_version, b.base_version)


def _replace(delta: ClusterDelta, **changes: Any) -> ClusterDelta:
    fields = {name: getattr(delta, name) for name in delta.__dataclass_fields__}
    return ClusterDelta(**{**fields, **changes})


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, eq=False)
class ClusterSnapshot:
    """The authority's published model: every cluster's forward-decayed sums and weight.

    ``sums[k]`` and ``weights[k]`` of cluster ``ids[k]`` are in units of
    ``2^((t - landmark)/half_life_s)``; :meth:`decayed` turns them into plain
    decayed values at an event time. ``redirects`` maps recently merged ids to
    the ids that absorbed them, so workers can re-key unsent increments.

    Examples
    --------
    >>> import numpy as np
    >>> from models.clustering import DecayingCentroids
    >>> model = DecayingCentroids(half_life_s=10.0)
    >>> model.learn_predict_many(np.eye(3), t=[0.0, 0.0, 10.0]).tolist()
    [0, 1, 2]
    >>> snap = ClusterSnapshot.from_bytes(model.snapshot().to_bytes())
    >>> snap.ids.tolist(), snap.decayed(10.0)[1].tolist()
    ([0, 1, 2], [0.5, 0.5, 1.0])
    """

    version: int
    ids: np.ndarray
    sums: np.ndarray
    weights: np.ndarray
    born_t: np.ndarray
    landmark: float | None
    next_id: int
    last_t: float | None
    params: dict[str, Any]
    dim: int | None
    redirect_from: np.ndarray = field(default_factory=_no_rows)
    redirect_to: np.ndarray = field(default_factory=_no_rows)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        k, d = len(np.asarray(self.ids).reshape(-1)), self.dim or 0
        set_(self, "ids", np.asarray(self.ids, dtype=np.int64).reshape(k))
        set_(self, "sums", np.asarray(self.sums, dtype=np.float64).reshape(k, d))
        set_(self, "weights", np.asarray(self.weights, dtype=np.float64).reshape(k))
        set_(self, "born_t", np.asarray(self.born_t, dtype=np.float64).reshape(k))
        for name in ("redirect_from", "redirect_to"):
            value = getattr(self, name)
            set_(self, name, np.asarray([] if value is None else value, dtype=np.int64))

    @property
    def n_clusters(self) -> int:
        return len(self.ids)

    @property
    def half_life_s(self) -> float:
        return float(self.params["half_life_s"])

    def decayed(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``(sums, weights)`` as plain decayed values at event time ``t``."""
        if self.landmark is None:
            return self.sums.copy(), self.weights.copy()
        factor = decay_factor(t - self.landmark, self.half_life_s)
        return self.sums * factor, self.weights * factor

    def to_bytes(self) -> bytes:
        """Versioned binary form (magic ``DRCS``, format version, JSON scalars, float64 arrays)."""
        meta = {
            "version": self.version,
            "landmark": self.landmark,
            "next_id": self.next_id,
            "last_t": self.last_t,
            "params": self.params,
            "dim": self.dim,
        }
        names = ["ids", "sums", "weights", "born_t", "redirect_from", "redirect_to"]
        return _encode(SNAPSHOT_MAGIC, meta, {n: getattr(self, n) for n in names})

    @classmethod
    def from_bytes(cls, data: bytes) -> ClusterSnapshot:
        """Read :meth:`to_bytes` output; raises ``ValueError`` on anything else."""
        meta, arrays = _decode(data, SNAPSHOT_MAGIC, "cluster snapshot")
        fields: dict[str, Any] = {**meta, **arrays}  # checked by __post_init__
        return cls(**fields)
