"""Popularity baselines: consumed most so far, and most so far with an age decay."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from models.contracts import BehaviourEvent, CatalogItem
from models.evaluation.baselines.catalogue import CatalogueRecommender
from models.forward_decay import ForwardDecay
from models.growable_vector import GrowableVector
from models.settings import DAY_S

if TYPE_CHECKING:
    pass

__all__ = ["GlobalPopularity", "RecentPopularity"]


class GlobalPopularity(CatalogueRecommender):
    """Global popularity: the most consumed items so far that the user has not consumed.

    Examples
    --------
    >>> def ev(user, item, ts):
    ...     return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)
    >>> model = GlobalPopularity()
    >>> model.learn([ev("u1", "a", 1), ev("u2", "a", 2), ev("u2", "b", 3), ev("u3", "c", 4)])
    >>> model.recommend(["u1", "u9"], k=2)      # b and c tie: first known first
    [['b', 'c'], ['a', 'b']]
    """

    name = "popularity"

    def _score(self, history: Sequence[int]) -> np.ndarray:
        return self.popularity.dense(len(self.item_ids))


class RecentPopularity(CatalogueRecommender):
    """Recent popularity: consumptions decayed with event time, ``2^(-age / half_life)``.

    The sums are forward-decayed (Cormode et al., 2009): a consumption at
    ``t`` adds ``2^((t - L) / h)`` for a landmark ``L``; the ranking at any later
    time is the same as with the decayed counts, because decaying multiplies
    every item's count by the same factor.

    Parameters
    ----------
    items
        The catalogue known before the first event.
    half_life_s
        Age at which a consumption counts half, in event-time seconds.
    name
        The name reports show.

    Examples
    --------
    >>> def ev(user, item, ts):
    ...     return BehaviourEvent(user_id=user, item_id=item, event="view", ts=ts, weight=1.0)
    >>> model = RecentPopularity(half_life_s=10.0)
    >>> model.learn([ev("u1", "old", 0), ev("u2", "old", 1), ev("u3", "new", 30)])
    >>> model.recommend(["u9"], k=2)      # 1 recent view beats 2 views three half-lives ago
    [['new', 'old']]

    References
    ----------
    G. Cormode, V. Shkapenyuk, D. Srivastava, B. Xu. Forward decay: a practical
    time decay model for streaming systems. ICDE 2009.
    """

    name = "recent-popularity"

    def __init__(
        self,
        items: Iterable[CatalogItem] = (),
        *,
        half_life_s: float = 7 * DAY_S,
        name: str | None = None,
    ) -> None:
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0 seconds, got {half_life_s!r}")
        self.half_life_s = half_life_s
        self._decay = ForwardDecay(half_life_s)
        self._counts = GrowableVector()
        super().__init__(items, name=name)

    def parameters(self) -> dict[str, float]:
        return {"half_life_s": self.half_life_s}

    def _observe(self, event: BehaviourEvent, item: int, history: Sequence[int]) -> None:
        if self._decay.needs_rescale(event.ts):
            self._counts.values *= self._decay.rescale_factor(event.ts)
            self._decay.landmark = event.ts
        self._counts.add(item, self._decay.gain(event.ts))

    def _score(self, history: Sequence[int]) -> np.ndarray:
        return self._counts.dense(len(self.item_ids))
