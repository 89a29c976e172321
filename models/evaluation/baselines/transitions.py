"""Transition baselines: what others consumed next after the user's last item(s)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from models.contracts import BehaviourEvent, CatalogItem
from models.evaluation.baselines.catalogue import CatalogueRecommender

if TYPE_CHECKING:
    pass

__all__ = ["ItemTransitions", "RecentItemsTransitions"]


class _SuccessorRow:
    """Exact weighted successor counts of one source item, as parallel arrays."""

    __slots__ = ("indices", "positions", "size", "values")

    def __init__(self) -> None:
        self.positions: dict[int, int] = {}
        self.indices = np.zeros(8, np.int64)
        self.values = np.zeros(8, np.float64)
        self.size = 0

    def add(self, target: int, weight: float) -> None:
        position = self.positions.get(target)
        if position is None:
            position = self.size
            if position == len(self.indices):
                self.indices = np.concatenate([self.indices, np.zeros(position, np.int64)])
                self.values = np.concatenate([self.values, np.zeros(position, np.float64)])
            self.positions[target] = position
            self.indices[position] = target
            self.size += 1
        self.values[position] += weight


class RecentItemsTransitions(CatalogueRecommender):
    """Transitions from the user's recent items to what other users consumed next.

    When a user consumes item ``b``, each of their last ``W`` items ``a``
    (``s = 1`` the one just before) gains a transition ``a → b`` of weight
    ``distance_decay^s``. A user is scored from their last ``m`` items
    ``a_0`` (newest), ``a_1``, …:

    .. code-block:: text

        score(i) = Σ_{r < m} recency_decay^r · T[a_r, i]

    a session-kNN style model (sequence-aware item-to-item neighbourhoods) and,
    on MovieLens, far stronger than popularity. Counts are exact and never
    decay.

    Parameters
    ----------
    items
        The catalogue known before the first event.
    window
        ``W``: how many of the user's previous items a consumption counts from.
    recent_items
        ``m``: how many of the user's last items the score reads from.
    recency_decay
        ``d``: weight of the item ``r`` steps back in scoring is ``d^r``.
    distance_decay
        Weight of a transition from the item ``s`` steps back is ``distance_decay^s``.
    name
        The name reports show.

    Examples
    --------
    >>> def ev(user, item, ts):
    ...     return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)
    >>> model = RecentItemsTransitions(window=2, recent_items=2, recency_decay=0.5)
    >>> model.learn([ev("u1", "a", 1), ev("u1", "b", 2), ev("u1", "c", 3),
    ...              ev("u2", "x", 4), ev("u2", "c", 5), ev("u3", "a", 6)])
    >>> model.recommend(["u3"], k=3)     # a→b (0.5) beats a→c (0.25); x never followed a
    [['b', 'c', 'x']]

    References
    ----------
    D. Jannach, M. Ludewig. When recurrent neural networks meet the neighborhood
    for session-based recommendation. RecSys 2017.
    """

    name = "recent-items-transitions"

    def __init__(
        self,
        items: Iterable[CatalogItem] = (),
        *,
        window: int = 5,
        recent_items: int = 10,
        recency_decay: float = 0.7,
        distance_decay: float = 0.5,
        name: str | None = None,
    ) -> None:
        if window < 1 or recent_items < 1:
            raise ValueError(
                f"window and recent_items must be >= 1, got {window} and {recent_items}"
            )
        if not (0 < recency_decay <= 1 and 0 < distance_decay <= 1):
            raise ValueError(
                "recency_decay and distance_decay must be in (0, 1], got "
                f"{recency_decay!r} and {distance_decay!r}"
            )
        self.window = window
        self.recent_items = recent_items
        self.recency_decay = recency_decay
        self.distance_decay = distance_decay
        self._distance_weights = [distance_decay**s for s in range(1, window + 1)]
        self._recency_weights = [recency_decay**r for r in range(recent_items)]
        self._successors: dict[int, _SuccessorRow] = {}
        super().__init__(items, name=name)

    def parameters(self) -> dict[str, float]:
        return {
            "window": self.window,
            "recent_items": self.recent_items,
            "recency_decay": self.recency_decay,
            "distance_decay": self.distance_decay,
        }

    def _observe(self, event: BehaviourEvent, item: int, history: Sequence[int]) -> None:
        previous = history[-self.window :]
        for weight, source in zip(self._distance_weights, reversed(previous), strict=False):
            row = self._successors.get(source)
            if row is None:
                row = self._successors[source] = _SuccessorRow()
            row.add(item, weight)

    def _score(self, history: Sequence[int]) -> np.ndarray:
        scores = np.zeros(len(self.item_ids), np.float64)
        recent = history[-self.recent_items :]
        for weight, source in zip(self._recency_weights, reversed(recent), strict=False):
            row = self._successors.get(source)
            if row is not None:
                scores[row.indices[: row.size]] += weight * row.values[: row.size]
        return scores


class ItemTransitions(RecentItemsTransitions):
    """First-order item-to-next-item transitions: what users consumed right after the last item.

    ``score(i)`` is how many times ``i`` was consumed immediately after the
    user's last item (``W = m = 1``).

    Examples
    --------
    >>> def ev(user, item, ts):
    ...     return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)
    >>> model = ItemTransitions()
    >>> model.learn([ev("u1", "a", 1), ev("u1", "b", 2), ev("u1", "c", 3), ev("u2", "a", 4)])
    >>> model.recommend(["u2"], k=2)     # only b ever came right after a
    [['b', 'c']]
    """

    name = "item-transitions"

    def __init__(self, items: Iterable[CatalogItem] = (), *, name: str | None = None) -> None:
        super().__init__(
            items, window=1, recent_items=1, recency_decay=1.0, distance_decay=1.0, name=name
        )
