"""Offline evaluation of driftrec against baselines: protocols, metrics, baselines, reports.

``driftrec eval`` (``streams/eval_cli.py``) runs these on a MovieLens folder
or on events/items JSONL files:

* :mod:`~models.evaluation.protocols` — prequential (test-then-train) and
  leave-one-out full ranking, over any :class:`Recommender`;
* :mod:`~models.evaluation.metrics` — HR@k, NDCG@k, MRR@k, coverage, HR per time slice;
* :mod:`~models.evaluation.baselines` — popularity, recent popularity, item
  transitions, recent-items transitions, last-item text similarity, and the
  engine behind the same interface;
* :mod:`~models.evaluation.report` — the terminal table, JSON and PNG plots.
"""

from models.evaluation.baselines import (
    BASELINE_NAMES,
    CatalogueRecommender,
    EngineRecommender,
    GlobalPopularity,
    ItemTransitions,
    LastItemTextSimilarity,
    RecentItemsTransitions,
    RecentPopularity,
    build_baselines,
    resolve_baseline_names,
)
from models.evaluation.metrics import MetricSummary, RankAccumulator, summarise
from models.evaluation.protocols import (
    EvaluationResult,
    LeaveOneOutResult,
    Recommender,
    RecommenderResult,
    leakfree_runs,
    leave_one_out,
    prequential,
)

__all__ = [
    "BASELINE_NAMES",
    "CatalogueRecommender",
    "EngineRecommender",
    "EvaluationResult",
    "GlobalPopularity",
    "ItemTransitions",
    "LastItemTextSimilarity",
    "LeaveOneOutResult",
    "MetricSummary",
    "RankAccumulator",
    "RecentItemsTransitions",
    "RecentPopularity",
    "Recommender",
    "RecommenderResult",
    "build_baselines",
    "leakfree_runs",
    "leave_one_out",
    "prequential",
    "resolve_baseline_names",
    "summarise",
]
