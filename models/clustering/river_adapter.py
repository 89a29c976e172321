"""Any River clusterer behind driftrec's :class:`~models.clustering.base.Clusterer` interface."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from models.clustering.base import NO_CLUSTER, LearnsInBatches, check_learn_inputs, check_points

__all__ = ["RiverClusterer"]


class RiverClusterer(LearnsInBatches):
    """Run a River clusterer (``river.cluster.*``) on numpy vectors.

    Each vector becomes River's feature dict ``{0: x_0, 1: x_1, ...}``. The
    event time ``t`` is accepted and ignored: River's clusterers keep their own
    clocks (KMeans has none; DBSTREAM, DenStream and CluStream count points).
    The weight ``w`` is passed on to a ``learn_predict_one`` that takes one (CluStream)
    and ignored otherwise. ``learn_predict_one`` returns the cluster the point is in
    right after learning it (KMeans's ``learn_predict_one`` where available,
    which is exactly the cluster that moved). ``predict_one`` returns ``None``
    while the wrapped model has no clusters to offer (nothing learned yet,
    DenStream or CluStream still initialising, DBSTREAM with no strong
    micro-cluster). ``learn_predict_many`` / ``predict_many`` loop over the rows: River
    learns one point at a time, at about 600 points/s for 384-d KMeans.

    Parameters
    ----------
    model
        A River clusterer instance; it is used (and mutated) in place.

    Examples
    --------
    >>> import numpy as np
    >>> from river import cluster
    >>> kmeans = cluster.KMeans(n_clusters=3, halflife=0.5, mu=0, sigma=0.001, seed=1)
    >>> model = RiverClusterer(kmeans)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    >>> labels = model.learn_predict_many(X, t=0.0)
    >>> bool(labels[0] == labels[2] != labels[1] == labels[3])
    True
    >>> model.predict_one(np.array([1.0, 0.05])) == int(labels[0])
    True
    """

    def __init__(self, model: Any) -> None:
        if not (hasattr(model, "learn_one") and hasattr(model, "predict_one")):
            raise TypeError(
                f"expected a River clusterer with learn_one/predict_one, got {type(model).__name__}"
            )
        self.model = model
        self._dim: int | None = None
        self._n_learned = 0
        learn_params = inspect.signature(model.learn_one).parameters
        self._learn_takes_weight = "w" in learn_params

    @staticmethod
    def _features(x: np.ndarray) -> dict[int, float]:
        return dict(enumerate(x.tolist()))

    def _check_dim(self, dim: int) -> None:
        if self._dim is None:
            self._dim = dim
        elif dim != self._dim:
            raise ValueError(f"points have dimension {dim}, this model was fed {self._dim}-d")

    def _is_initialised(self) -> bool:
        if not self._n_learned:  # also keeps River KMeans from drawing centres in predict
            return False
        if getattr(self.model, "initialized", True) is False:  # DenStream
            return False
        return getattr(self.model, "_initialized", True) is not False  # CluStream

    def _predict_features(self, features: dict[int, float]) -> int:
        if not self._is_initialised():
            return NO_CLUSTER
        try:
            label = self.model.predict_one(features)
        except ValueError:  # min() over no centres, e.g. STREAMKMeans before its first chunk
            return NO_CLUSTER
        # Checked after predicting: DenStream builds its clusters inside predict_one.
        centers = getattr(self.model, "centers", None)
        if label is None or label < 0 or (centers is not None and not len(centers)):
            return NO_CLUSTER
        return int(label)

    def predict_one(self, x: np.ndarray) -> int | None:
        """Cluster of ``x`` from the wrapped model, ``None`` when it has none."""
        label = int(self.predict_many(np.asarray(x).reshape(1, -1))[0])
        return None if label == NO_CLUSTER else label

    def learn_predict_many(
        self, X: np.ndarray, t: np.ndarray | float, w: np.ndarray | float | None = None
    ) -> np.ndarray:
        """Learn the rows of ``X`` one by one; return each one's cluster (int64)."""
        points, _, weights = check_learn_inputs(X, t, w)
        labels = np.empty(len(points), dtype=np.int64)
        if not len(points):
            return labels
        self._check_dim(points.shape[1])
        learn_predict = getattr(self.model, "learn_predict_one", None)
        for i, row in enumerate(points.astype(np.float64)):
            features = self._features(row)
            if learn_predict is not None:
                labels[i] = int(learn_predict(features))
                self._n_learned += 1
                continue
            if self._learn_takes_weight:
                self.model.learn_one(features, w=float(weights[i]))
            else:
                self.model.learn_one(features)
            self._n_learned += 1
            labels[i] = self._predict_features(features)
        return labels

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Clusters of the rows of ``X`` (int64, ``NO_CLUSTER`` where none)."""
        points = check_points(X)
        if len(points) and self._dim is not None and points.shape[1] != self._dim:
            raise ValueError(
                f"points have dimension {points.shape[1]}, model was fed {self._dim}-d"
            )
        return np.array(
            [self._predict_features(self._features(row)) for row in points.astype(np.float64)],
            dtype=np.int64,
        )

    def __repr__(self) -> str:
        return f"RiverClusterer({self.model!r})"
