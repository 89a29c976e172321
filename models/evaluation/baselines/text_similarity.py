"""The content baseline: items whose text is nearest the user's last item's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from models.contracts import CatalogItem
from models.evaluation.baselines.catalogue import CatalogueRecommender

if TYPE_CHECKING:
    from models.item_catalog import TextEncoderLike

__all__ = ["LastItemTextSimilarity"]


class LastItemTextSimilarity(CatalogueRecommender):
    """Items whose text is most similar to the user's last item's (cosine of unit vectors).

    Item texts are encoded once with the same encoder (and text) the engine
    uses; the score reads only the user's own last item, which makes it the
    content-only, cold-start-friendly reference.

    Parameters
    ----------
    items
        The catalogue known before the first event.
    encoder
        The text encoder (``encode(texts) -> [n, dim]``), e.g. the engine's.
    name
        The name reports show.

    Examples
    --------
    >>> from models.contracts import BehaviourEvent, CatalogItem
    >>> from models.encoder import TextEncoder
    >>> items = [CatalogItem(item_id=i, title=t) for i, t in
    ...          [("m1", "A dog chases a ball"), ("m2", "Stock market report"),
    ...           ("m3", "Puppies playing fetch in the park")]]
    >>> model = LastItemTextSimilarity(items, encoder=TextEncoder(device="cpu"))
    >>> model.learn([BehaviourEvent(user_id="u1", item_id="m1", event="view", ts=1.0,
    ...                             weight=1.0)])
    >>> model.recommend(["u1"], k=1)
    [['m3']]
    """

    name = "text-similarity"

    def __init__(
        self,
        items: Iterable[CatalogItem] = (),
        *,
        encoder: TextEncoderLike,
        name: str | None = None,
    ) -> None:
        self.encoder = encoder
        self._vectors = np.zeros((64, encoder.dim), np.float32)
        super().__init__(items, name=name)

    def _items_added(self, indices: list[int], texts: list[str]) -> None:
        vectors = np.asarray(self.encoder.encode(texts), np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        needed = indices[-1] + 1
        if needed > len(self._vectors):
            grown = np.zeros(
                (max(2 * len(self._vectors), needed), self._vectors.shape[1]), np.float32
            )
            grown[: len(self._vectors)] = self._vectors
            self._vectors = grown
        self._vectors[indices] = vectors / np.maximum(norms, 1e-12)

    def _score(self, history: Sequence[int]) -> np.ndarray:
        n = len(self.item_ids)
        if not history:
            return np.zeros(n, np.float64)
        return (self._vectors[:n] @ self._vectors[history[-1]]).astype(np.float64)
