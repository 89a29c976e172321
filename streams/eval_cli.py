"""``driftrec eval DATASET``: driftrec and its baselines under one evaluation protocol.

Register it on the main app with ``app.command("eval")(eval_command)``.

The dataset folder holds MovieLens files (``ratings.csv`` + ``movies.csv``, or
``ratings.dat`` / ``ratings*.dat.gz`` + ``movies.dat``) or the contracts as
``events.jsonl`` (+ ``items.jsonl``); :func:`models.datasets.load_dataset`
detects which. driftrec (in-memory state, the persistent vector cache under
``data_dir``) and the chosen baselines then run the same protocol over the
same events (:mod:`models.evaluation.protocols`); the figures go to the
terminal, to a JSON file and to two PNG plots.
"""

from __future__ import annotations

import difflib
import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from models.settings import DAY_S, EngineSettings

__all__ = ["EvalProtocol", "apply_overrides", "eval_command"]


class EvalProtocol(StrEnum):
    """The evaluation protocols ``driftrec eval`` runs."""

    prequential = "prequential"
    loo = "loo"


def apply_overrides(settings: EngineSettings, assignments: list[str]) -> EngineSettings:
    """``name=value`` assignments applied to ``settings`` and validated.

    A value is read as JSON when it parses (``20``, ``false``, ``{"rate": 3}``)
    and as a plain string otherwise (``cpu``, ``/tmp/data``); dashes in names
    count as underscores.

    >>> s = apply_overrides(EngineSettings(), ["window-size=20", "clustering=false", "device=cpu"])
    >>> s.window_size, s.clustering, s.device
    (20, False, 'cpu')
    >>> apply_overrides(EngineSettings(), ["windw_size=3"])
    Traceback (most recent call last):
    ...
    ValueError: --set windw_size=3: no engine setting 'windw_size' (did you mean window_size?)
    """
    fields = EngineSettings.model_fields
    updates: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"--set {assignment}: expected name=value, e.g. window_size=20")
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set {assignment}: no engine setting {name!r}{hint}")
        try:
            updates[name] = json.loads(raw)
        except ValueError:
            updates[name] = raw
    if not updates:
        return settings
    try:
        return EngineSettings(**{**settings.model_dump(), **updates})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"--set: invalid engine settings: {problems}") from None


