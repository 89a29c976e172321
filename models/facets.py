"""Interest facets: a small clustering of one user's own window (PinnerSage-style).

A user who reads about both cycling and baking has a pooled interest vector
halfway between the two, close to neither. Facets keep up to ``F`` directions
instead. They are derived from the window each time (no extra state to
store or restore): a weighted spherical k-means with farthest-point seeding,

1. seed with the heaviest item; add as a new seed the item least similar to
   every seed while that similarity is below ``threshold`` (at most ``F``);
2. a few Lloyd rounds: assign each item to its most similar seed by cosine,
   set each facet to the normalised weighted sum of its items;
3. a facet's importance is the sum of its items' (recency-decayed) weights,
   normalised to sum to 1.

Because seeds open only below ``threshold``, a user with one interest has one
facet and a user with two unrelated interests gets both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["user_facets"]


def user_facets(
    vectors: np.ndarray,
    weights: np.ndarray,
    *,
    max_facets: int = 3,
    threshold: float = 0.55,
    rounds: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """``[n, d]`` unit item vectors and ``[n]`` weights → ``([f, d]`` facets, ``[f]`` importances).

    Examples
    --------
    >>> x = np.array([[1.0, 0.0], [0.98, 0.2], [0.0, 1.0]])
    >>> x = x / np.linalg.norm(x, axis=1, keepdims=True)
    >>> facets, importance = user_facets(x, np.array([1.0, 1.0, 2.0]), max_facets=3)
    >>> len(facets), np.round(importance, 2).tolist()
    (2, [0.5, 0.5])
    >>> user_facets(x[:2], np.ones(2))[1].tolist()     # one interest, one facet
    [1.0]
    """
    n = len(vectors)
    if n == 0 or max_facets == 0 or not np.any(weights > 0):
        return np.zeros((0, vectors.shape[1]), vectors.dtype), np.zeros(0)
    if n == 1:  # one item, one facet: what the rounds below would compute, without them
        norm = float(np.linalg.norm(vectors[0]))
        return (vectors[:1] / (norm or 1.0)).astype(vectors.dtype), np.ones(1)
    seeds = [int(np.argmax(weights))]
    best_sim = vectors @ vectors[seeds[0]]
    while len(seeds) < max_facets:
        candidate = int(np.argmin(np.where(weights > 0, best_sim, np.inf)))
        if best_sim[candidate] >= threshold:
            break
        seeds.append(candidate)
        best_sim = np.maximum(best_sim, vectors @ vectors[candidate])
    centres = vectors[seeds].astype(np.float64)
    previous = None
    for _ in range(rounds if len(seeds) > 1 else 1):
        assignment = np.argmax(vectors @ centres.T, axis=1)
        if previous is not None and np.array_equal(assignment, previous):
            break  # converged: another round would rebuild the same centres
        member = np.zeros((len(centres), n))
        member[assignment, np.arange(n)] = weights
        sums = member @ vectors
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        alive = norms[:, 0] > 0
        centres = sums[alive] / norms[alive]
        member = member[alive]
        previous = assignment if alive.all() else None
    importance = member.sum(axis=1)
    importance = importance / importance.sum()
    order = np.argsort(-importance, kind="stable")
    return centres[order].astype(vectors.dtype), importance[order]
