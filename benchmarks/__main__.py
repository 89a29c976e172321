"""``python -m benchmarks``: run the benchmarks, save their figures, write docs/benchmarks.md."""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks import report
from benchmarks.machine import describe_machine

NAMES = ("clustering", "encoder", "engine", "scale", "kafka", "startup")
DOCS = Path(__file__).resolve().parents[1] / "docs"

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _run_one(name: str, size: str, device: str, dtype: str, bootstrap: str) -> dict[str, Any]:
    if name == "clustering":
        from benchmarks import clustering

        return clustering.run(size)
    if name == "encoder":
        from benchmarks import encoder

        return encoder.run(size, device=device, dtype=dtype)
    if name == "engine":
        from benchmarks import engine

        return engine.run(size, device=device, dtype=dtype)
    if name == "scale":
        from benchmarks import catalogue_scale

        return catalogue_scale.run(size)
    if name == "startup":
        from benchmarks import worker_startup

        return worker_startup.run(size, bootstrap=bootstrap)
    from benchmarks import kafka_worker

    return kafka_worker.run(size, bootstrap=bootstrap, device=device)


@app.command()
def run(
    only: Annotated[
        str,
        typer.Option(
            help="Comma-separated subset of clustering,encoder,engine,scale,kafka,startup."
        ),
    ] = ",".join(NAMES),
    size: Annotated[str, typer.Option(help="full, or tiny (the smoke test's size).")] = "full",
    device: Annotated[str, typer.Option(help="Encoder device: cpu, cuda, auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16.")] = "auto",
    tag: Annotated[str, typer.Option(help="Suffix of the result files, e.g. gpu.")] = "",
    results: Annotated[Path, typer.Option(help="Folder of the JSON results and plots.")] = DOCS
    / "benchmarks",
    markdown: Annotated[Path, typer.Option(help="The report to regenerate.")] = DOCS
    / "benchmarks.md",
    bootstrap: Annotated[str, typer.Option(help="Kafka for the kafka benchmark.")] = (
        "127.0.0.1:9092"
    ),
) -> None:
    """Run benchmarks, save each one's figures as JSON, then regenerate the report."""
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = set(names) - set(NAMES)
    if unknown or size not in ("full", "tiny"):
        raise typer.BadParameter(f"unknown benchmark(s) {sorted(unknown)} or size {size!r}")
    results.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    for name in names:
        print(f"[{name}] ({size}, device {device})", flush=True)
        started = time.perf_counter()
        figures = _run_one(name, size, device, dtype, bootstrap)
        figures.update(
            benchmark=name,
            wall_s=time.perf_counter() - started,
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            command=" ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks", *sys.argv[1:]]),
            machine=machine,
        )
        stem = f"{name}-{tag}" if tag else name
        (results / f"{stem}.json").write_text(json.dumps(figures, indent=1) + "\n")
        print(f"[{name}] done in {figures['wall_s']:.0f} s -> {results / stem}.json", flush=True)
    report.write(results, markdown)
    print(f"report: {markdown}")


@app.command("report")
def report_command(
    results: Annotated[Path, typer.Option()] = DOCS / "benchmarks",
    markdown: Annotated[Path, typer.Option()] = DOCS / "benchmarks.md",
) -> None:
    """Regenerate the report and plots from the saved JSON results."""
    report.write(results, markdown)
    print(f"report: {markdown}")


if __name__ == "__main__":
    app()
