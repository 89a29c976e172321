"""Baseline recommenders, and the engine behind the same small interface.

Every recommender the evaluator runs offers ``learn(events)``,
``recommend(user_ids, k) -> item ids`` and a ``name`` (the
:class:`~models.evaluation.protocols.Recommender` protocol). The baselines
here are deliberately plain and exact: counts held in full (no sketches, no
capacity limits), the whole catalogue scored with numpy, and every item a user
has consumed so far excluded (unbounded), so that a gap between driftrec and a
baseline is the model's doing, not the harness's.

==============================  ==============================================================
name                            score of item ``i`` for a user
==============================  ==============================================================
``popularity``                  times ``i`` was consumed so far, by anyone
``recent-popularity``           the same, each consumption decayed by ``2^(-age / half-life)``
``item-transitions``            times ``i`` was consumed right after the user's last item
``recent-items-transitions``    ``Σ_r d^r Σ_s 0.5^s · #(a_r, i, s)``: transitions to ``i``
                                from each of the user's last ``m`` items ``a_r`` (``r = 0``
                                the newest), where ``#(a, i, s)`` counts the times a user
                                consumed ``i`` with ``a`` ``s`` steps back in their history,
                                ``s ≤ W`` (session-kNN style)
``text-similarity``             cosine of ``i``'s text vector with the user's last item's
``driftrec-no-clustering``      the engine with ``clustering=False`` (its exclusion is the
                                engine's own: the last ``seen_capacity`` distinct items)
==============================  ==============================================================

Equal scores are ordered by global popularity so far, then by catalogue index
(the order items were first known). That matters for the transition models:
when the user's last item has fewer than ``k`` successors, the list is filled
with the most popular items (on ml-latest-small this lifts first-order
transitions from HR@10 0.070, filled in catalogue order, to 0.082). A list
never depends on how many users were asked for at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from models.contracts import BehaviourEvent, CatalogItem
from models.forward_decay import ForwardDecay
from models.growable_vector import GrowableVector
from models.settings import DAY_S, EngineSettings

if TYPE_CHECKING:
    from models.engine import Engine
    from models.item_catalog import TextEncoderLike

__all__ = [
    "BASELINE_NAMES",
    "CatalogueRecommender",
    "EngineRecommender",
    "GlobalPopularity",
    "ItemTransitions",
    "LastItemTextSimilarity",
    "RecentItemsTransitions",
    "RecentPopularity",
    "build_baselines",
    "resolve_baseline_names",
    "top_k_indices",
]

#: Every baseline ``build_baselines`` knows, in the order reports list them.
BASELINE_NAMES: tuple[str, ...] = (
    "popularity",
    "recent-popularity",
    "item-transitions",
    "recent-items-transitions",
    "text-similarity",
    "driftrec-no-clustering",
)


def top_k_indices(scores: np.ndarray, k: int, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first.

    Equal scores are ordered by ``tie_break`` (higher first), then by lower
    index. ``-inf`` marks an excluded item; fewer than ``k`` indices come back
    when fewer items are allowed. The result depends on the scores alone (no
    ``argpartition`` tie lottery), so batched and one-by-one calls agree.

    >>> scores = np.array([0.5, 2.0, 0.5, -np.inf, 0.5, 1.0])
    >>> top_k_indices(scores, k=3).tolist()
    [1, 5, 0]
    >>> top_k_indices(scores, k=4, tie_break=np.array([0, 0, 1, 9, 3, 0])).tolist()
    [1, 5, 4, 2]
    >>> top_k_indices(np.array([-np.inf, 1.0]), k=3).tolist()
    [1]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores, np.float64)
    secondary = np.zeros(len(scores)) if tie_break is None else np.asarray(tie_break, np.float64)
    allowed = np.isfinite(scores)
    n_allowed = int(allowed.sum())
    if n_allowed <= k:
        candidates = np.flatnonzero(allowed)
    else:
        finite = np.where(allowed, scores, -np.inf)
        kth = np.partition(finite, len(finite) - k)[len(finite) - k]  # the k-th best score
        above = np.flatnonzero(finite > kth)
        tied = np.flatnonzero(finite == kth)
        tied = tied[np.lexsort((tied, -secondary[tied]))][: k - len(above)]
        candidates = np.concatenate([above, tied])
    return candidates[np.lexsort((candidates, -secondary[candidates], -scores[candidates]))]


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
        Times each item was consumed so far (the tie-break of every baseline).
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
        popularity = self.popularity.dense(len(self.item_ids))
        for user_id in user_ids:
            scores = self._score(self.history.get(user_id, ()))
            consumed = self.consumed.get(user_id)
            if consumed:
                scores[np.fromiter(consumed, np.int64, len(consumed))] = -np.inf
            top = top_k_indices(scores, k, tie_break=popularity)
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


def resolve_baseline_names(spec: str) -> list[str]:
    """Baseline names from ``all``, ``none`` or a comma-separated list (checked).

    >>> resolve_baseline_names("item-transitions, popularity")
    ['popularity', 'item-transitions']
    >>> resolve_baseline_names("none")
    []
    >>> resolve_baseline_names("pop")
    Traceback (most recent call last):
    ...
    ValueError: unknown baseline 'pop'; expected all, none, or a comma list of: popularity, ...
    """
    text = spec.strip().lower()
    if text == "all":
        return list(BASELINE_NAMES)
    if text in ("none", ""):
        return []
    asked = [part.strip() for part in text.split(",") if part.strip()]
    for name in asked:
        if name not in BASELINE_NAMES:
            raise ValueError(
                f"unknown baseline {name!r}; expected all, none, or a comma list of: "
                + ", ".join(BASELINE_NAMES)
            )
    return [name for name in BASELINE_NAMES if name in asked]


def build_baselines(
    names: Sequence[str],
    items: Sequence[CatalogItem],
    *,
    encoder: TextEncoderLike | None = None,
    settings: EngineSettings | None = None,
    recent_half_life_s: float = 7 * DAY_S,
) -> list[CatalogueRecommender | EngineRecommender]:
    """The named baselines, each with the catalogue loaded, in ``BASELINE_NAMES`` order.

    ``text-similarity`` and ``driftrec-no-clustering`` need the ``encoder``;
    ``driftrec-no-clustering`` is built from ``settings`` with clustering off.

    >>> [b.name for b in build_baselines(["item-transitions", "popularity"], [])]
    ['popularity', 'item-transitions']
    """
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; expected some of {list(BASELINE_NAMES)}")
    built: list[CatalogueRecommender | EngineRecommender] = []
    for name in BASELINE_NAMES:
        if name not in names:
            continue
        if name == "popularity":
            built.append(GlobalPopularity(items))
        elif name == "recent-popularity":
            built.append(RecentPopularity(items, half_life_s=recent_half_life_s))
        elif name == "item-transitions":
            built.append(ItemTransitions(items))
        elif name == "recent-items-transitions":
            built.append(RecentItemsTransitions(items))
        else:
            if encoder is None:
                raise ValueError(f"baseline {name!r} needs the text encoder; pass encoder=")
            if name == "text-similarity":
                built.append(LastItemTextSimilarity(items, encoder=encoder))
            else:
                base = settings or EngineSettings()
                built.append(
                    EngineRecommender.build(
                        base.model_copy(update={"clustering": False}),
                        items,
                        encoder=encoder,
                        name=name,
                    )
                )
    return built
