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
``driftrec-exact``              the engine with ``ranking="exact"``: every item scored, the
                                reference two-stage ranking is checked against (the
                                evaluator reports how much of its top-k the others find)
==============================  ==============================================================

Lists follow the engine's one tie rule (:func:`models.top_k.top_k_indices`):
higher score first, equal scores by lower catalogue index (the order items
were first known). A transition model whose user's last item has fewer than
``k`` successors is therefore filled in catalogue order, as the engine would
fill it; the baselines used to fill with the most popular items, a second tie
rule that made the evaluation compare tie policies as well as models. A list
never depends on how many users were asked for at once.

The baselines live one family per module: :mod:`.catalogue` (the shared
scoring base), :mod:`.popularity`, :mod:`.transitions`,
:mod:`.text_similarity`, and :mod:`.engine_adapter` (the engine itself, for
``driftrec-no-clustering`` and the system under test).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.contracts import CatalogItem
from models.evaluation.baselines.catalogue import CatalogueRecommender, top_k_indices
from models.evaluation.baselines.engine_adapter import EngineRecommender
from models.evaluation.baselines.popularity import GlobalPopularity, RecentPopularity
from models.evaluation.baselines.text_similarity import LastItemTextSimilarity
from models.evaluation.baselines.transitions import ItemTransitions, RecentItemsTransitions
from models.settings import DAY_S, EngineSettings

if TYPE_CHECKING:
    from models.item_catalog import TextEncoderLike

__all__ = [
    "BASELINE_NAMES",
    "ENGINE_VARIANTS",
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
    "driftrec-exact",
)

#: Engine variants: the settings each changes.
ENGINE_VARIANTS: dict[str, dict[str, object]] = {
    "driftrec-no-clustering": {"clustering": False},
    "driftrec-exact": {"ranking": "exact"},
}


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

    ``text-similarity`` and the engine variants need the ``encoder``; the
    variants are built from ``settings`` with their change (``ENGINE_VARIANTS``).

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
                        base.model_copy(update=ENGINE_VARIANTS[name]),
                        items,
                        encoder=encoder,
                        name=name,
                    )
                )
    return built
