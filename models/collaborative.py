"""Collaborative signals as decayed, mergeable counts over item indices.

What other users did is held as forward-decayed sums (see
:mod:`models.forward_decay`), globally and per interest cluster:

* ``popularity[i]`` — decayed consumption weight of item ``i`` (half-life
  ``collab_half_life_s``);
* ``trending[i]`` — the same with the short ``trending_half_life_s``;
* ``cluster_popularity[c][i]`` — popularity among users currently in cluster ``c``,
  kept as a bounded heavy-hitter row per cluster (its most consumed items: the
  cluster's candidate list, and memory that does not grow with the catalogue);
* ``transitions[a][b]`` — how often ``b`` followed ``a`` in a user's stream,
  counted from each of the user's last ``W`` items with weight ``δ^(d-1)``
  for the item ``d`` steps back (``transition_distance_decay``; a
  session-kNN style signal), kept as a bounded heavy-hitter row per source item;
* ``cluster_transitions[(c, a)][b]`` — the same among users of cluster ``c``.

Scores for a user read the transitions from each of the user's last ``m`` items
with weight ``d^(r)`` for the item ``r`` steps back. All sums add across
workers: :meth:`CollaborativeCounts.pop_delta` hands out what changed since the
last call (proportional to the change, not to the state), keyed by item id so
that workers whose catalogues index items differently can exchange them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import numpy as np

from models.forward_decay import ForwardDecay
from models.growable_vector import GrowableVector
from models.settings import EngineSettings
from models.successor_counts import SuccessorCounts
from models.top_items import TopItems
from models.top_k import top_k_indices

__all__ = ["CollaborativeCounts", "CollaborativeDelta", "dense_rows"]


@dataclass
class CollaborativeDelta:
    """Increments since the last delta, keyed by item id, in forward-decay units.

    ``landmark`` / ``trending_landmark`` say which units the sums are in.

    Workers exchange deltas as bytes (:meth:`to_bytes`): a versioned, compact
    UTF-8 JSON object whose size is proportional to what changed. Floats are
    written with ``repr`` precision, so a delta reads back bit for bit.

    Examples
    --------
    >>> cc = CollaborativeCounts(half_life_s=100.0, trending_half_life_s=10.0)
    >>> cc.observe(item=0, previous=[], t=0.0, weight=1.0, cluster=None)
    >>> cc.observe(item=1, previous=[0], t=100.0, weight=1.0, cluster=3)
    >>> delta = cc.pop_delta(lambda index: f"m{index}")
    >>> delta.transitions, delta.cluster_transitions
    ({'m0': {'m1': 2.0}}, {(3, 'm0'): {'m1': 2.0}})
    >>> CollaborativeDelta.from_bytes(delta.to_bytes()) == delta
    True
    >>> CollaborativeDelta.from_bytes(b'{"format": "something else"}')
    Traceback (most recent call last):
    ...
    ValueError: not a driftrec collaborative delta: format 'something else', expected ...
    """

    landmark: float | None
    trending_landmark: float | None
    popularity: dict[str, float] = field(default_factory=dict)
    trending: dict[str, float] = field(default_factory=dict)
    cluster_popularity: dict[int, dict[str, float]] = field(default_factory=dict)
    transitions: dict[str, dict[str, float]] = field(default_factory=dict)
    cluster_transitions: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.popularity or self.trending or self.transitions)

    def to_bytes(self) -> bytes:
        """Versioned wire form: compact UTF-8 JSON (tuple keys written as lists)."""
        record = {
            "format": _DELTA_FORMAT,
            "version": _DELTA_VERSION,
            "landmark": self.landmark,
            "trending_landmark": self.trending_landmark,
            "popularity": self.popularity,
            "trending": self.trending,
            "cluster_popularity": [[c, row] for c, row in self.cluster_popularity.items()],
            "transitions": self.transitions,
            "cluster_transitions": [
                [c, source, row] for (c, source), row in self.cluster_transitions.items()
            ],
        }
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> CollaborativeDelta:
        """Read :meth:`to_bytes` output; raises ``ValueError`` on anything else."""
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, ValueError) as error:
            raise ValueError(f"not a driftrec collaborative delta: {error}") from None
        if not isinstance(record, dict) or record.get("format") != _DELTA_FORMAT:
            found = record.get("format") if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"not a driftrec collaborative delta: format {found!r}, expected {_DELTA_FORMAT!r}"
            )
        if record.get("version") != _DELTA_VERSION:
            raise ValueError(
                f"unsupported collaborative delta version {record.get('version')!r}; "
                f"this driftrec reads version {_DELTA_VERSION}"
            )
        try:
            return cls(
                landmark=_optional_float(record["landmark"]),
                trending_landmark=_optional_float(record["trending_landmark"]),
                popularity=_float_row(record["popularity"]),
                trending=_float_row(record["trending"]),
                cluster_popularity={
                    int(c): _float_row(row) for c, row in record["cluster_popularity"]
                },
                transitions={str(s): _float_row(row) for s, row in record["transitions"].items()},
                cluster_transitions={
                    (int(c), str(s)): _float_row(row) for c, s, row in record["cluster_transitions"]
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"malformed driftrec collaborative delta: {error!r}") from None


class CollaborativeCounts:
    """Decayed global and per-cluster popularity and item transitions.

    Parameters
    ----------
    half_life_s
        Half-life of popularity and transition counts, in event-time seconds.
    trending_half_life_s
        Half-life of the trending counts.
    transition_window
        ``W``: a consumed item counts as a successor of the user's last ``W`` items.
    transition_distance_decay
        The successor count from the item ``r`` steps back is multiplied by
        this to the power ``r`` (0.5: the item just before counts 1, the one
        before that 0.5, …).
    transition_capacity
        Successors kept per item (globally).
    cluster_transition_capacity
        Successors kept per (cluster, item).
    cluster_popular_capacity
        Items kept per cluster in its popularity row.
    trending_head
        How many of the most trending items are kept ready as candidates.
    track_deltas
        Keep what changed since the last :meth:`pop_delta` (a worker ships it
        to the others). An engine that ships nothing (embedded, evaluation)
        turns it off: the pending sums would be a second, unpruned copy of the
        counts, and keeping them costs a third of :meth:`observe`.

    Examples
    --------
    >>> cc = CollaborativeCounts(half_life_s=100.0, trending_half_life_s=10.0)
    >>> cc.observe(item=1, previous=[], t=0.0, weight=1.0, cluster=None)
    >>> cc.observe(item=2, previous=[1], t=1.0, weight=1.0, cluster=7)
    >>> cc.observe(item=3, previous=[2, 1], t=2.0, weight=1.0, cluster=7)
    >>> scores = cc.transition_scores([[2, 1]], n_items=4, recency_decay=0.5)
    >>> np.round(scores[0] / scores[0].max(), 3).tolist()   # item 3 from 2 and from 1
    [0.0, 0.0, 0.397, 1.0]
    """

    def __init__(
        self,
        *,
        half_life_s: float = 14 * 86_400.0,
        trending_half_life_s: float = 86_400.0,
        transition_window: int = 5,
        transition_distance_decay: float = 0.5,
        transition_capacity: int = 200,
        cluster_transition_capacity: int = 50,
        cluster_popular_capacity: int = 500,
        trending_head: int = 256,
        track_deltas: bool = True,
    ) -> None:
        if not 0.0 < transition_distance_decay <= 1.0:
            raise ValueError(
                f"transition_distance_decay must be in (0, 1], got {transition_distance_decay}"
            )
        self.decay = ForwardDecay(half_life_s)
        self.trending_decay = ForwardDecay(trending_half_life_s)
        self.transition_window = transition_window
        self.transition_distance_decay = transition_distance_decay
        self.popularity = GrowableVector()
        self.trending = GrowableVector()
        self.cluster_popularity = SuccessorCounts(cluster_popular_capacity)
        self.trending_head = TopItems(trending_head)
        self.transitions = SuccessorCounts(transition_capacity)
        self.cluster_transitions = SuccessorCounts(cluster_transition_capacity)
        self.track_deltas = track_deltas
        self._pending = _Pending()

    @classmethod
    def from_settings(cls, settings: EngineSettings, *, track_deltas: bool) -> CollaborativeCounts:
        """The counts as the engine's settings configure them."""
        return cls(
            half_life_s=settings.collab_half_life_s,
            trending_half_life_s=settings.trending_half_life_s,
            transition_window=settings.transition_window,
            transition_distance_decay=settings.transition_distance_decay,
            transition_capacity=settings.transition_capacity,
            cluster_transition_capacity=settings.cluster_transition_capacity,
            cluster_popular_capacity=settings.cluster_popular_capacity,
            trending_head=max(256, settings.candidates),
            track_deltas=track_deltas,
        )

    # ------------------------------------------------------------------ learn
    def observe(
        self,
        *,
        item: int,
        previous: Sequence[int],
        t: float,
        weight: float,
        cluster: int | None,
    ) -> None:
        """Count one consumption of ``item`` at event time ``t``.

        ``previous`` are the user's earlier items, most recent first; the item
        becomes a successor of the first ``transition_window`` of them.
        """
        self._maybe_rescale(t)
        g = self.decay.gain(t) * weight
        gt = self.trending_decay.gain(t) * weight
        self.popularity.add(item, g)
        self.trending.add(item, gt)
        self.trending_head.offer(item, self.trending.values)
        if cluster is not None:
            self.cluster_popularity.add(cluster, item, g)
        decay = self.transition_distance_decay
        pairs = [
            (source, g * decay**r)
            for r, source in enumerate(previous[: self.transition_window])
            if source != item
        ]
        transitions, cluster_transitions = self.transitions, self.cluster_transitions
        for source, amount in pairs:
            transitions.add(source, item, amount)
            if cluster is not None:
                cluster_transitions.add((cluster, source), item, amount)
        if self.track_deltas:
            self._track(item, g, gt, cluster, pairs)

    def _track(
        self, item: int, g: float, gt: float, cluster: int | None, pairs: list[tuple[int, float]]
    ) -> None:
        """Add one observation to the pending delta."""
        pending = self._pending
        pending.popularity[item] = pending.popularity.get(item, 0.0) + g
        pending.trending[item] = pending.trending.get(item, 0.0) + gt
        if cluster is not None:
            row = pending.cluster_popularity.setdefault(cluster, {})
            row[item] = row.get(item, 0.0) + g
        for source, amount in pairs:
            _bump(pending.transitions, source, item, amount)
            if cluster is not None:
                _bump(pending.cluster_transitions, (cluster, source), item, amount)

    def forget_cluster(self, cluster: int) -> None:
        """Drop the per-cluster counts of a retired cluster."""
        self.cluster_popularity.drop_sources([cluster])
        self.cluster_transitions.drop_sources(
            [
                s
                for s in self.cluster_transitions.sources()
                if isinstance(s, tuple) and s[0] == cluster
            ]
        )

    def _maybe_rescale(self, t: float) -> None:
        for decay, vectors, rows in (
            (
                self.decay,
                [self.popularity],
                [self.transitions, self.cluster_transitions, self.cluster_popularity],
            ),
            (self.trending_decay, [self.trending], []),
        ):
            if decay.needs_rescale(t):
                factor = decay.rescale_factor(t)
                for vec in vectors:
                    vec.values *= factor
                for counts in rows:
                    counts.scale(factor)
                self._pending.scale(factor, trending=decay is self.trending_decay)
                decay.landmark = t

    # ------------------------------------------------------------------ score
    def transition_pairs(
        self,
        recent: Sequence[Sequence[int]],
        *,
        recency_decay: float,
        clusters: Sequence[int | None] | None = None,
        normalisation: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse transition scores of B users: ``(rows, items, values)``, one entry per
        (row, successor) read — a row may name an item several times; the score is the sum.

        Row ``b`` sums the successor rows of ``recent[b]`` (most recent first),
        the item ``r`` steps back weighted ``recency_decay**r``, each row divided
        by its total to the power ``normalisation`` (0: raw counts, 1: the
        empirical P(next | source), so a popular source does not drown the others). With
        ``clusters`` the per-cluster transitions of each user's cluster are read.
        The cost is the number of successors read, not the catalogue's size.
        """
        # Plain lists of the cached row arrays, then one concatenation: a handful of numpy
        # calls per batch instead of three per (user, source).
        cols, vals, scales, lengths, owners = [], [], [], [], []
        for b, items in enumerate(recent):
            cluster = clusters[b] if clusters is not None else None
            if clusters is not None and cluster is None:
                continue
            weight = 1.0
            for source in items:
                if clusters is None:
                    ids, counts, total = self.transitions.row_arrays_and_total(source)
                else:
                    ids, counts, total = self.cluster_transitions.row_arrays_and_total(
                        (cluster, source)
                    )
                if len(ids):
                    cols.append(ids)
                    vals.append(counts)
                    scales.append(weight / total**normalisation if normalisation else weight)
                    lengths.append(len(ids))
                    owners.append(b)
                weight *= recency_decay
        if not cols:
            return _NO_PAIRS
        return (
            np.repeat(np.asarray(owners, np.int64), lengths),
            np.concatenate(cols),
            np.concatenate(vals) * np.repeat(scales, lengths),
        )

    def transition_scores(
        self,
        recent: Sequence[Sequence[int]],
        *,
        n_items: int,
        recency_decay: float,
        clusters: Sequence[int | None] | None = None,
        normalisation: float = 0.0,
    ) -> np.ndarray:
        """Dense ``[B, n_items]`` form of :meth:`transition_pairs`."""
        rows, items, values = self.transition_pairs(
            recent, recency_decay=recency_decay, clusters=clusters, normalisation=normalisation
        )
        return dense_rows(rows, items, values, len(recent), n_items)

    def cluster_popularity_pairs(
        self, clusters: Sequence[int | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Popularity within each user's cluster as ``(rows, items, values)`` (none without one)."""
        rows, cols, vals = [], [], []
        for b, cluster in enumerate(clusters):
            if cluster is None:
                continue
            ids, values = self.cluster_popularity.row_arrays(cluster)
            if len(ids):
                rows.append(np.full(len(ids), b, np.int64))
                cols.append(ids)
                vals.append(values)
        if not rows:
            return _NO_PAIRS
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)

    def cluster_popular_head(self, cluster: int, n: int) -> np.ndarray:
        """The ``n`` items most consumed within ``cluster``, most first."""
        ids, values = self.cluster_popularity.row_arrays(cluster)
        if not len(ids) or n < 1:
            return ids[:0]
        return ids[top_k_indices(values, n, labels=ids)]

    def trending_top(self, n: int) -> np.ndarray:
        """The ``n`` most trending items, most first (maintained, not sorted per call)."""
        return self.trending_head.top(self.trending.values, n)

    def popularity_scores(self, n_items: int) -> np.ndarray:
        return self.popularity.view(n_items)

    def trending_scores(self, n_items: int) -> np.ndarray:
        return self.trending.view(n_items)

    def cluster_popularity_scores(self, clusters: Sequence[int | None], n_items: int) -> np.ndarray:
        """Dense ``[B, n_items]`` popularity within each user's cluster (zeros without one)."""
        rows, items, values = self.cluster_popularity_pairs(clusters)
        return dense_rows(rows, items, values, len(clusters), n_items)

    # ------------------------------------------------------------------ merge
    def pop_delta(self, item_id_of: Callable[[int], str]) -> CollaborativeDelta:
        """What changed since the last call, keyed by item id; resets the pending sums."""
        if not self.track_deltas:
            raise RuntimeError("these counts keep no deltas: build them with track_deltas=True")
        p, self._pending = self._pending, _Pending()
        ids = item_id_of
        return CollaborativeDelta(
            landmark=self.decay.landmark,
            trending_landmark=self.trending_decay.landmark,
            popularity={ids(i): v for i, v in p.popularity.items()},
            trending={ids(i): v for i, v in p.trending.items()},
            cluster_popularity={
                c: {ids(i): v for i, v in row.items()} for c, row in p.cluster_popularity.items()
            },
            transitions={
                ids(s): {ids(i): v for i, v in row.items()} for s, row in p.transitions.items()
            },
            cluster_transitions={
                (c, ids(s)): {ids(i): v for i, v in row.items()}
                for (c, s), row in p.cluster_transitions.items()
            },
        )

    def apply_delta(self, delta: CollaborativeDelta, index_of: Callable[[str], int]) -> None:
        """Add another worker's delta (not re-exported by :meth:`pop_delta`)."""
        f = self.decay.convert_from(delta.landmark) if delta.landmark is not None else 1.0
        ft = (
            self.trending_decay.convert_from(delta.trending_landmark)
            if delta.trending_landmark is not None
            else 1.0
        )
        for item_id, v in delta.popularity.items():
            self.popularity.add(index_of(item_id), v * f)
        for item_id, v in delta.trending.items():
            index = index_of(item_id)
            self.trending.add(index, v * ft)
            self.trending_head.offer(index, self.trending.values)
        for cluster, row in delta.cluster_popularity.items():
            self.cluster_popularity.add_row(cluster, {index_of(i): v * f for i, v in row.items()})
        for source, row in delta.transitions.items():
            self.transitions.add_row(index_of(source), {index_of(i): v * f for i, v in row.items()})
        for (cluster, source), row in delta.cluster_transitions.items():
            self.cluster_transitions.add_row(
                (cluster, index_of(source)), {index_of(i): v * f for i, v in row.items()}
            )


