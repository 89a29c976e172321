"""``driftrec eval`` end to end on small data (and on ml-latest-small when it is there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from models.evaluation.baselines import BASELINE_NAMES
from models.evaluation.protocols import scored_mask
from models.settings import EngineSettings
from streams.eval_cli import apply_overrides, eval_command

from . import catalogue, sequential_stream

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

app = typer.Typer(add_completion=False)
app.command("eval")(eval_command)


@app.callback()
def _root() -> None:
    """A test app holding only the eval command."""


runner = CliRunner()


@pytest.fixture(scope="module")
def stream():
    return sequential_stream(n_users=16, n_items=40, events_per_user=10, seed=5)


@pytest.fixture
def jsonl_dataset(tmp_path, stream) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    with open(folder / "events.jsonl", "wb") as f:
        for event in stream:
            f.write(event.to_json_bytes() + b"\n")
        f.write(b'{"user_id": "u1", "item_id": "i1"}\n')  # no event type, no ts: rejected
    with open(folder / "items.jsonl", "wb") as f:
        for item in catalogue(40):
            f.write(item.to_json_bytes() + b"\n")
    return folder


def _movielens_csv(folder: Path, stream) -> Path:
    folder.mkdir()
    lines = ["movieId,title,genres"] + [
        f'{n},"{item.title} ({1990 + n})",Drama|Comedy' for n, item in enumerate(catalogue(40))
    ]
    (folder / "movies.csv").write_text("\n".join(lines) + "\n")
    rows = ["userId,movieId,rating,timestamp"] + [
        f"{e.user_id[1:]},{e.item_id[1:]},{1 + int(e.event_id) % 5}.0,{int(e.ts)}" for e in stream
    ]
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_prequential_end_to_end_with_driftrec_and_every_baseline(tmp_path, jsonl_dataset, stream):
    out, report = tmp_path / "out", tmp_path / "figures.json"
    result = runner.invoke(
        app,
        [
            "eval",
            str(jsonl_dataset),
            "--k",
            "5",
            "--every",
            "2",
            "--json",
            str(report),
            "--out",
            str(out),
            "--set",
            f"data_dir={tmp_path / 'data'}",
            "--set",
            "window_size=20",
            "--slices",
            "5",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "HR@5" in result.output and "1 rejected lines" in result.output
    doc = json.loads(report.read_text())
    assert doc["dataset"]["format"] == "jsonl"
    assert doc["dataset"]["events"] == len(stream)
    assert doc["settings"]["window_size"] == 20
    assert doc["recommenders"] == ["driftrec", *BASELINE_NAMES]
    figures = doc["results"]["prequential"]
    assert figures["n_scored"] == int(scored_mask(stream, every=2).sum())
    assert figures["catalogue_size"] == 40
    assert len(figures["slices"]) == 5
    assert sum(s["n"] for s in figures["slices"]) == figures["n_scored"]
    for name, r in figures["recommenders"].items():
        assert r["n"] == figures["n_scored"], name
        assert r["consumed_in_lists"] == 0, name
        assert 0.0 <= r["mrr"] <= r["ndcg"] <= r["hr"] <= 1.0, name
        assert 0.0 < r["coverage"] <= 1.0, name
        assert len(r["hr_per_slice"]) == 5
    ranked = figures["recommenders"]
    assert ranked["recent-items-transitions"]["hr"] > ranked["popularity"]["hr"]
    assert ranked["driftrec"]["hr"] > ranked["popularity"]["hr"]
    for png in ("hr-over-time.png", "summary.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_leave_one_out_on_movielens_csv_without_clustering(tmp_path, stream):
    folder = _movielens_csv(tmp_path / "ml-tiny", stream)
    result = runner.invoke(
        app,
        [
            "eval",
            str(folder),
            "--protocol",
            "loo",
            "--baselines",
            "popularity,item-transitions,driftrec-no-clustering",
            "--no-clustering",
            "--batch",
            "32",
            "--out",
            str(tmp_path / "out"),
            "--set",
            f"data_dir={tmp_path / 'data'}",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "loo-test" in result.output and "loo-validation" in result.output
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["dataset"]["format"] == "movielens-csv"
    assert doc["settings"]["clustering"] is False
    # driftrec itself runs without clustering, so the duplicate baseline is dropped
    assert doc["recommenders"] == ["driftrec", "popularity", "item-transitions"]
    users = len({e.user_id for e in stream})
    for split in ("loo-validation", "loo-test"):
        figures = doc["results"][split]
        assert figures["n_scored"] == users
        for name, r in figures["recommenders"].items():
            assert r["consumed_in_lists"] == 0, (split, name)
    assert doc["results"]["loo-test"]["parameters"]["train_events"] == len(stream) - 2 * users


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "windw_size=3"], "did you mean window_size"),
        (["--set", "window_size=0"], "window_size"),
        (["--baselines", "popularty"], "unknown baseline"),
        (["--no-driftrec", "--baselines", "none"], "nothing to evaluate"),
    ],
)
def test_bad_options_fail_with_a_clear_message(tmp_path, jsonl_dataset, arguments, message):
    result = runner.invoke(app, ["eval", str(jsonl_dataset), *arguments, "--no-progress"])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


def test_a_folder_without_a_dataset_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["eval", str(empty), "--no-progress"])
    assert result.exit_code == 2
    assert "events.jsonl" in result.output


def test_apply_overrides_reads_json_values_and_validates():
    settings = apply_overrides(
        EngineSettings(), ['event_weights={"view": 2.0, "rate": 1.0}', "facets=0"]
    )
    assert settings.event_weights == {"view": 2.0, "rate": 1.0}
    assert settings.facets == 0
    with pytest.raises(ValueError, match="name=value"):
        apply_overrides(EngineSettings(), ["window_size"])
    with pytest.raises(ValueError, match="invalid engine settings"):
        apply_overrides(EngineSettings(), ["interest_mode=pooling"])


@pytest.mark.skipif(
    not (SHARED / "ml-latest-small" / "ratings.csv").exists(),
    reason=f"the shared dataset {SHARED / 'ml-latest-small'} is not on this machine",
)
def test_baselines_on_the_first_events_of_ml_latest_small(tmp_path):
    result = runner.invoke(
        app,
        [
            "eval",
            str(SHARED / "ml-latest-small"),
            "--limit",
            "3000",
            "--no-driftrec",
            "--baselines",
            "popularity,item-transitions,recent-items-transitions",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "metrics.json").read_text())["results"]["prequential"]
    assert figures["n_events"] == 3000 and figures["catalogue_size"] == 9742
    r = figures["recommenders"]
    assert r["recent-items-transitions"]["hr"] > r["item-transitions"]["hr"] > r["popularity"]["hr"]
