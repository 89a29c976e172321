"""Synthetic drifting streams of unit vectors with ground-truth cluster labels.

They stand in for users' interest vectors (L2-normalised sentence embeddings)
when measuring a clusterer: how well it finds the interests, and how well it
follows them when, partway through, some interests move, some fade out and
new ones appear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DriftStream", "drifting_clusters", "expected_cosine"]

DAY_S = 86_400.0


def expected_cosine(noise: float) -> tuple[float, float]:
    """Expected cosine ``(point-to-centre, point-to-point of the same cluster)`` in high dimension.

    A point is ``c + noise * g / sqrt(dim)`` with ``g`` standard normal,
    renormalised; the noise has norm ``≈ noise`` and is nearly orthogonal to
    ``c``, so the point's cosine with its centre is ``1 / sqrt(1 + noise²)``
    and two points of one cluster have cosine ``1 / (1 + noise²)``.

    >>> [round(v, 3) for v in expected_cosine(0.5)]
    [0.894, 0.8]
    >>> [round(v, 3) for v in expected_cosine(1.0)]
    [0.707, 0.5]
    """
    to_centre = 1.0 / math.sqrt(1.0 + noise * noise)
    return to_centre, to_centre * to_centre


@dataclass(frozen=True, eq=False)
class DriftStream:
    """A drifting stream: points, their true clusters and their event times.

    Attributes
    ----------
    X
        Unit-norm points, float32 ``[n, dim]``.
    y
        True cluster label of each point (int64).
    t
        Event times, epoch seconds, ascending (float64).
    drift_start, drift_end
        Event times between which the drift happens (equal when it is abrupt).
    rotated, vanished, appeared
        Labels of the clusters that move, fade out, and appear.
    noise
        Noise level; see :func:`expected_cosine`.
    """

    X: np.ndarray
    y: np.ndarray
    t: np.ndarray
    drift_start: float
    drift_end: float
    rotated: tuple[int, ...]
    vanished: tuple[int, ...]
    appeared: tuple[int, ...]
    noise: float

    def __len__(self) -> int:
        return len(self.y)

    def between(self, start: float, stop: float) -> np.ndarray:
        """Boolean mask of the points in the fraction ``[start, stop)`` of the stream, by index."""
        index = np.arange(len(self.y))
        return (index >= start * len(self.y)) & (index < stop * len(self.y))


def drifting_clusters(
    n_points: int = 20_000,
    dim: int = 384,
    n_clusters: int = 20,
    noise: float = 0.5,
    seed: int = 0,
    drift_at: float = 0.5,
    drift_width: float = 0.1,
    n_rotate: int = 4,
    n_vanish: int = 4,
    n_appear: int = 4,
    rotate_angle: float = math.pi / 2,
    centre_cosine: float = 0.0,
    start_ts: float = 1_700_000_000.0,
    span_s: float = 60 * DAY_S,
) -> DriftStream:
    """Points around ``n_clusters`` random unit centres whose mix drifts partway through.

    Event times are uniform over ``[start_ts, start_ts + span_s)`` (sorted).
    Each point picks a cluster uniformly among the active ones and lands at
    ``centre + noise * g / sqrt(dim)`` (``g`` standard normal), renormalised;
    :func:`expected_cosine` gives the resulting cosines (``noise=0.5``: 0.89
    to the centre, 0.80 between points of a cluster - tight interests;
    ``noise=1.0``: 0.71 and 0.50, as loose as related sentence embeddings).
    Random centres in high dimension are nearly orthogonal (cosine ≈ 0 ± 1/√dim);
    ``centre_cosine`` > 0 gives them a shared component so that any two have
    about that cosine, like the anisotropic embeddings of real text encoders
    (unrelated MiniLM sentences: 0-0.3).

    The drift is **gradual**: it runs over the fraction ``[drift_at, drift_at +
    drift_width]`` of the time span (``drift_width=0`` makes it abrupt).
    Across it, ``n_rotate`` clusters turn their centre smoothly by
    ``rotate_angle`` radians along a great circle towards a random orthogonal
    direction (keeping their label: the same interest, moved), ``n_vanish``
    clusters fade out (their share of points falls linearly to zero) and
    ``n_appear`` new clusters, with new labels ``n_clusters, ...``, fade in.

    >>> stream = drifting_clusters(n_points=2000, dim=64, noise=0.5, seed=1)
    >>> stream.X.shape, stream.X.dtype, bool(np.all(np.diff(stream.t) >= 0))
    ((2000, 64), dtype('float32'), True)
    >>> early, late = stream.between(0, 0.5), stream.between(0.75, 1)
    >>> sorted(set(stream.y[early].tolist())) == list(range(20))
    True
    >>> late_labels = set(stream.y[late].tolist())
    >>> late_labels >= set(stream.appeared), late_labels & set(stream.vanished)
    (True, set())
    >>> centre = stream.X[stream.y == 0][:200].mean(axis=0)
    >>> cos = stream.X[stream.y == 0][:200] @ (centre / np.linalg.norm(centre))
    >>> round(float(cos.mean()), 2)
    0.89
    """
    if n_rotate + n_vanish > n_clusters:
        raise ValueError(
            f"n_rotate + n_vanish = {n_rotate + n_vanish} clusters must fit in n_clusters = "
            f"{n_clusters}"
        )
    if not 0.0 <= drift_at <= 1.0 or drift_width < 0 or drift_at + drift_width > 1.0:
        raise ValueError(
            f"need 0 <= drift_at <= drift_at + drift_width <= 1, got drift_at={drift_at}, "
            f"drift_width={drift_width}"
        )
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not 0.0 <= centre_cosine < 1.0:
        raise ValueError(f"centre_cosine must be in [0, 1), got {centre_cosine}")
    rng = np.random.default_rng(seed)
    n_labels = n_clusters + n_appear
    centres = rng.normal(size=(n_labels, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if centre_cosine > 0:
        shared = rng.normal(size=dim)
        shared /= np.linalg.norm(shared)
        centres = math.sqrt(centre_cosine) * shared + math.sqrt(1.0 - centre_cosine) * centres
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    chosen = rng.permutation(n_clusters)
    rotated = np.sort(chosen[:n_rotate])
    vanished = np.sort(chosen[n_rotate : n_rotate + n_vanish])
    appeared = np.arange(n_clusters, n_labels)
    # Rotation targets: random directions orthogonal to their cluster's centre.
    targets = rng.normal(size=(n_rotate, dim))
    targets -= np.sum(targets * centres[rotated], axis=1, keepdims=True) * centres[rotated]
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)

    fraction = np.sort(rng.uniform(0.0, 1.0, size=n_points))
    t = start_ts + span_s * fraction
    if drift_width > 0:
        progress = np.clip((fraction - drift_at) / drift_width, 0.0, 1.0)
    else:
        progress = (fraction >= drift_at).astype(np.float64)

    share = np.ones((n_points, n_labels))
    share[:, vanished] = (1.0 - progress)[:, None]
    share[:, appeared] = progress[:, None]
    cumulative = np.cumsum(share, axis=1)
    draw = rng.uniform(0.0, 1.0, size=n_points) * cumulative[:, -1]
    y = np.minimum((cumulative < draw[:, None]).sum(axis=1), n_labels - 1).astype(np.int64)

    point_centres = centres[y]
    moving = np.isin(y, rotated)
    if moving.any():
        which = np.searchsorted(rotated, y[moving])
        angle = rotate_angle * progress[moving][:, None]
        point_centres[moving] = np.cos(angle) * centres[y[moving]] + np.sin(angle) * targets[which]
    X = point_centres + noise * rng.normal(size=(n_points, dim)) / math.sqrt(dim)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    drift_start = start_ts + span_s * drift_at
    return DriftStream(
        X=X.astype(np.float32),
        y=y,
        t=t,
        drift_start=drift_start,
        drift_end=drift_start + span_s * drift_width,
        rotated=tuple(rotated.tolist()),
        vanished=tuple(vanished.tolist()),
        appeared=tuple(appeared.tolist()),
        noise=float(noise),
    )
