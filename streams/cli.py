"""The ``driftrec`` command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from models.settings import EngineSettings
from streams.encoder_server import serve_encoder
from streams.eval_cli import eval_command
from streams.worker_cli import register_worker_commands

app = typer.Typer(
    help="driftrec: real-time recommendations that follow drifting interests.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report and plots.")] = Path("demo-out"),
    users: Annotated[int, typer.Option(min=2, help="Synthetic customers.")] = 300,
    events_per_user: Annotated[int, typer.Option(min=2)] = 60,
    items_per_topic: Annotated[int, typer.Option(min=2)] = 40,
    seed: Annotated[int, typer.Option()] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    serve: Annotated[
        int | None, typer.Option(help="Serve the live console on this port (0: any free).")
    ] = None,
    pace_s: Annotated[float, typer.Option(help="With --serve: seconds between batches.")] = 0.05,
) -> None:
    """Stream a synthetic shop with known interest drift through the engine and report."""
    from streams.demo import run_demo

    run_demo(
        EngineSettings(),
        out,
        n_users=users,
        events_per_user=events_per_user,
        items_per_topic=items_per_topic,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        console=console,
        serve_port=serve,
        pace_s=pace_s if serve is not None else 0.0,
    )


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="MovieLens folder, or events.jsonl (+items.jsonl).")],
    out: Annotated[Path, typer.Option(help="Recommendation events, JSONL.")] = Path(
        "recommendations.jsonl"
    ),
    interest_out: Annotated[
        Path, typer.Option(help="Interest events (users' moves, clusters' lifecycle), JSONL.")
    ] = Path("interest-events.jsonl"),
    limit: Annotated[int | None, typer.Option(help="Only the first N events.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    data_dir: Annotated[
        Path | None, typer.Option(help="RocksDB folder (default: settings).")
    ] = None,
    in_memory: Annotated[bool, typer.Option(help="Keep state in memory, not RocksDB.")] = False,
    progress: Annotated[bool, typer.Option()] = True,
) -> None:
    """Run the engine over a real event file and write the recommendation events."""
    from models.datasets import load_dataset
    from models.engine import Engine
    from models.record_parser import EventParser
    from streams.embedded import run_stream

    settings = EngineSettings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    dataset = load_dataset(path, EventParser.from_settings(settings), limit=limit)
    console.print(
        f"{dataset.name}: {len(dataset.items):,} items, {len(dataset.events):,} events"
        + (f", {len(dataset.rejected):,} rejected lines" if dataset.rejected else "")
    )
    for bad in dataset.rejected[:5]:
        console.print(f"  [red]rejected[/red] {bad.source}:{bad.line}: {bad.error}")
    engine = Engine.build(settings, in_memory=in_memory)
    try:
        engine.upsert_items(dataset.items)
        with open(out, "wb") as sink, open(interest_out, "wb") as interest_sink:

            def write(_batch, recs) -> None:
                sink.writelines(r.to_json_bytes() + b"\n" for r in recs)
                interest_sink.writelines(
                    e.to_json_bytes() + b"\n" for e in engine.pop_interest_events()
                )

            emitted = run_stream(
                engine,
                dataset.events,
                batch_size=batch_size,
                on_batch=write,
                progress=progress,
                description="replay",
            )
    finally:
        engine.close()
    console.print(
        f"wrote {emitted:,} recommendation events to {out}, interest events to {interest_out}"
    )


app.command("eval")(eval_command)
register_worker_commands(app)
app.command("serve-encoder")(serve_encoder)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
