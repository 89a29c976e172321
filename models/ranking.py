"""Hybrid ranking of a batch of users: seven signals blended over each user's columns.

The columns are the items a user is scored on: the whole catalogue in *exact*
mode (every signal a dense ``[B, n_items]`` matrix), or the user's own
candidates in *two-stage* mode (``[B, C]``, see :mod:`models.candidates`).
The blend is the same code in both, so two-stage equals exact whenever the
candidates hold every allowed item. Each signal is scaled per user to
``[0, 1]`` by its maximum over the user's allowed columns, so that blend
weights mean the same for every user:

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
excluded. **Tie rule** (one for the engine and every baseline): higher score
first, then the lower catalogue index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.collaborative import CollaborativeCounts, dense_rows
from models.settings import EngineSettings
from models.top_k import top_k_indices

__all__ = [
    "SOURCES",
    "BlendWeights",
    "Columns",
    "HybridRanker",
    "RankedItem",
    "RankingRequest",
    "facet_shares",
    "facet_shares_many",
    "scatter_columns",
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
    #: Whose request it is: lets two-stage ranking reuse the user's earlier index answers.
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class RankedItem:
    index: int
    score: float
    source: str
    #: The user's recent item that brought it (catalogue index), where one did.
    because: int | None = None


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


@dataclass(frozen=True, slots=True)
class Columns:
    """The items each row of a batch is scored on.

    ``items`` is ``[B, C]`` catalogue indices (``-1`` pads a short row);
    ``allowed`` marks the columns that may be returned (recommendable, not
    consumed, not padding). ``shared`` says every row's columns are the
    catalogue itself, ``items[b] = 0..n-1`` (exact mode): signals are then
    plain products with the item matrix.
    """

    items: np.ndarray
    allowed: np.ndarray
    shared: bool
    _lookup: list[tuple[int, np.ndarray, np.ndarray]] = field(
        default_factory=list, repr=False, compare=False
    )

    def cell_lookup(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(stride, sorted cell keys row·stride + item, their flat positions)``.

        Built once per batch and shared by every sparse signal scattered onto
        these columns (padding cells get key -1).
        """
        if not self._lookup:
            stride = int(self.items.max(initial=0)) + 1
            n_rows = self.items.shape[0]
            keys = np.arange(n_rows, dtype=np.int64)[:, None] * stride + self.items
            keys = np.where(self.items >= 0, keys, -1).reshape(-1)
            order = np.argsort(keys, kind="stable")
            self._lookup.append((stride, keys[order], order))
        return self._lookup[0]

    @classmethod
    def catalogue(
        cls, requests: Sequence[RankingRequest], n_items: int, recommendable: np.ndarray | None
    ) -> Columns:
        """Exact mode: every row scores the whole catalogue."""
        allowed = np.ones((len(requests), n_items), bool)
        if recommendable is not None:
            allowed[:, ~recommendable[:n_items]] = False
        for row, request in enumerate(requests):
            if len(request.exclude):
                allowed[row, request.exclude[request.exclude < n_items]] = False
        items = np.broadcast_to(np.arange(n_items, dtype=np.int64), allowed.shape)
        return cls(items, allowed, shared=True)


