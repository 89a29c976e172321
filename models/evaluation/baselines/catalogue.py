"""What every catalogue-scoring baseline shares: the catalogue, exclusions, top-k."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from models.contracts import BehaviourEvent, CatalogItem
from models.growable_vector import GrowableVector
from models.top_k import top_k_indices

__all__ = ["CatalogueRecommender", "top_k_indices"]


class CatalogueRecommender:
    """Base of the baselines: the catalogue, each user's history, exclusion and top-k.

    A subclass says what an event teaches it (``_observe``, called with the
    user's history *before* the event) and how it scores the catalogue for a
    history (``_score``). Items first met in an event join the catalogue then
    (text: the event's ``item_text`` or the id, as in the engine), so every
    recommender ranks the same items.

    Parameters
    ----------
    items
        The catalogue known before the first event.
    name
        The name reports show.

    Attributes
    ----------
    item_ids
        Catalogue item ids by index.
    history
        Each user's consumed item indices in stream order (repeats kept).
    consumed
        Each user's distinct consumed item indices (all of them: exclusion is unbounded).
    popularity
        Times each item was consumed so far.
    """

    name: str = "baseline"

    def __init__(self, items: Iterable[CatalogItem] = (), *, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self.item_ids: list[str] = []
        self._index: dict[str, int] = {}
        self.history: dict[str, list[int]] = {}
        self.consumed: dict[str, set[int]] = {}
        self.popularity = GrowableVector()
        added, texts = [], []
        for item in items:
            if item.item_id not in self._index:
                added.append(self._add_item(item.item_id))
                texts.append(item.render_text())
        if added:
            self._items_added(added, texts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, items={len(self.item_ids)})"

    def _add_item(self, item_id: str) -> int:
        index = len(self.item_ids)
        self._index[item_id] = index
        self.item_ids.append(item_id)
        return index

    def index_of(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    def parameters(self) -> dict[str, float]:
        """The model's parameters, for reports."""
        return {}

    # ----------------------------------------------------------- the protocol
    def learn(self, events: Sequence[BehaviourEvent]) -> None:
        """Learn events in the order given (the evaluator gives stream order)."""
        added, texts = [], []
        for event in events:
            if event.item_id not in self._index:
                added.append(self._add_item(event.item_id))
                texts.append(event.item_text or event.item_id)
        if added:
            self._items_added(added, texts)
        for event in events:
            item = self._index[event.item_id]
            history = self.history.setdefault(event.user_id, [])
            self._observe(event, item, history)
            self.popularity.add(item, 1.0)
            history.append(item)
            self.consumed.setdefault(event.user_id, set()).add(item)

    def recommend(self, user_ids: Sequence[str], k: int) -> list[list[str]]:
        """Top-``k`` item ids per user, consumed items excluded; learns nothing."""
        lists = []
        for user_id in user_ids:
            scores = self._score(self.history.get(user_id, ()))
            consumed = self.consumed.get(user_id)
            if consumed:
                scores[np.fromiter(consumed, np.int64, len(consumed))] = -np.inf
            top = top_k_indices(scores, k)
            lists.append([self.item_ids[i] for i in top.tolist()])
        return lists

    # ----------------------------------------------------------- for subclasses
    def _items_added(self, indices: list[int], texts: list[str]) -> None:
        """New catalogue items (indices in order, with their texts)."""

    def _observe(self, event: BehaviourEvent, item: int, history: Sequence[int]) -> None:
        """Learn one event of ``item``; ``history`` is the user's items before it."""

    def _score(self, history: Sequence[int]) -> np.ndarray:
        """A fresh float64 score per catalogue item for a user with this history."""
        raise NotImplementedError
