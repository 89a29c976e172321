"""A float64 vector over item indices that grows with the catalogue.

Counts keyed by item index (popularity, trending, per-cluster popularity)
must accept an index the moment an item first appears, without knowing the
catalogue's final size: the vector doubles its capacity when an index falls
beyond it, so an ``add`` is amortised O(1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["GrowableVector"]


class GrowableVector:
    """A float64 vector that grows (doubling) to hold any index it is given.

    >>> v = GrowableVector()
    >>> v.add(2, 1.5); v.add(40, 1.0); v.add(2, 0.5)
    >>> v.view(4).tolist(), float(v.view(41)[40])
    ([0.0, 0.0, 2.0, 0.0], 1.0)
    >>> v.dense(3).tolist()
    [0.0, 0.0, 2.0]
    """

    __slots__ = ("values",)

    def __init__(self, size: int = 0) -> None:
        self.values = np.zeros(max(size, 16), np.float64)

    def add(self, index: int, amount: float) -> None:
        if index >= len(self.values):
            grown = np.zeros(max(2 * len(self.values), index + 1), np.float64)
            grown[: len(self.values)] = self.values
            self.values = grown
        self.values[index] += amount

    def view(self, n_items: int) -> np.ndarray:
        """The first ``n_items`` entries (a view; zero-padded copy when shorter)."""
        if len(self.values) >= n_items:
            return self.values[:n_items]
        out = np.zeros(n_items, np.float64)
        out[: len(self.values)] = self.values
        return out

    def dense(self, n_items: int) -> np.ndarray:
        """A fresh copy of the first ``n_items`` entries (safe to modify)."""
        return np.array(self.view(n_items), dtype=np.float64, copy=True)