SparseSignal = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(rows, items, values)``: a signal known only where it is non-zero (summed per cell)."""


def scatter_columns(signal: SparseSignal, columns: Columns) -> np.ndarray:
    """``[B, C]`` values of a sparse signal at each row's columns (0 where it has none).

    >>> cols = Columns(np.array([[4, 2, -1], [2, 7, 9]]), np.ones((2, 3), bool), shared=False)
    >>> scatter_columns((np.array([0, 1, 1, 0]), np.array([2, 9, 9, 7]),
    ...                  np.array([1.0, 2.0, 0.5, 9.0])), cols).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 2.5]]
    """
    rows, items, values = signal
    n_rows, width = columns.items.shape
    if columns.shared:
        return dense_rows(rows, items, values, n_rows, width)
    if not len(rows) or not columns.items.size:
        return np.zeros((n_rows, width))
    stride, sorted_keys, order = columns.cell_lookup()
    inside = items < stride  # an item past every column's cannot be a column
    wanted = rows[inside] * stride + items[inside]
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    hit = sorted_keys[at] == wanted
    if not hit.any():
        return np.zeros((n_rows, width))
    flat = np.bincount(order[at[hit]], weights=values[inside][hit], minlength=n_rows * width)
    return flat.reshape(n_rows, width)


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
    >>> from models.collaborative import CollaborativeCounts, dense_rows
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

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> HybridRanker:
        """The blend as the engine's settings configure it."""
        return cls(
            BlendWeights(
                content=settings.weight_content,
                facet=settings.weight_facets,
                centroid=settings.weight_centroid,
                transitions=settings.weight_transitions,
                cluster_transitions=settings.weight_cluster_transitions,
                cluster_popular=settings.weight_cluster_popularity,
                trending=settings.weight_trending,
            ),
            recency_decay=settings.score_recency_decay,
            transition_normalisation=settings.transition_normalisation,
            recent_items=settings.score_recent_items,
        )

    def rank(
        self,
        requests: Sequence[RankingRequest],
        item_vectors: np.ndarray,
        counts: CollaborativeCounts,
        *,
        k: int,
        recommendable: np.ndarray | None = None,
    ) -> list[list[RankedItem]]:
        """Top-``k`` items for each request over the whole catalogue (exact mode), best first."""
        if not requests:
            return []
        columns = Columns.catalogue(requests, len(item_vectors), recommendable)
        return self.blend(
            requests, item_vectors, counts, columns, self.sparse_signals(requests, counts), k=k
        )

    def sparse_signals(
        self, requests: Sequence[RankingRequest], counts: CollaborativeCounts
    ) -> dict[int, SparseSignal]:
        """The batch's collaborative signals, by source index, read once from the counts.

        Their cost is the number of successors read, not the catalogue's size;
        two-stage ranking also draws candidates from them.
        """
        w = self.weights
        out: dict[int, SparseSignal] = {}
        recent = [list(r.recent[: self.recent_items]) for r in requests]
        clusters = [r.cluster for r in requests]
        has_cluster = any(c is not None for c in clusters)
        if w.transitions:
            out[3] = counts.transition_pairs(
                recent,
                recency_decay=self.recency_decay,
                normalisation=self.transition_normalisation,
            )
        if w.cluster_transitions and has_cluster:
            out[4] = counts.transition_pairs(
                recent,
                recency_decay=self.recency_decay,
                clusters=clusters,
                normalisation=self.transition_normalisation,
            )
        if w.cluster_popular and has_cluster:
            out[5] = counts.cluster_popularity_pairs(clusters)
        return out

    def blend(
        self,
        requests: Sequence[RankingRequest],
        item_vectors: np.ndarray,
        counts: CollaborativeCounts,
        columns: Columns,
        sparse: dict[int, SparseSignal],
        *,
        k: int,
    ) -> list[list[RankedItem]]:
        """Top-``k`` of each row's allowed columns, best first (ties: lower item index)."""
        n_rows, width = columns.allowed.shape
        allowed = columns.allowed
        total = np.zeros((n_rows, width))
        best = np.zeros((n_rows, width))
        source = np.zeros((n_rows, width), np.int8)
        for s, signal in self._signals(requests, item_vectors, counts, columns, sparse, k):
            weight = self.weights.of(SOURCES[s])
            if weight == 0.0 or signal is None:
                continue
            contribution = weight * _row_max_scale(signal, allowed)
            total += contribution
            better = contribution > best
            best[better] = contribution[better]
            source[better] = s
        total[~allowed] = -np.inf
        k = min(k, width)
        top = np.argpartition(-total, k - 1, axis=1)[:, :k] if k else np.zeros((n_rows, 0), int)
        # argpartition picks arbitrarily among items tied at the k-th score; rows with such a
        # tie are ranked again by models/top_k.py's one rule (score, then lower item index).
        kth = np.take_along_axis(total, top, axis=1).min(axis=1, initial=np.inf)
        tied = (total >= kth[:, None]).sum(axis=1) > k
        results: list[list[RankedItem]] = []
        for row in range(n_rows):
            if tied[row] and np.isfinite(kth[row]):
                cand = top_k_indices(total[row], k, labels=columns.items[row])
            else:
                cand = top[row][np.isfinite(total[row, top[row]])]
                cand = cand[np.lexsort((columns.items[row, cand], -total[row, cand]))]
            results.append(
                [
                    RankedItem(int(i), float(total[row, c]), SOURCES[source[row, c]])
                    for c, i in zip(cand.tolist(), columns.items[row, cand].tolist(), strict=True)
                ]
            )
        return results

    def _signals(
        self,
        requests: Sequence[RankingRequest],
        item_vectors: np.ndarray,
        counts: CollaborativeCounts,
        columns: Columns,
        sparse: dict[int, SparseSignal],
        k: int,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(source index, [B, C] matrix)`` lazily, skipping zero weights."""
        w = self.weights
        with_facets = (
            [row for row, r in enumerate(requests) if r.facets is not None and len(r.facets)]
            if w.facet
            else []
        )
        with_centroid = w.centroid and any(r.centroid is not None for r in requests)
        similarities = _vector_similarities(
            requests,
            item_vectors,
            columns,
            with_facets,
            content=bool(w.content),
            centroid=bool(with_centroid),
        )
        if similarities.content is not None:
            yield 0, similarities.content
        if with_facets:
            importance = np.concatenate([requests[row].facet_importance for row in with_facets])
            yield (
                1,
                facet_shares_many(
                    similarities.facets, importance, similarities.facet_owners, columns.allowed, k
                ),
            )
        if similarities.centroid is not None:
            yield 2, similarities.centroid
        for s in (3, 4, 5):
            if s in sparse:
                yield s, scatter_columns(sparse[s], columns)
        if w.trending:
            values = counts.trending.values
            if columns.shared:
                yield 6, np.tile(counts.trending_scores(columns.items.shape[1]), (len(requests), 1))
            else:
                items = columns.items
                inside = (items >= 0) & (items < len(values))
                yield 6, np.where(inside, values[np.where(inside, items, 0)], 0.0)


def _facets(request: RankingRequest) -> np.ndarray:
    return request.facets if request.facets is not None else np.zeros((0, 0), np.float32)


@dataclass(slots=True)
class _Similarities:
    content: np.ndarray | None = None
    centroid: np.ndarray | None = None
    facets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    facet_owners: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _vector_similarities(
    requests: Sequence[RankingRequest],
    item_vectors: np.ndarray,
    columns: Columns,
    with_facets: list[int],
    *,
    content: bool,
    centroid: bool,
) -> _Similarities:
    """Cosines of each row's columns with its interest, facets and cluster centroid."""
    n_rows = len(requests)
    dim = item_vectors.shape[1]
    out = _Similarities()
    facet_counts = [len(_facets(requests[row])) for row in with_facets]
    out.facet_owners = np.repeat(np.asarray(with_facets, np.int64), facet_counts)
    if columns.shared:
        vectors_t = item_vectors.T
        if content:
            interest = np.stack(
                [r.interest if r.interest is not None else np.zeros(dim) for r in requests]
            ).astype(np.float32)
            out.content = (interest @ vectors_t).astype(np.float64)
        if with_facets:
            stacked = np.concatenate([requests[row].facets for row in with_facets])
            out.facets = stacked.astype(np.float32) @ vectors_t
        if centroid:
            out.centroid = _centroid_scores(requests, vectors_t)
        return out
    # Per-row columns: one gather of each row's candidate vectors, one batched product
    # with that row's queries [interest, centroid, facet 1..F].
    n_facets = max(facet_counts, default=0)
    queries = np.zeros((n_rows, 2 + n_facets, dim), np.float32)
    for row, r in enumerate(requests):
        if content and r.interest is not None:
            queries[row, 0] = r.interest
        if centroid and r.centroid is not None:
            queries[row, 1] = r.centroid
    for row, count in zip(with_facets, facet_counts, strict=True):
        queries[row, 2 : 2 + count] = requests[row].facets
    # Row by row over the filled slots only: a batched matmul over the padded
    # [rows, width, d] gather was 2-60x slower (numpy's fallback loop, padding).
    sims = np.zeros((n_rows, columns.items.shape[1], queries.shape[1]), np.float32)
    for row in range(n_rows):
        slots = np.flatnonzero(columns.items[row] >= 0)
        if len(slots):
            sims[row, slots] = (
                np.take(item_vectors, columns.items[row, slots], axis=0) @ queries[row].T
            )
    if content:
        out.content = sims[:, :, 0].astype(np.float64)
    if centroid:
        out.centroid = sims[:, :, 1].astype(np.float64)
    if with_facets:
        slot = np.concatenate([np.arange(count) for count in facet_counts]) + 2
        out.facets = sims[out.facet_owners, :, slot]
    return out


def _centroid_scores(requests: Sequence[RankingRequest], vectors_t: np.ndarray) -> np.ndarray:
    """``[B, n]`` cosine with each row's centroid; users of one cluster share one product."""
    keys: list[object] = [
        None if r.centroid is None else ("row", row) if r.cluster is None else r.cluster
        for row, r in enumerate(requests)
    ]
    distinct: dict[object, np.ndarray] = {
        key: r.centroid for key, r in zip(keys, requests, strict=True) if r.centroid is not None
    }
    order = list(distinct)
    scores = np.stack([distinct[key] for key in order]).astype(np.float32) @ vectors_t
    position = {key: i for i, key in enumerate(order)}
    out = np.zeros((len(requests), vectors_t.shape[1]))
    for row, key in enumerate(keys):
        if key is not None:
            out[row] = scores[position[key]]
    return out
