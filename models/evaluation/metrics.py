"""Ranking metrics with one relevant item per list: HR@k, NDCG@k, MRR@k, coverage.

Every evaluation in driftrec scores a top-``k`` list against the single item
the user actually consumed next. Everything follows from the 0-based
position ``r`` of that item in the list (``r = -1`` when it is not there):

.. code-block:: text

    HR@k   = mean over lists of [r >= 0]
    NDCG@k = mean of 1 / log2(r + 2)   (0 on a miss; the ideal DCG is 1)
    MRR@k  = mean of 1 / (r + 1)       (0 on a miss)
    coverage = |items recommended at least once| / |catalogue|

With one relevant item the ideal DCG is ``1 / log2(2) = 1``, so NDCG needs no
normalisation; this is the NDCG of the SASRec / BERT4Rec papers. MRR is taken
within the top ``k`` (``MRR@k``, as in the session-based literature), because a
recommender only hands back its top ``k``.

:class:`RankAccumulator` gathers the positions and the recommended items of
one recommender as an evaluation runs; :func:`summarise` and
:func:`hit_rate_per_slice` turn them into figures.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MISS",
    "MetricSummary",
    "RankAccumulator",
    "hit_rank",
    "hit_rate_per_slice",
    "ndcg_of_ranks",
    "reciprocal_ranks",
    "summarise",
    "time_slices",
]

#: The position recorded when the target is not in the list.
MISS = -1


def hit_rank(recommended: Sequence[str], target: str) -> int:
    """0-based position of ``target`` in ``recommended``, or :data:`MISS`.

    >>> hit_rank(["m1", "m7", "m3"], "m7"), hit_rank(["m1", "m7"], "m9")
    (1, -1)
    """
    for position, item_id in enumerate(recommended):
        if item_id == target:
            return position
    return MISS


def ndcg_of_ranks(ranks: np.ndarray) -> np.ndarray:
    """Per-list NDCG with one relevant item: ``1 / log2(r + 2)``, 0 on a miss.

    >>> ndcg_of_ranks(np.array([0, 1, 3, -1])).round(4).tolist()
    [1.0, 0.6309, 0.4307, 0.0]
    """
    ranks = np.asarray(ranks)
    hit = ranks >= 0
    return np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)


def reciprocal_ranks(ranks: np.ndarray) -> np.ndarray:
    """Per-list reciprocal rank ``1 / (r + 1)``, 0 on a miss.

    >>> reciprocal_ranks(np.array([0, 1, 3, -1])).tolist()
    [1.0, 0.5, 0.25, 0.0]
    """
    ranks = np.asarray(ranks)
    hit = ranks >= 0
    return np.where(hit, 1.0 / (np.where(hit, ranks, 0) + 1.0), 0.0)


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """The figures of one recommender over a set of scored lists.

    Attributes
    ----------
    n
        Lists scored.
    hr, ndcg, mrr
        HR@k, NDCG@k and MRR@k (0.0 when ``n`` is 0).
    coverage
        Distinct items recommended divided by the catalogue size.
    distinct_items
        Distinct items recommended at least once.
    """

    n: int
    hr: float
    ndcg: float
    mrr: float
    coverage: float
    distinct_items: int


def summarise(ranks: np.ndarray, *, distinct_items: int, catalogue_size: int) -> MetricSummary:
    """HR, NDCG, MRR and coverage from the target positions of a set of lists.

    Examples
    --------
    Four lists: hits at positions 0 and 2, two misses; 5 of 20 items recommended.

    >>> s = summarise(np.array([0, -1, 2, -1]), distinct_items=5, catalogue_size=20)
    >>> s.n, s.hr, round(s.ndcg, 4), round(s.mrr, 4), s.coverage
    (4, 0.5, 0.375, 0.3333, 0.25)
    """
    if catalogue_size < 0 or distinct_items < 0:
        raise ValueError(
            f"catalogue_size and distinct_items must be >= 0, got {catalogue_size}, "
            f"{distinct_items}"
        )
    ranks = np.asarray(ranks)
    n = len(ranks)
    if n == 0:
        hr = ndcg = mrr = 0.0
    else:
        hr = float(np.mean(ranks >= 0))
        ndcg = float(np.mean(ndcg_of_ranks(ranks)))
        mrr = float(np.mean(reciprocal_ranks(ranks)))
    coverage = distinct_items / catalogue_size if catalogue_size else 0.0
    return MetricSummary(n, hr, ndcg, mrr, coverage, distinct_items)


def time_slices(times: np.ndarray, n_slices: int = 20) -> list[np.ndarray]:
    """Split scored lists into ``n_slices`` consecutive slices of (nearly) equal size.

    Lists are ordered by event time (stable, so ties keep their order) and cut
    into slices holding equal numbers of lists, not equal spans of time: a
    stream as uneven as MovieLens (years of a trickle, then bursts) would
    otherwise leave slices nearly empty. Fewer slices come back when there are
    fewer lists than slices; none when there are none.

    Returns
    -------
    The indices (into ``times``) of each slice, earliest slice first.

    Examples
    --------
    >>> [s.tolist() for s in time_slices(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), n_slices=2)]
    [[1, 3, 2], [4, 0]]
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    order = np.argsort(np.asarray(times, np.float64), kind="stable")
    if not len(order):
        return []
    return [part for part in np.array_split(order, min(n_slices, len(order))) if len(part)]


