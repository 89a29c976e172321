"""Top-k with driftrec's one tie rule: higher score first, then the lower label.

The engine's ranking and every evaluation baseline order a list this way, so
an evaluation compares models, not tie policies. The label is the item's
catalogue index (the order items were first known); it is the position in
``scores`` unless the caller passes ``labels`` (a row of candidate columns, for
instance). The result depends on the scores alone, never on an
``argpartition`` tie lottery at the k-th place, so batched and one-by-one
calls agree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["top_k_indices"]


def top_k_indices(scores: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` best finite scores, best first; ties: lower label.

    ``-inf`` (or any non-finite score) marks an excluded item; fewer than ``k``
    positions come back when fewer items are allowed.

    >>> scores = np.array([0.5, 2.0, 0.5, -np.inf, 0.5, 1.0])
    >>> top_k_indices(scores, k=4).tolist()
    [1, 5, 0, 2]
    >>> top_k_indices(scores, k=4, labels=np.array([9, 0, 7, 0, 3, 0])).tolist()
    [1, 5, 4, 2]
    >>> top_k_indices(np.array([-np.inf, 1.0]), k=3).tolist()
    [1]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores, np.float64)
    label = np.arange(len(scores)) if labels is None else np.asarray(labels)
    allowed = np.isfinite(scores)
    n_allowed = int(allowed.sum())
    if n_allowed <= k:
        candidates = np.flatnonzero(allowed)
    else:
        finite = np.where(allowed, scores, -np.inf)
        kth = np.partition(finite, len(finite) - k)[len(finite) - k]  # the k-th best score
        above = np.flatnonzero(finite > kth)
        tied = np.flatnonzero(finite == kth)
        tied = tied[np.argsort(label[tied], kind="stable")][: k - len(above)]
        candidates = np.concatenate([above, tied])
    return candidates[np.lexsort((label[candidates], -scores[candidates]))]