_NO_PAIRS = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def dense_rows(
    rows: np.ndarray, items: np.ndarray, values: np.ndarray, n_rows: int, n_items: int
) -> np.ndarray:
    """``[n_rows, n_items]`` sums of sparse ``(rows, items, values)`` (items beyond are dropped).

    >>> dense_rows(np.array([0, 0, 1]), np.array([2, 2, 0]), np.array([1.0, 0.5, 3.0]), 2, 3)
    array([[0. , 0. , 1.5],
           [3. , 0. , 0. ]])
    """
    keep = items < n_items
    if not keep.any():
        return np.zeros((n_rows, n_items))
    flat = np.bincount(
        rows[keep] * n_items + items[keep], weights=values[keep], minlength=n_rows * n_items
    )
    return flat.reshape(n_rows, n_items)


_DELTA_FORMAT = "driftrec.collab-delta"
_DELTA_VERSION = 1


def _optional_float(value: SupportsFloat | None) -> float | None:
    return None if value is None else float(value)


def _float_row(row: Mapping[str, SupportsFloat]) -> dict[str, float]:
    return {str(key): float(value) for key, value in row.items()}


def _bump(rows: dict, source: object, item: int, amount: float) -> None:
    row = rows.get(source)
    if row is None:
        row = rows[source] = {}
    row[item] = row.get(item, 0.0) + amount


@dataclass
class _Pending:
    popularity: dict[int, float] = field(default_factory=dict)
    trending: dict[int, float] = field(default_factory=dict)
    cluster_popularity: dict[int, dict[int, float]] = field(default_factory=dict)
    transitions: dict[int, dict[int, float]] = field(default_factory=dict)
    cluster_transitions: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict)

    def scale(self, factor: float, *, trending: bool) -> None:
        if trending:
            _scale_map(self.trending, factor)
            return
        _scale_map(self.popularity, factor)
        for rows in (self.cluster_popularity, self.transitions, self.cluster_transitions):
            for row in rows.values():
                _scale_map(row, factor)


def _scale_map(values: MutableMapping[Any, float], factor: float) -> None:
    for key in values:
        values[key] *= factor
