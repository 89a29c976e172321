"""Hybrid ranking over the full catalogue, a batch of users at once.

Every signal is a dense ``[B, n_items]`` matrix, scaled per user to ``[0, 1]``
by its row maximum so that blend weights mean the same for every user:

==========================  =====================================================
source                      signal
==========================  =====================================================
``content``                 cosine of the item vector with the interest vector
``facet``                   rank within the closest facet, each facet given a
                            share of the top ``k`` by its importance
``centroid``                cosine with the centroid of the user's cluster
``transitions``             transitions from the user's last ``m`` items (global)
``cluster-transitions``     the same, counted among the user's cluster only
``cluster-popular``         decayed popularity within the user's cluster
``trending``                decayed global popularity with a short half-life
==========================  =====================================================

``score = Σ_s w_s · signal_s``; the item's ``source`` is the signal with the
largest weighted contribution. Consumed and non-recommendable items are
excluded before the top ``k`` are taken with ``argpartition``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.collaborative import CollaborativeCounts

__all__ = [
    "SOURCES",
    "BlendWeights",
    "HybridRanker",
    "RankedItem",
    "RankingRequest",
    "facet_shares",
    "facet_shares_many",
]

SOURCES = (
    "content",
    "facet",
    "centroid",
    "transitions",
    "cluster-transitions",
    "cluster-popular",
    "trending",
)


@dataclass(frozen=True, slots=True)
class BlendWeights:
    """Blend weight of each source (config ``weight_*``)."""

    content: float = 0.3
    facet: float = 0.1
    centroid: float = 0.05
    transitions: float = 1.0
    cluster_transitions: float = 0.2
    cluster_popular: float = 0.05
    trending: float = 0.1

    def of(self, source: str) -> float:
        return float(getattr(self, source.replace("-", "_")))


@dataclass(frozen=True, slots=True)
class RankingRequest:
    """What the ranker needs to know about one user.

    ``recent`` holds item indices, most recent first; ``exclude`` the indices
    never to return (already consumed).
    """

    interest: np.ndarray | None
    facets: np.ndarray | None
    facet_importance: np.ndarray | None
    cluster: int | None
    centroid: np.ndarray | None
    recent: Sequence[int]
    exclude: np.ndarray


@dataclass(frozen=True, slots=True)
class RankedItem:
    index: int
    score: float
    source: str


def _row_max_scale(matrix: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Clip at 0 and scale each row so its best *allowed* item scores 1, in place."""
    np.maximum(matrix, 0.0, out=matrix)
    if not matrix.shape[1]:
        return matrix
    peak = np.where(allowed, matrix, 0.0).max(axis=1, keepdims=True)
    np.divide(matrix, peak, out=matrix, where=peak > 0)
    return matrix


def facet_shares(
    similarity: np.ndarray, importance: np.ndarray, allowed: np.ndarray, k: int
) -> np.ndarray:
    """Facet signal that gives each facet a share of the top ``k`` by its importance.

    ``similarity`` is ``[F, n]`` (cosine of each facet with each item). Within
    facet ``f`` an allowed item of similarity rank ``r`` (0 = closest) scores
    ``1 / (1 + r / (importance_f · k))``; an item keeps its best facet's score.
    A facet of importance 0.3 thus places about 3 of the top 10, so a user
    with two unrelated interests is served both (PinnerSage-style).

    >>> sim = np.array([[0.9, 0.8, 0.7, 0.1, 0.0], [0.0, 0.1, 0.2, 0.9, 0.8]])
    >>> np.round(facet_shares(sim, np.array([0.5, 0.5]), np.ones(5, bool), k=2), 2).tolist()
    [1.0, 0.5, 0.33, 1.0, 0.5]
    """
    owners = np.zeros(len(similarity), np.int64)
    return facet_shares_many(similarity, importance, owners, allowed[None, :], k)[0]


