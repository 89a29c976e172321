"""The interface every driftrec clusterer offers, ours and River's alike.

A clusterer places vectors in clusters as they stream past, in River's
vocabulary: ``learn_one`` / ``learn_many`` learn and return nothing,
``predict_one`` / ``predict_many`` answer without learning, and
``learn_predict_one`` / ``learn_predict_many`` do both at once — what the
engine wants: the cluster each point joined as it was learned. Every call that learns takes
the points' **event times** ``t`` (epoch seconds) and optional weights ``w``;
a clusterer that has no use for them accepts and ignores them, so the engine
can swap one clusterer for another without changing a line.

Labels are plain ints. ``learn_predict_*`` return the cluster each point was
assigned to while it was learned (the prequential label); ``predict_*`` never
change the model. ``predict_many`` marks "no cluster" with :data:`NO_CLUSTER` (-1),
``predict_one`` with ``None``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["NO_CLUSTER", "Clusterer", "LearnsInBatches", "check_learn_inputs", "check_points"]

#: Label that ``predict_many`` gives a point that no cluster holds.
NO_CLUSTER = -1


@runtime_checkable
class Clusterer(Protocol):
    """What the engine needs from an online clusterer.

    Examples
    --------
    >>> import numpy as np
    >>> from models.clustering import DecayingCentroids
    >>> clusterer = DecayingCentroids()
    >>> isinstance(clusterer, Clusterer)
    True
    >>> label = clusterer.learn_predict_one(np.array([1.0, 0.0, 0.0]), t=0.0)
    >>> clusterer.predict_one(np.array([0.9, 0.1, 0.0])) == label
    True
    """

    def learn_one(self, x: np.ndarray, t: float, w: float = 1.0) -> None:
        """Learn one point seen at event time ``t`` with weight ``w`` (returns nothing)."""
        ...

    def learn_many(self, X: np.ndarray, t: np.ndarray | float, w: np.ndarray | None = None) -> None:
        """Learn the rows of ``X`` in order (returns nothing)."""
        ...

    def learn_predict_one(self, x: np.ndarray, t: float, w: float = 1.0) -> int:
        """Learn one point seen at event time ``t`` with weight ``w``; return its cluster."""
        ...

    def predict_one(self, x: np.ndarray) -> int | None:
        """Cluster of ``x`` without learning it; ``None`` when there is no cluster."""
        ...

    def learn_predict_many(
        self, X: np.ndarray, t: np.ndarray | float, w: np.ndarray | None = None
    ) -> np.ndarray:
        """Learn the rows of ``X`` in order; return their clusters (int64, one per row)."""
        ...

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Clusters of the rows of ``X`` (int64, ``NO_CLUSTER`` where none), learning nothing."""
        ...


class LearnsInBatches:
    """``learn_one``, ``learn_many`` and ``learn_predict_one`` for a clusterer that defines
    ``learn_predict_many`` (every driftrec clusterer learns in vectorised batches)."""

    def learn_predict_many(
        self, X: np.ndarray, t: np.ndarray | float, w: np.ndarray | float | None = None
    ) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def learn_predict_one(self, x: np.ndarray, t: float, w: float = 1.0) -> int:
        """Learn ``x`` seen at event time ``t`` with weight ``w``; return its cluster."""
        return int(self.learn_predict_many(np.asarray(x).reshape(1, -1), t, w)[0])

    def learn_one(self, x: np.ndarray, t: float, w: float = 1.0) -> None:
        """Learn ``x`` seen at event time ``t`` (River's ``learn_one``: returns nothing)."""
        self.learn_predict_one(x, t, w)

    def learn_many(
        self, X: np.ndarray, t: np.ndarray | float, w: np.ndarray | float | None = None
    ) -> None:
        """Learn the rows of ``X`` in order (River's ``learn_many``: returns nothing)."""
        self.learn_predict_many(X, t, w)


def check_points(X: np.ndarray, *, name: str = "X") -> np.ndarray:
    """``X`` as a 2-d float array ``[n, d]``; a 1-d array is one point.

    >>> check_points(np.array([1.0, 2.0])).shape
    (1, 2)
    """
    array = np.asarray(X)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array [n_points, dim], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array


def check_learn_inputs(
    X: np.ndarray, t: np.ndarray | float, w: np.ndarray | float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a batch to learn: points ``[n, d]``, event times ``[n]`` and weights ``[n]``.

    A scalar ``t`` or ``w`` applies to every point; ``w=None`` means weight 1.
    Times must be finite and weights finite and positive.

    >>> X, t, w = check_learn_inputs(np.ones((2, 3)), 5.0)
    >>> t.tolist(), w.tolist()
    ([5.0, 5.0], [1.0, 1.0])
    >>> check_learn_inputs(np.ones((2, 3)), [1.0, 2.0], [1.0, 0.0])
    Traceback (most recent call last):
    ...
    ValueError: weights must be finite and > 0, got 0.0 at row 1
    """
    points = check_points(X)
    n = points.shape[0]
    times = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,)) if np.ndim(t) == 0 else None
    if times is None:
        times = np.asarray(t, dtype=np.float64)
        if times.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},), got shape {times.shape}")
    if not np.all(np.isfinite(times)):
        bad = int(np.flatnonzero(~np.isfinite(times))[0])
        raise ValueError(f"event times must be finite epoch seconds, got {times[bad]} at row {bad}")
    if w is None:
        weights = np.ones(n, dtype=np.float64)
    elif np.ndim(w) == 0:
        weights = np.full(n, float(w))
    else:
        weights = np.asarray(w, dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"w must be a scalar or have shape ({n},), got shape {weights.shape}")
    ok = np.isfinite(weights) & (weights > 0)
    if not np.all(ok):
        bad = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"weights must be finite and > 0, got {weights[bad]} at row {bad}")
    return points, np.ascontiguousarray(times), weights
