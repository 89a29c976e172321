"""Bounded, mergeable item→next-item counts (a heavy-hitter sketch per source).

Each source key keeps at most ``capacity`` successors with their forward-decayed
counts. A row may grow to ``2·capacity`` before it is pruned back to its
``capacity`` heaviest entries (a batched Misra–Gries / Space-Saving variant):
heavy successors survive, light ones that keep recurring come back, and memory
per source stays bounded. Rows are plain sums, so two workers' rows add.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from heapq import nlargest

import numpy as np

__all__ = ["SuccessorCounts"]

_EMPTY: tuple[np.ndarray, np.ndarray, float] = (np.empty(0, np.int64), np.empty(0, np.float64), 0.0)


class SuccessorCounts:
    """Heavy-hitter successor counts per source key.

    Parameters
    ----------
    capacity
        Successors kept per source after pruning.

    Examples
    --------
    >>> counts = SuccessorCounts(capacity=2)
    >>> for nxt, w in [(1, 1.0), (2, 3.0), (3, 0.5), (2, 1.0), (4, 0.1)]:
    ...     counts.add("a", nxt, w)
    >>> sorted(counts.row("a").items())   # up to 2 × capacity entries are held
    [(1, 1.0), (2, 4.0), (3, 0.5), (4, 0.1)]
    >>> counts.add("a", 5, 0.2)            # a fifth entry prunes to the 2 heaviest
    >>> ids, vals = counts.row_arrays("a")
    >>> ids.tolist(), vals.tolist()
    ([2, 1], [4.0, 1.0])
    """

    def __init__(self, capacity: int = 200) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._rows: dict[Hashable, dict[int, float]] = {}
        # Scoring reads rows far more often than they change between reads:
        # their arrays are kept until the row changes.
        self._arrays: dict[Hashable, tuple[np.ndarray, np.ndarray, float]] = {}

    def add(self, source: Hashable, successor: int, amount: float) -> None:
        """Add ``amount`` to the count of ``source → successor``."""
        row = self._rows.get(source)
        if row is None:
            row = self._rows[source] = {}
        else:
            self._arrays.pop(source, None)
        row[successor] = row.get(successor, 0.0) + amount
        if len(row) > 2 * self.capacity:
            self._prune(source, row)

    def add_row(self, source: Hashable, increments: Mapping[int, float]) -> None:
        """Add a whole row of increments (a merged delta)."""
        row = self._rows.setdefault(source, {})
        self._arrays.pop(source, None)
        for successor, amount in increments.items():
            row[successor] = row.get(successor, 0.0) + amount
        if len(row) > 2 * self.capacity:
            self._prune(source, row)

    def _prune(self, source: Hashable, row: dict[int, float]) -> None:
        self._rows[source] = dict(nlargest(self.capacity, row.items(), key=lambda kv: kv[1]))

    def row(self, source: Hashable) -> Mapping[int, float]:
        """The successors of ``source`` (empty when unknown)."""
        return self._rows.get(source, {})

    def row_arrays(self, source: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """The row as ``(successor ids int64, counts float64)`` arrays (do not modify them)."""
        ids, values, _ = self.row_arrays_and_total(source)
        return ids, values

    def row_arrays_and_total(self, source: Hashable) -> tuple[np.ndarray, np.ndarray, float]:
        """The row's arrays and the sum of its counts, cached until the row changes."""
        cached = self._arrays.get(source)
        if cached is not None:
            return cached
        row = self._rows.get(source)
        if not row:
            return _EMPTY
        values = np.fromiter(row.values(), np.float64, len(row))
        cached = (np.fromiter(row.keys(), np.int64, len(row)), values, float(values.sum()))
        cached[0].flags.writeable = False
        values.flags.writeable = False
        self._arrays[source] = cached
        return cached

    def scale(self, factor: float) -> None:
        """Multiply every count (used when the decay landmark moves)."""
        self._arrays.clear()
        for row in self._rows.values():
            for key in row:
                row[key] *= factor

    def drop_sources(self, predicate: Iterable[Hashable]) -> None:
        """Forget the given sources (e.g. the rows of a retired cluster)."""
        for source in predicate:
            self._rows.pop(source, None)
            self._arrays.pop(source, None)

    def sources(self) -> Iterator[Hashable]:
        return iter(list(self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def n_entries(self) -> int:
        """Total successor entries held (memory is proportional to this)."""
        return sum(len(r) for r in self._rows.values())