def hit_rate_per_slice(ranks: np.ndarray, slices: Sequence[np.ndarray]) -> list[float]:
    """HR@k within each slice of :func:`time_slices`.

    >>> slices = time_slices(np.array([1.0, 2.0, 3.0, 4.0]), n_slices=2)
    >>> hit_rate_per_slice(np.array([0, -1, 4, 2]), slices)
    [0.5, 1.0]
    """
    ranks = np.asarray(ranks)
    return [float(np.mean(ranks[part] >= 0)) if len(part) else 0.0 for part in slices]


class RankAccumulator:
    """Collects, list by list, where the target landed and which items were recommended.

    Parameters
    ----------
    k
        The list length asked for; a longer list is an error of the recommender.

    Attributes
    ----------
    recommended
        Every item id recommended at least once (for coverage).
    consumed_in_lists
        Recommended items the user had already consumed (the evaluator passes
        each user's consumed set): should stay 0 for every recommender.

    Examples
    --------
    >>> acc = RankAccumulator(k=2)
    >>> acc.add(["a", "b"], target="b", consumed={"c"})
    1
    >>> acc.add(["c", "d"], target="x", consumed={"c"})
    -1
    >>> acc.ranks.tolist(), sorted(acc.recommended), acc.consumed_in_lists
    ([1, -1], ['a', 'b', 'c', 'd'], 1)
    >>> acc.summary(catalogue_size=8).hr
    0.5
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._ranks = array("i")
        self.recommended: set[str] = set()
        self.consumed_in_lists = 0

    def __len__(self) -> int:
        return len(self._ranks)

    def add(self, recommended: Sequence[str], *, target: str, consumed: Iterable[str] = ()) -> int:
        """Score one list; returns the target's position (:data:`MISS` if absent)."""
        if len(recommended) > self.k:
            raise ValueError(
                f"a recommender returned {len(recommended)} items; expected at most k={self.k}"
            )
        rank = hit_rank(recommended, target)
        self._ranks.append(rank)
        self.recommended.update(recommended)
        consumed_set = consumed if isinstance(consumed, set | frozenset) else set(consumed)
        self.consumed_in_lists += sum(1 for item_id in recommended if item_id in consumed_set)
        return rank

    @property
    def ranks(self) -> np.ndarray:
        """Target positions of every list so far (:data:`MISS` for misses)."""
        return np.array(self._ranks, dtype=np.int32)

    def summary(self, catalogue_size: int) -> MetricSummary:
        """The figures so far."""
        return summarise(
            self.ranks, distinct_items=len(self.recommended), catalogue_size=catalogue_size
        )
