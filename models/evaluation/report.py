"""Reports of an evaluation: a terminal table, a JSON document and two PNG plots.

* :func:`result_to_dict` — every figure of an :class:`EvaluationResult`,
  machine-readable (what ``driftrec eval --json`` writes, inside a document
  that also names the dataset and the settings);
* :func:`summary_table` — a ``rich`` table, one row per recommender;
* :func:`plot_hit_rate_over_time` — HR@k per time slice, one line per recommender;
* :func:`plot_summary` — HR@k and NDCG@k side by side, one bar pair per recommender.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from models.evaluation.protocols import EvaluationResult

__all__ = ["plot_hit_rate_over_time", "plot_summary", "result_to_dict", "summary_table"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def result_to_dict(result: EvaluationResult) -> dict[str, Any]:
    """Every figure of ``result`` as plain JSON-ready values.

    Examples
    --------
    >>> from models.contracts import BehaviourEvent
    >>> from models.evaluation.baselines import GlobalPopularity
    >>> from models.evaluation.protocols import prequential
    >>> stream = [BehaviourEvent(user_id=u, item_id=i, event="view", ts=t, weight=1.0)
    ...           for t, (u, i) in enumerate([("u1", "a"), ("u2", "a"), ("u3", "b"),
    ...                                       ("u1", "b"), ("u2", "c")])]
    >>> doc = result_to_dict(prequential(stream, [GlobalPopularity()], k=2))
    >>> doc["n_scored"], doc["recommenders"]["popularity"]["hr"], doc["slices"][0]["n"]
    (2, 0.5, 1)
    """
    k = result.k
    recommenders = {}
    for name, r in result.recommenders.items():
        s = r.summary
        recommenders[name] = {
            "hr": s.hr,
            "ndcg": s.ndcg,
            "mrr": s.mrr,
            "coverage": s.coverage,
            "distinct_items": s.distinct_items,
            "n": s.n,
            "consumed_in_lists": r.consumed_in_lists,
            "learn_s": round(r.learn_s, 3),
            "recommend_s": round(r.recommend_s, 3),
            "hr_per_slice": r.hit_rate_per_slice,
        }
    slices = [
        {
            "start_ts": start,
            "end_ts": end,
            "start": _iso(start),
            "end": _iso(end),
            "n": n,
            "hr": {name: r.hit_rate_per_slice[i] for name, r in result.recommenders.items()},
        }
        for i, (start, end, n) in enumerate(result.slices)
    ]
    return {
        "protocol": result.protocol,
        "k": k,
        "metrics": {
            "hr": f"HR@{k}",
            "ndcg": f"NDCG@{k}",
            "mrr": f"MRR@{k}",
            "coverage": "distinct items recommended / catalogue size",
        },
        "n_events": result.n_events,
        "n_scored": result.n_scored,
        "catalogue_size": result.catalogue_size,
        "repeat_targets": result.repeat_targets,
        "wall_s": round(result.wall_s, 3),
        "parameters": result.parameters,
        "recommenders": recommenders,
        "slices": slices,
    }


def summary_table(result: EvaluationResult, *, title: str | None = None) -> Table:
    """One row per recommender: HR, NDCG, MRR, coverage, lists scored and time spent."""
    k = result.k
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=title or f"{result.protocol}: top-{k}, full catalogue, consumed items excluded",
        caption=(
            f"{result.n_events:,} events, {result.n_scored:,} lists scored per recommender, "
            f"{result.catalogue_size:,} items, {result.wall_s:,.0f} s"
        ),
    )
    found = next((v for key, v in result.parameters.items() if key.startswith("recall_of_")), None)
    headers = ["recommender", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "cover", "learn s", "rec. s"]
    if found is not None:
        headers.append("exact top-k found")
    for header in headers:
        if header == "recommender":
            width = max((len(name) for name in result.recommenders), default=11)
            table.add_column(header, min_width=width, no_wrap=True)
        else:
            table.add_column(header, justify="right", min_width=len(header), no_wrap=True)
    best_hr = max((r.summary.hr for r in result.recommenders.values()), default=0.0)
    for name, r in result.recommenders.items():
        s = r.summary
        hr = f"{s.hr:.4f}"
        cells = [
            name,
            f"[bold]{hr}[/bold]" if s.hr == best_hr and s.n else hr,
            f"{s.ndcg:.4f}",
            f"{s.mrr:.4f}",
            f"{s.coverage:.3f}",
            f"{r.learn_s:,.1f}",
            f"{r.recommend_s:,.1f}",
        ]
        if found is not None:
            cells.append(f"{found[name]:.3f}" if name in found else "–")
        table.add_row(*cells)
    return table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_hit_rate_over_time(
    result: EvaluationResult, path: Path | str, *, title: str | None = None
) -> Path:
    """HR@k of each recommender per time slice (x: the slice's middle, as a date)."""
    plt = _pyplot()
    path = Path(path)
    k = result.k
    middles = [datetime.fromtimestamp((start + end) / 2, UTC) for start, end, _ in result.slices]
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, r in result.recommenders.items():
        style = "-" if name.startswith("driftrec") else "--"
        width = 2.4 if name == "driftrec" else 1.4
        ax.plot(middles, r.hit_rate_per_slice, style, marker="o", ms=3, lw=width, label=name)
    ax.set_ylabel(f"HR@{k}")
    ax.set_xlabel(f"event time ({len(result.slices)} slices of equal numbers of lists)")
    ax.set_title(title or f"HR@{k} over time ({result.protocol})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_summary(result: EvaluationResult, path: Path | str, *, title: str | None = None) -> Path:
    """HR@k and NDCG@k of each recommender as grouped bars, values printed on the bars."""
    plt = _pyplot()
    import numpy as np

    path = Path(path)
    k = result.k
    names = list(result.recommenders)
    hr = [result.recommenders[n].summary.hr for n in names]
    ndcg = [result.recommenders[n].summary.ndcg for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.8))
    for offset, values, label in ((-0.2, hr, f"HR@{k}"), (0.2, ndcg, f"NDCG@{k}")):
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_title(title or f"{result.protocol}: HR@{k} and NDCG@{k}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
