"""Smoke test of the benchmark harness: every benchmark at a tiny size, then the report.

The figures at this size mean nothing; the test only keeps the harness from
rotting (imports, result schema, report and plots). The Kafka benchmark's
smoke test is in ``tests/integration`` (it needs the broker).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import catalogue_scale, clustering, encoder, engine, report


@pytest.mark.slow
def test_every_benchmark_runs_tiny_and_the_report_is_written(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks"
    results.mkdir()
    runs = {
        "clustering": clustering.run("tiny", progress=False),
        "encoder": encoder.run("tiny", progress=False),
        "engine": engine.run("tiny", data=None, progress=False),
        "scale": catalogue_scale.run("tiny", progress=False),
    }
    for name, figures in runs.items():
        figures.update(
            benchmark=name,
            wall_s=1.0,
            date="today",
            command="pytest",
            machine={
                "cpu": "test", "cores": 2, "memory_gib": 1, "gpu": None, "python": "3",
                "packages": {}, "kafka": "4", "java": "17",
            },
        )  # fmt: skip
        (results / f"{name}.json").write_text(json.dumps(figures))

    rows = runs["clustering"]["rows"]
    assert {(r["dim"], r["noise"]) for r in rows} == {(384, 0.5), (384, 1.0), (32, 0.5), (32, 1.0)}
    ours = [r for r in rows if r["method"].startswith("driftrec")]
    assert all(r["points_per_s"] > 0 and -1 <= r["ari_last_quarter"] <= 1 for r in rows)
    assert all(r["ari_first_half"] > 0.5 for r in ours)  # finds the tight 384-d clusters
    enc = runs["encoder"]["rows"]
    assert {r["workload"] for r in enc} == {
        "short (~10 words)",
        "long (~100 words)",
        "mixed (5-150 words)",
    }
    assert all(r["max_abs_diff"] < 1e-4 for r in enc)  # both encoders give the same vectors
    eng = runs["engine"]["rows"]
    assert [r["items"] for r in eng if "catalogue" in r["config"]] == [
        eng[2]["native_items"] * f for f in (1, 4, 16)
    ]
    assert all(r["events_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in eng)
    scale = runs["scale"]["rows"]
    assert {(r["ranking"], r["stream"]) for r in scale} == {
        ("two-stage", "live shop"),
        ("two-stage", "bursty replay"),
        ("exact", "live shop"),
    }
    live = [r for r in scale if r["stream"] == "live shop"]
    assert all(r["users_per_batch"] > 150 for r in live)  # a live shop: ~one user per event
    assert all(0 < r["candidates_per_user"] < r["items"] for r in scale if r["ranking"] != "exact")

    markdown = tmp_path / "benchmarks.md"
    report.write(results, markdown)
    text = markdown.read_text()
    for heading in (
        "## 1. Clustering",
        "## 2. Encoder",
        "## 3. Engine",
        "## 3b. Catalogue",
        "## 5. GPU",
    ):
        assert heading in text
    assert {p.name for p in results.glob("*.png")} == {
        "clustering.png",
        "encoder.png",
        "engine.png",
        "scale.png",
    }