def facet_shares_many(
    similarity: np.ndarray,
    importance: np.ndarray,
    owners: np.ndarray,
    allowed: np.ndarray,
    k: int,
) -> np.ndarray:
    """:func:`facet_shares` of many users at once: ``[B, n]`` from every user's facets.

    ``similarity`` ``[F_total, n]`` stacks the facets of all users, ``importance``
    ``[F_total]`` their importances, ``owners`` ``[F_total]`` the row of
    ``allowed`` (``[B, n]``) each facet belongs to. One partition, one sort
    and one scatter for the whole batch; only a facet's ``3k`` closest items
    score.

    >>> sim = np.array([[0.9, 0.8, 0.7, 0.1, 0.0], [0.0, 0.1, 0.2, 0.9, 0.8]])
    >>> allowed = np.array([[True, True, True, True, True], [False, True, True, True, True]])
    >>> np.round(facet_shares_many(sim, np.array([1.0, 1.0]), np.array([0, 1]), allowed, k=1), 2)
    array([[1.  , 0.5 , 0.33, 0.  , 0.  ],
           [0.  , 0.  , 0.33, 1.  , 0.5 ]])
    """
    n_rows, n_items = allowed.shape
    out = np.zeros((n_rows, n_items))
    depth = min(n_items, 3 * k)
    if depth == 0 or not len(similarity):
        return out
    masked = np.where(allowed[owners], similarity, -np.inf)
    top = np.argpartition(-masked, depth - 1, axis=1)[:, :depth]
    values = np.take_along_axis(masked, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    cand = np.take_along_axis(top, order, axis=1)
    finite = np.isfinite(np.take_along_axis(values, order, axis=1))
    share = np.maximum(np.asarray(importance, np.float64), 1e-6)[:, None] * k
    scores = np.where(finite, 1.0 / (1.0 + np.arange(depth)[None, :] / share), 0.0)
    np.maximum.at(out, (np.broadcast_to(owners[:, None], cand.shape), cand), scores)
    return out


class HybridRanker:
    """Blend content, cluster and collaborative signals into top-k lists.

    Parameters
    ----------
    weights
        Blend weight per source.
    recency_decay
        ``d``: the transitions of the item ``r`` steps back count ``d^r``.
    recent_items
        ``m``: how many recent items transitions are read from.

    Examples
    --------
    >>> from models.collaborative import CollaborativeCounts
    >>> vectors = np.eye(3, dtype=np.float32)
    >>> counts = CollaborativeCounts()
    >>> counts.observe(item=0, previous=[], t=0.0, weight=1.0, cluster=None)
    >>> counts.observe(item=2, previous=[0], t=1.0, weight=1.0, cluster=None)
    >>> ranker = HybridRanker(BlendWeights(content=0.5, trending=0.0))
    >>> request = RankingRequest(interest=vectors[1], facets=None, facet_importance=None,
    ...     cluster=None, centroid=None, recent=[0], exclude=np.array([0]))
    >>> [(r.index, r.source) for r in ranker.rank([request], vectors, counts, k=2)[0]]
    [(2, 'transitions'), (1, 'content')]
    """

    def __init__(
        self,
        weights: BlendWeights | None = None,
        *,
        recency_decay: float = 0.7,
        transition_normalisation: float = 0.0,
        recent_items: int = 10,
    ) -> None:
        self.weights = weights or BlendWeights()
        self.recency_decay = recency_decay
        self.transition_normalisation = transition_normalisation
        self.recent_items = recent_items

    def rank(
        self,
        requests: Sequence[RankingRequest],
        item_vectors: np.ndarray,
        counts: CollaborativeCounts,
        *,
        k: int,
        recommendable: np.ndarray | None = None,
    ) -> list[list[RankedItem]]:
        """Top-``k`` items for each request, best first."""
        n_rows, n_items = len(requests), len(item_vectors)
        if n_rows == 0:
            return []
        allowed = np.ones((n_rows, n_items), bool)
        if recommendable is not None:
            allowed[:, ~recommendable[:n_items]] = False
        for row, request in enumerate(requests):
            if len(request.exclude):
                allowed[row, request.exclude[request.exclude < n_items]] = False
        total = np.zeros((n_rows, n_items))
        best = np.zeros((n_rows, n_items))
        source = np.zeros((n_rows, n_items), np.int8)
        for s, signal in self._signals(requests, item_vectors, counts, allowed, k):
            weight = self.weights.of(SOURCES[s])
            if weight == 0.0 or signal is None:
                continue
            contribution = weight * _row_max_scale(signal, allowed)
            total += contribution
            better = contribution > best
            best[better] = contribution[better]
            source[better] = s
        total[~allowed] = -np.inf
        k = min(k, n_items)
        top = np.argpartition(-total, k - 1, axis=1)[:, :k] if k else np.zeros((n_rows, 0), int)
        results: list[list[RankedItem]] = []
        for row in range(n_rows):
            cand = top[row][np.isfinite(total[row, top[row]])]
            cand = cand[np.lexsort((cand, -total[row, cand]))]
            results.append(
                [RankedItem(int(i), float(total[row, i]), SOURCES[source[row, i]]) for i in cand]
            )
        return results

    def _signals(
        self,
        requests: Sequence[RankingRequest],
        item_vectors: np.ndarray,
        counts: CollaborativeCounts,
        allowed: np.ndarray,
        k: int,
    ):
        """Yield ``(source index, [B, n] matrix)`` lazily, skipping zero weights."""
        w = self.weights
        n_items, dim = item_vectors.shape
        if w.content:
            interest = np.stack(
                [r.interest if r.interest is not None else np.zeros(dim) for r in requests]
            ).astype(np.float32)
            yield 0, (interest @ item_vectors.T).astype(np.float64)
        with_facets = [
            row for row, r in enumerate(requests) if r.facets is not None and len(r.facets)
        ]
        if w.facet and with_facets:
            # Every user's facets in one product and one ranking pass, not one per user.
            stacked = np.concatenate([requests[row].facets for row in with_facets])
            importance = np.concatenate([requests[row].facet_importance for row in with_facets])
            owners = np.repeat(
                np.asarray(with_facets, np.int64),
                [len(requests[row].facets) for row in with_facets],  # type: ignore[arg-type]
            )
            similarity = stacked.astype(np.float32) @ item_vectors.T
            yield 1, facet_shares_many(similarity, importance, owners, allowed, k)
        if w.centroid and any(r.centroid is not None for r in requests):
            # Users of one cluster share its centroid: score each cluster once.
            keys: list[object] = [
                None if r.centroid is None else ("row", row) if r.cluster is None else r.cluster
                for row, r in enumerate(requests)
            ]
            distinct: dict[object, np.ndarray] = {
                key: r.centroid
                for key, r in zip(keys, requests, strict=True)
                if r.centroid is not None
            }
            order = list(distinct)
            scores = np.stack([distinct[key] for key in order]).astype(np.float32) @ item_vectors.T
            position = {key: i for i, key in enumerate(order)}
            centroid_scores = np.zeros((len(requests), n_items))
            for row, key in enumerate(keys):
                if key is not None:
                    centroid_scores[row] = scores[position[key]]
            yield 2, centroid_scores
        recent = [list(r.recent[: self.recent_items]) for r in requests]
        if w.transitions:
            yield (
                3,
                counts.transition_scores(
                    recent,
                    n_items=n_items,
                    recency_decay=self.recency_decay,
                    normalisation=self.transition_normalisation,
                ),
            )
        clusters = [r.cluster for r in requests]
        if w.cluster_transitions and any(c is not None for c in clusters):
            yield (
                4,
                counts.transition_scores(
                    recent,
                    n_items=n_items,
                    recency_decay=self.recency_decay,
                    clusters=clusters,
                    normalisation=self.transition_normalisation,
                ),
            )
        if w.cluster_popular and any(c is not None for c in clusters):
            yield 5, counts.cluster_popularity_scores(clusters, n_items)
        if w.trending:
            yield 6, np.tile(counts.trending_scores(n_items), (len(requests), 1))
