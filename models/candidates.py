"""Two-stage ranking: a few hundred candidates per user first, then the blend over those only.

Scoring every catalogue item for every user costs ``B × n`` per signal; at 10^5
items and a batch of 256 different shoppers that is what made ranking slow.
As production recommenders do (YouTube, PinnerSage, SimClusters), each user
first gets a budget of candidates, merged and de-duplicated, from the places
where a good item can come from:

==========================  =====================================================
source                      candidates
==========================  =====================================================
transitions                 the highest-scoring successors of the user's recent
                            items (global, then within the user's cluster)
nearest                     the items nearest the interest vector, from the
                            approximate nearest-neighbour index
facets                      the items nearest each facet (users with ≥ 2 facets)
cluster                     the cluster's list: items nearest its centroid
                            (kept per cluster, refreshed when the centroid moves)
                            and its most consumed items
trending                    the heads of the trending list
==========================  =====================================================

Consumed, deleted and not-yet-encoded items are dropped; the survivors are
scored by :meth:`models.ranking.HybridRanker.blend`, the same code as exact
mode, so each item's ``source`` is what it is there. Nothing here grows with
the catalogue: each source costs its share of the budget (the index search
``O(log n)``), the exclusion is a lookup in the user's own history.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.collaborative import CollaborativeCounts
from models.ranking import Columns, HybridRanker, RankedItem, RankingRequest, SparseSignal
from models.vector_index import ItemIndex

__all__ = ["CandidateBudget", "TwoStageRanker"]


@dataclass(frozen=True, slots=True)
class CandidateBudget:
    """How many candidates each source may add per user (before de-duplication).

    :meth:`split` divides a total the way the defaults were chosen: the
    transitions carry most of the blend's weight, so they get the largest share.
    """

    transitions: int = 120
    cluster_transitions: int = 30
    nearest: int = 60
    facet: int = 30
    cluster_nearest: int = 40
    cluster_popular: int = 20
    trending: int = 20

    @classmethod
    def split(cls, total: int) -> CandidateBudget:
        """A budget of about ``total`` candidates per user in the default proportions.

        >>> CandidateBudget.split(320).transitions, sum(CandidateBudget.split(640).shares())
        (120, 640)
        """
        base = cls()
        scale = total / sum(base.shares())
        fields = cls.__dataclass_fields__
        values = {name: max(1, round(getattr(base, name) * scale)) for name in fields}
        return cls(**values)

    def shares(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)


class _ClusterLists:
    """Per cluster, the items nearest its centroid, refreshed when the centroid moves."""

    def __init__(self, size: int, *, tolerance: float = 0.995) -> None:
        self.size = size
        self.tolerance = tolerance
        self._lists: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}

    def nearest(
        self, wanted: dict[int, np.ndarray], index: ItemIndex, changes: int
    ) -> dict[int, np.ndarray]:
        """``{cluster: items}`` for the batch's clusters; stale lists are queried in one batch."""
        stale = []
        for cluster, centroid in wanted.items():
            cached = self._lists.get(cluster)
            if (
                cached is None
                or float(np.dot(cached[0], centroid)) < self.tolerance
                or changes - cached[2] > max(100, len(index) // 100)
            ):
                stale.append(cluster)
        if stale:
            keys, _ = index.search(np.stack([wanted[c] for c in stale]), self.size)
            for cluster, row in zip(stale, keys, strict=True):
                self._lists[cluster] = (wanted[cluster].copy(), row[row >= 0], changes)
        if len(self._lists) > 4 * max(1, len(wanted)) + 256:  # forget retired clusters
            self._lists = {c: v for c, v in self._lists.items() if c in wanted}
        return {cluster: self._lists[cluster][1] for cluster in wanted}


_Entry = tuple[np.ndarray, np.ndarray, int]


class _UserLists:
    """Per user, the index's answers to last batch's queries (interest and facets).

    A shopper's next event moves the facet it falls in; the other facets, and
    the interest of a long window, barely move. A query within ``tolerance``
    (cosine) of one the user asked before, with at least the depth wanted and
    no more than ``max(100, n/100)`` index changes ago, gets that answer again
    instead of a graph search: the blend re-scores every candidate exactly, so
    a list that is a little old costs only the few items that would have
    entered it since. The ``capacity`` most recently ranked users are kept.
    """

    def __init__(self, capacity: int, *, tolerance: float = 0.99) -> None:
        self.capacity = capacity
        self.tolerance = tolerance
        self._lists: OrderedDict[str, list[_Entry]] = OrderedDict()
        self.reused = 0  #: queries answered from the lists (a running count)
        self.searched = 0  #: queries the index answered

    def nearest(
        self,
        queries: Sequence[tuple[int, str | None, np.ndarray, int]],
        index: ItemIndex,
        changes: int,
    ) -> list[tuple[int, np.ndarray]]:
        """``(row, items)`` for each ``(row, user, vector, depth)`` query, in order."""
        stale_after = max(100, len(index) // 100)
        # An entry is (the vector asked, its answer, the index's change count then); a
        # reused entry keeps its own vector and count, so drift never accumulates.
        entries: list[_Entry | None] = [None] * len(queries)
        by_user: dict[str, list[int]] = {}
        for q, query in enumerate(queries):
            if query[1] is not None:
                by_user.setdefault(query[1], []).append(q)
        for user, asked in by_user.items():
            cached = self._lists.get(user)
            if not cached:
                continue
            # One product per user: its queries against every list it holds.
            sims = np.stack([queries[q][2] for q in asked]) @ np.stack([e[0] for e in cached]).T
            for q, row in zip(asked, sims, strict=True):
                depth = queries[q][3]
                for j in np.flatnonzero(row >= self.tolerance)[
                    np.argsort(-row[row >= self.tolerance])
                ]:
                    entry = cached[j]
                    if len(entry[1]) >= depth and changes - entry[2] <= stale_after:
                        entries[q] = entry
                        break
        missing = [q for q, e in enumerate(entries) if e is None]
        self.reused += len(queries) - len(missing)
        self.searched += len(missing)
        for depth in sorted({queries[q][3] for q in missing}):  # one search per depth
            asked = [q for q in missing if queries[q][3] == depth]
            keys, _ = index.search(np.stack([queries[q][2] for q in asked]), depth)
            for q, row in zip(asked, keys, strict=True):
                # Kept small: float16 query, int32 keys (~1 KB for a query of depth 60).
                entries[q] = (
                    queries[q][2].astype(np.float16),
                    row[row >= 0].astype(np.int32),
                    changes,
                )
        done = [e for e in entries if e is not None]
        assert len(done) == len(queries)
        if self.capacity:
            for user, asked in by_user.items():
                self._lists[user] = [done[q] for q in asked]
                self._lists.move_to_end(user)
            while len(self._lists) > self.capacity:
                self._lists.popitem(last=False)
        return [
            (query[0], entry[1][: query[3]]) for query, entry in zip(queries, done, strict=True)
        ]


class TwoStageRanker:
    """Candidates per user from counts, index and cluster lists, then the hybrid blend.

    Parameters
    ----------
    ranker
        The blend (weights, recency) shared with exact mode.
    budget
        Candidates per source and user.
    user_lists
        How many users' index answers to keep for reuse (0: search every time).

    Examples
    --------
    >>> from models.collaborative import CollaborativeCounts
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index = ItemIndex(dim=4); index.upsert(range(4), vectors)
    >>> counts = CollaborativeCounts()
    >>> counts.observe(item=0, previous=[], t=0.0, weight=1.0, cluster=None)
    >>> counts.observe(item=3, previous=[0], t=1.0, weight=1.0, cluster=None)
    >>> two_stage = TwoStageRanker(HybridRanker(), CandidateBudget.split(8))
    >>> request = RankingRequest(interest=vectors[1], facets=None, facet_importance=None,
    ...     cluster=None, centroid=None, recent=[0], exclude=np.array([0]))
    >>> ranked = two_stage.rank([request], vectors, counts, index, k=2,
    ...     recommendable=np.ones(4, bool), index_changes=0)
    >>> [(r.index, r.source) for r in ranked[0]]
    [(3, 'transitions'), (1, 'content')]
    """

    def __init__(
        self,
        ranker: HybridRanker,
        budget: CandidateBudget | None = None,
        *,
        user_lists: int = 20_000,
    ) -> None:
        self.ranker = ranker
        self.budget = budget or CandidateBudget()
        self._cluster_lists = _ClusterLists(self.budget.cluster_nearest)
        self._user_lists = _UserLists(user_lists)
        self.last_candidates = 0.0  #: mean candidates per user in the last batch

    def rank(
        self,
        requests: Sequence[RankingRequest],
        item_vectors: np.ndarray,
        counts: CollaborativeCounts,
        index: ItemIndex,
        *,
        k: int,
        recommendable: np.ndarray,
        index_changes: int,
    ) -> list[list[RankedItem]]:
        """Top-``k`` of each user's candidates, best first (ties: lower item index)."""
        if not requests:
            return []
        sparse = self.ranker.sparse_signals(requests, counts)
        columns = self.candidates(
            requests,
            sparse,
            counts,
            index,
            recommendable=recommendable,
            index_changes=index_changes,
        )
        return self.ranker.blend(requests, item_vectors, counts, columns, sparse, k=k)

    def candidates(
        self,
        requests: Sequence[RankingRequest],
        sparse: dict[int, SparseSignal],
        counts: CollaborativeCounts,
        index: ItemIndex,
        *,
        recommendable: np.ndarray,
        index_changes: int,
    ) -> Columns:
        """Each user's merged, de-duplicated, allowed candidates as ranking columns."""
        budget = self.budget
        n_rows = len(requests)
        rows: list[np.ndarray] = []
        items: list[np.ndarray] = []

        def add(row_ids: np.ndarray, item_ids: np.ndarray) -> None:
            rows.append(np.asarray(row_ids, np.int64).reshape(-1))
            items.append(np.asarray(item_ids, np.int64).reshape(-1))

        for source, limit in ((3, budget.transitions), (4, budget.cluster_transitions)):
            if source in sparse:
                add(*_top_per_row(sparse[source], limit))
        # The index: each interest vector, and each facet of users with several; a
        # user's list from an earlier batch is reused while its query has not moved.
        queries: list[tuple[int, str | None, np.ndarray, int]] = []
        for row, r in enumerate(requests):
            if r.interest is not None:
                queries.append((row, r.user_id, r.interest, budget.nearest))
            if r.facets is not None and len(r.facets) > 1:
                queries.extend((row, r.user_id, f, budget.facet) for f in r.facets)
        if queries and len(index):
            for row, found in self._user_lists.nearest(queries, index, index_changes):
                add(np.full(len(found), row), found)
        # The cluster lists, shared by the users of a cluster.
        centroids = {
            r.cluster: r.centroid
            for r in requests
            if r.cluster is not None and r.centroid is not None
        }
        nearest = self._cluster_lists.nearest(centroids, index, index_changes) if len(index) else {}
        members: dict[int, list[int]] = {}
        for row, r in enumerate(requests):
            if r.cluster is not None:
                members.setdefault(r.cluster, []).append(row)
        for cluster, cluster_rows in members.items():  # one list per cluster, not per user
            listed = np.concatenate(
                [
                    nearest.get(cluster, np.empty(0, np.int64)),
                    counts.cluster_popular_head(cluster, budget.cluster_popular),
                ]
            )
            if len(listed):
                add(np.repeat(cluster_rows, len(listed)), np.tile(listed, len(cluster_rows)))
        trending = counts.trending_top(budget.trending)
        if len(trending):
            add(np.repeat(np.arange(n_rows), len(trending)), np.tile(trending, n_rows))
        return self._columns(requests, rows, items, recommendable)

    def _columns(
        self,
        requests: Sequence[RankingRequest],
        rows: list[np.ndarray],
        items: list[np.ndarray],
        recommendable: np.ndarray,
    ) -> Columns:
        n_rows, n_items = len(requests), len(recommendable)
        row = np.concatenate(rows) if rows else np.empty(0, np.int64)
        item = np.concatenate(items) if items else np.empty(0, np.int64)
        inside = (item >= 0) & (item < n_items)
        row, item = row[inside], item[inside]
        keep = recommendable[item]
        keys = np.unique(row[keep] * n_items + item[keep])
        excluded = [
            b * n_items + r.exclude[r.exclude < n_items]
            for b, r in enumerate(requests)
            if len(r.exclude)
        ]
        if excluded:
            keys = keys[~np.isin(keys, np.concatenate(excluded))]
        row, item = keys // n_items, keys % n_items
        per_row = np.bincount(row, minlength=n_rows)
        self.last_candidates = float(per_row.mean()) if n_rows else 0.0
        width = max(1, int(per_row.max(initial=0)))
        starts = np.concatenate([[0], np.cumsum(per_row)[:-1]])
        position = np.arange(len(keys)) - starts[row]
        matrix = np.full((n_rows, width), -1, np.int64)
        matrix[row, position] = item
        return Columns(matrix, matrix >= 0, shared=False)


def _top_per_row(signal: SparseSignal, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``limit`` items of largest summed value in each row of a sparse signal."""
    rows, items, values = signal
    if not len(rows):
        return rows, items
    stride = int(items.max()) + 1
    keys, inverse = np.unique(rows * stride + items, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    rows, items = keys // stride, keys % stride
    order = np.lexsort((items, -sums, rows))
    rows, items = rows[order], items[order]
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts
    keep = rank < limit
    return rows[keep], items[keep]
