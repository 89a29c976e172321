"""Why an item was recommended: the user's own items that brought it ("because you ...").

``source`` says which signal put an item in the list; a person wants to know
which of *their* items did. For each recommended item:

- ``transitions`` / ``cluster-transitions``: the recent item ``r`` (``s`` steps
  back) with the largest contribution ``decay^s · c(r → i) / total(r)^α`` to the
  item's transition score — the same terms the blend summed, so the reason is
  the strongest of the item's actual causes;
- ``content`` / ``facet`` / ``centroid``: the recent item most similar to it
  (cosine of the item vectors);
- ``cluster-popular`` / ``trending``: none (the source is the reason).

Only the items a user is shown are explained, so the cost is ``k × recent``
dictionary lookups and one small product per user, not a pass over candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.collaborative import CollaborativeCounts
from models.ranking import RankedItem, RankingRequest
from models.successor_counts import SuccessorCounts

__all__ = ["explain"]

_BY_SIMILARITY = frozenset({"content", "facet", "centroid"})


def explain(
    requests: Sequence[RankingRequest],
    ranked: Sequence[Sequence[RankedItem]],
    item_vectors: np.ndarray,
    counts: CollaborativeCounts,
    *,
    recency_decay: float,
    recent_items: int,
    normalisation: float = 0.0,
) -> list[list[int | None]]:
    """For each user's ranked items, the catalogue index of the recent item behind each
    (None where the source itself is the reason or the user has no recent item).

    >>> from models.ranking import RankingRequest, RankedItem
    >>> counts = CollaborativeCounts()
    >>> counts.observe(item=0, previous=[], t=0.0, weight=1.0, cluster=None)
    >>> counts.observe(item=2, previous=[0], t=1.0, weight=1.0, cluster=None)
    >>> vectors = np.eye(3, dtype=np.float32)
    >>> request = RankingRequest(interest=None, facets=None, facet_importance=None,
    ...     cluster=None, centroid=None, recent=[1, 0], exclude=np.array([0, 1]))
    >>> shown = [RankedItem(2, 0.9, "transitions"), RankedItem(1, 0.5, "content"),
    ...          RankedItem(2, 0.1, "trending")]
    >>> explain([request], [shown], vectors, counts, recency_decay=0.7, recent_items=10)
    [[0, 1, None]]
    """
    out: list[list[int | None]] = []
    for request, items in zip(requests, ranked, strict=True):
        recent = list(request.recent[:recent_items])
        reasons: list[int | None] = [None] * len(items)
        if recent and items:
            similar = [p for p, r in enumerate(items) if r.source in _BY_SIMILARITY]
            if similar:
                sims = item_vectors[[items[p].index for p in similar]] @ item_vectors[recent].T
                for p, row in zip(similar, sims, strict=True):
                    reasons[p] = recent[int(np.argmax(row))]
            for p, r in enumerate(items):
                if r.source == "transitions":
                    reasons[p] = _strongest(
                        counts.transitions, recent, r.index, None, recency_decay, normalisation
                    )
                elif r.source == "cluster-transitions" and request.cluster is not None:
                    reasons[p] = _strongest(
                        counts.cluster_transitions,
                        recent,
                        r.index,
                        request.cluster,
                        recency_decay,
                        normalisation,
                    )
        out.append(reasons)
    return out


def _strongest(
    successors: SuccessorCounts,
    recent: Sequence[int],
    item: int,
    cluster: int | None,
    recency_decay: float,
    normalisation: float,
) -> int | None:
    """The recent item with the largest weighted count of ``item`` among its successors."""
    best, best_value = None, 0.0
    weight = 1.0
    for source in recent:
        key = source if cluster is None else (cluster, source)
        count = successors.row(key).get(item)
        if count:
            value = weight * count
            if normalisation:
                value /= successors.row_arrays_and_total(key)[2] ** normalisation
            if value > best_value:
                best, best_value = source, value
        weight *= recency_decay
    return best
