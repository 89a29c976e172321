"""The system under test behind the baselines' interface: an :class:`~models.engine.Engine`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from models.contracts import BehaviourEvent, CatalogItem
from models.settings import EngineSettings

if TYPE_CHECKING:
    from models.engine import Engine
    from models.item_catalog import TextEncoderLike

__all__ = ["EngineRecommender"]


class EngineRecommender:
    """The driftrec :class:`~models.engine.Engine` behind the evaluator's interface.

    ``learn`` is :meth:`Engine.learn` on the batch; ``recommend`` is
    :meth:`Engine.recommend` (which learns nothing and leaves out the user's
    consumed items, remembered up to ``seen_capacity`` per user) with the
    catalogue indices turned into item ids.

    Parameters
    ----------
    engine
        The engine, its catalogue already loaded.
    name
        The name reports show.

    Examples
    --------
    >>> from models.encoder import TextEncoder
    >>> items = [CatalogItem(item_id=f"m{n}", title=title) for n, title in
    ...          enumerate(["Space opera", "Romantic comedy", "Space war epic", "Cooking show"])]
    >>> driftrec = EngineRecommender.build(EngineSettings(), items,
    ...                                    encoder=TextEncoder(device="cpu"))
    >>> driftrec.learn([BehaviourEvent(user_id="u1", item_id="m0", event="view", ts=1.0,
    ...                                weight=1.0)])
    >>> lists = driftrec.recommend(["u1"], k=2)
    >>> len(lists[0]), "m0" in lists[0]
    (2, False)
    >>> driftrec.close()
    """

    def __init__(self, engine: Engine, *, name: str = "driftrec") -> None:
        self.engine = engine
        self.name = name

    @classmethod
    def build(
        cls,
        settings: EngineSettings,
        items: Iterable[CatalogItem],
        *,
        encoder: TextEncoderLike,
        name: str = "driftrec",
    ) -> EngineRecommender:
        """An engine with in-memory state and the given (shared) encoder, catalogue loaded."""
        from models.engine import Engine

        engine = Engine.build(settings, encoder=encoder, in_memory=True)
        engine.upsert_items(items)
        return cls(engine, name=name)

    def __repr__(self) -> str:
        return f"EngineRecommender(name={self.name!r})"

    def learn(self, events: Sequence[BehaviourEvent]) -> None:
        self.engine.learn(list(events))

    def recommend(self, user_ids: Sequence[str], k: int) -> list[list[str]]:
        id_of = self.engine.catalog.id_of
        return [[id_of(r.index) for r in row] for row in self.engine.recommend(user_ids, k=k)]

    def close(self) -> None:
        """Close the engine's state store; the encoder belongs to the caller and stays open."""
        self.engine.store.close()