def eval_command(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="Folder with MovieLens files (ratings.csv+movies.csv, ratings.dat(.gz)+"
            "movies.dat) or events.jsonl (+items.jsonl)."
        ),
    ],
    protocol: Annotated[
        EvalProtocol, typer.Option(help="prequential (test-then-train) or loo (leave-one-out).")
    ] = EvalProtocol.prequential,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="List length.")] = 10,
    every: Annotated[
        int, typer.Option(min=1, help="Prequential: score every N-th event, learn all.")
    ] = 1,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write all figures here (default: OUT/metrics.json)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the plots.")] = Path("eval-out"),
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N events (event-time order).")
    ] = None,
    baselines: Annotated[
        str,
        typer.Option(
            help="all, none, or a comma list of: popularity, recent-popularity, "
            "item-transitions, recent-items-transitions, text-similarity, "
            "driftrec-no-clustering, driftrec-exact (then the report gives the share of its "
            "top-k each other list holds)."
        ),
    ] = "all",
    batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Longest run of events scored with one recommend call (1: strict "
            "one-by-one); LOO: events per learn and users per recommend call.",
        ),
    ] = 256,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Engine setting override name=value (repeatable)."),
    ] = None,
    no_clustering: Annotated[
        bool, typer.Option("--no-clustering", help="Run driftrec with clustering off.")
    ] = False,
    driftrec: Annotated[
        bool, typer.Option("--driftrec/--no-driftrec", help="Evaluate driftrec itself.")
    ] = True,
    recent_half_life_days: Annotated[
        float, typer.Option(min=0.001, help="Half-life of the recent-popularity baseline.")
    ] = 7.0,
    slices: Annotated[int, typer.Option(min=1, help="Time slices for HR over time.")] = 20,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Evaluate driftrec against baselines (prequential or leave-one-out) on a dataset."""
    from models.datasets import detect_format, load_dataset
    from models.evaluation import (
        EngineRecommender,
        build_baselines,
        leave_one_out,
        prequential,
        resolve_baseline_names,
    )
    from models.evaluation.report import (
        plot_hit_rate_over_time,
        plot_summary,
        result_to_dict,
        summary_table,
    )
    from models.record_parser import EventParser

    console = Console()
    started = time.perf_counter()
    try:
        settings = apply_overrides(EngineSettings(), list(set_ or []))
        if no_clustering:
            settings = settings.model_copy(update={"clustering": False})
        names = resolve_baseline_names(baselines)
        data_format = detect_format(dataset)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from None
    if not settings.clustering and "driftrec-no-clustering" in names and driftrec:
        names.remove("driftrec-no-clustering")
        console.print("driftrec runs without clustering: the driftrec-no-clustering baseline is it")
    if not driftrec and not names:
        raise typer.BadParameter("nothing to evaluate: --no-driftrec and --baselines none")

    data = load_dataset(dataset, EventParser.from_settings(settings), limit=limit)
    users = len({e.user_id for e in data.events})
    console.print(
        f"{data.name} ({data_format}): {len(data.items):,} items, {len(data.events):,} events, "
        f"{users:,} users" + (f", {len(data.rejected):,} rejected lines" if data.rejected else "")
    )
    for bad in data.rejected[:5]:
        console.print(f"  [red]rejected[/red] {bad.source}:{bad.line}: {bad.error}")
    if not data.events:
        raise typer.BadParameter(f"{dataset}: no events to evaluate")

    encoder = None
    if driftrec or {"text-similarity", "driftrec-no-clustering", "driftrec-exact"} & set(names):
        from models.encoder_factory import make_encoder
        from models.vector_cache import CachedEncoder

        encoder = CachedEncoder(
            make_encoder(settings), path=Path(settings.data_dir) / "vector-cache"
        )
    recommenders: list[Any] = []
    try:
        encode_started = time.perf_counter()
        if driftrec:
            assert encoder is not None
            recommenders.append(
                EngineRecommender.build(settings, data.items, encoder=encoder, name="driftrec")
            )
        recommenders += build_baselines(
            names,
            data.items,
            encoder=encoder,
            settings=settings,
            recent_half_life_s=recent_half_life_days * DAY_S,
        )
        if encoder is not None:
            console.print(
                f"catalogue encoded in {time.perf_counter() - encode_started:,.1f} s "
                f"({encoder.misses:,} texts encoded, {encoder.hits:,} from the cache)"
            )
        catalogue = [item.item_id for item in data.items]
        if protocol is EvalProtocol.prequential:
            result = prequential(
                data.events,
                recommenders,
                k=k,
                every=every,
                max_run=batch,
                catalogue=catalogue,
                n_slices=slices,
                progress=progress,
            )
            results = {"prequential": result}
            primary = result
        else:
            loo = leave_one_out(
                data.events,
                recommenders,
                k=k,
                batch=batch,
                catalogue=catalogue,
                n_slices=slices,
                progress=progress,
            )
            results = {"loo-validation": loo.validation, "loo-test": loo.test}
            primary = loo.test
    finally:
        for recommender in recommenders:
            close = getattr(recommender, "close", None)
            if close is not None:
                close()
        if encoder is not None:
            encoder.close()

    for name, result in results.items():
        console.print(summary_table(result, title=f"{data.name} · {name} · top-{k}"))
    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "hr_over_time": str(
            plot_hit_rate_over_time(
                primary,
                out / "hr-over-time.png",
                title=f"{data.name}: HR@{k} over time ({primary.protocol})",
            )
        ),
        "summary": str(
            plot_summary(
                primary, out / "summary.png", title=f"{data.name}: {primary.protocol}, top-{k}"
            )
        ),
    }
    document = {
        "dataset": {
            "name": data.name,
            "path": str(dataset),
            "format": data_format,
            "items": len(data.items),
            "events": len(data.events),
            "users": users,
            "rejected": len(data.rejected),
            "limit": limit,
        },
        "protocol": protocol.value,
        "k": k,
        "every": every if protocol is EvalProtocol.prequential else None,
        "batch": batch,
        "recommenders": [r.name for r in recommenders],
        "baseline_parameters": {
            r.name: r.parameters() for r in recommenders if hasattr(r, "parameters")
        },
        "tie_break": "equal scores ordered by lower catalogue index (engine and baselines)",
        "settings": settings.model_dump(mode="json"),
        "results": {name: result_to_dict(result) for name, result in results.items()},
        "plots": plots,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    json_file = json_path or out / "metrics.json"
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    console.print(
        f"figures: {json_file}; plots: {plots['hr_over_time']}, {plots['summary']}; "
        f"{document['wall_s']:,.0f} s in all"
    )
