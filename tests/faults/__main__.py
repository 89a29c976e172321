"""``make chaos``: run the whole fault suite against the local broker and write docs/reliability.md.

    python -m tests.faults                      # every scenario, default sizes
    python -m tests.faults --only crash-loop --events 3000 --out /tmp/rel.md

Each scenario runs on its own topics; the table of figures and the trail of
each scenario (what was done when, with the group's committed offsets) go to
``docs/reliability.md`` between the markers of its "Measured" section, and
the raw reports to ``docs/reliability/faults.json``.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from tests.faults.harness import Report
from tests.faults.scenarios import SCENARIOS, Rig, Size

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"

app = typer.Typer(add_completion=False)


def table(reports: list[Report]) -> str:
    rows = [report.row() for report in reports]
    headers = [*rows[0].keys(), "ok"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for report, row in zip(reports, rows, strict=True):
        cells = [
            "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
            for value in row.values()
        ]
        lines.append("| " + " | ".join([*cells, "yes" if report.ok else "**no**"]) + " |")
    return "\n".join(lines)


def render(reports: list[Report], trails: dict[str, list[str]], size: Size, wall_s: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        BEGIN,
        f"`python -m tests.faults` on {when}: {platform.processor() or platform.machine()}, "
        f"{_cores()} cores, Python {platform.python_version()}; {size.events:,} events of "
        f"{size.users} users at {size.rate:.0f} events/s per scenario, "
        f"{size.poison_rate:.0%} poison records; {wall_s / 60:.0f} min in all.",
        "",
        table(reports),
        "",
    ]
    for report in reports:
        lines = [*trails.get(report.scenario, []), *report.notes]
        if report.lost:
            lines.append(f"lost: {report.lost[:20]}")
        if report.leak_examples:
            lines.append(f"leaks: {report.leak_examples[:5]}")
        if report.misrouted:
            lines.append(f"misrouted: {report.misrouted[:5]}")
        if lines:
            parts += [f"**{report.scenario}**", "", "```", *lines, "```", ""]
    parts.append(END)
    return "\n".join(parts)


def _cores() -> int:
    import os

    return os.cpu_count() or 0


@app.command()
def main(
    only: Annotated[list[str] | None, typer.Option(help="Scenario names (repeatable).")] = None,
    events: Annotated[int, typer.Option(help="Events per scenario.")] = 6000,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 200.0,
    bootstrap: Annotated[str, typer.Option(help="The broker.")] = "127.0.0.1:9092",
    out: Annotated[Path, typer.Option(help="The document to write.")] = DOC,
) -> None:
    """Run the fault scenarios and write their figures into docs/reliability.md."""
    names = only or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise typer.BadParameter(f"unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
    size = Size(events=events, users=max(50, events // 20), rate=rate)
    reports: list[Report] = []
    trails: dict[str, list[str]] = {}
    started = time.monotonic()
    for name in names:
        root = Path(tempfile.mkdtemp(prefix=f"driftrec-faults-{name}-"))
        rig = Rig(bootstrap, root, name.replace("-", ""), size)
        print(f"== {name} (logs in {root})", flush=True)
        try:
            report = SCENARIOS[name](rig)
        except Exception as error:  # a scenario that cannot finish is a failed scenario
            report = Report(scenario=name, sent=len(rig.plan), notes=[f"did not finish: {error!r}"])
            report.misrouted.append(f"scenario failed: {error!r}")
        finally:
            rig.close()
        trails[report.scenario] = rig.trail
        reports.append(report)
        print(report.summary(), flush=True)
    wall_s = time.monotonic() - started
    text = out.read_text() if out.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    out.write_text(head + render(reports, trails, size, wall_s) + tail)
    raw = out.parent / "reliability" / "faults.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps([{**r.row(), "ok": r.ok, "notes": r.notes} for r in reports], indent=2)
    )
    print(f"wrote {out} and {raw}")
    if not all(report.ok for report in reports):
        sys.exit(1)


if __name__ == "__main__":
    app()
