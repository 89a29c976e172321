"""The ``capacity`` largest entries of a vector whose entries only grow, kept as they change.

Two-stage ranking takes the heads of the trending list as candidates for every
user; sorting 10^6 trending counts per batch would cost what the candidates
save. Forward-decayed counts only ever grow between uniform rescales (which
keep their order), so a head can be maintained exactly from the changes alone:

    invariant: the tracked set ⊇ the true top ``capacity``.

When an item's value grows it is offered; the new top ``capacity`` lies within
the old one plus that item, so the invariant holds. The tracked set may grow to
``2·capacity`` before it is cut back to its ``capacity`` largest (amortised
O(1) per offer). Deleted items stay in the head; the caller filters them, so
keep ``capacity`` above what it reads.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TopItems"]


class TopItems:
    """The indices of the ``capacity`` largest values, maintained from offers.

    Examples
    --------
    >>> values = np.zeros(10)
    >>> head = TopItems(capacity=2)
    >>> for item, amount in [(3, 1.0), (5, 2.0), (7, 0.5), (3, 2.0), (9, 0.1)]:
    ...     values[item] += amount
    ...     head.offer(item)
    >>> head.top(values, 2).tolist()
    [3, 5]
    """

    __slots__ = ("_tracked", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._tracked: dict[int, None] = {}

    def offer(self, item: int, values: np.ndarray | None = None) -> None:
        """Note that ``item``'s value grew (``values`` lets a full head prune at once)."""
        self._tracked[item] = None
        if len(self._tracked) > 2 * self.capacity and values is not None:
            self._prune(values)

    def _prune(self, values: np.ndarray) -> None:
        items = np.fromiter(self._tracked, np.int64, len(self._tracked))
        keep = items[np.argsort(-values[items], kind="stable")[: self.capacity]]
        self._tracked = dict.fromkeys(keep.tolist())

    def top(self, values: np.ndarray, n: int) -> np.ndarray:
        """Tracked items with the ``n`` largest ``values``, largest first (ties: lower index)."""
        if not self._tracked:
            return np.empty(0, np.int64)
        items = np.fromiter(self._tracked, np.int64, len(self._tracked))
        items = items[items < len(values)]
        order = np.lexsort((items, -values[items]))
        return items[order[:n]]

    def forget(self) -> None:
        self._tracked.clear()

    def __len__(self) -> int:
        return len(self._tracked)
