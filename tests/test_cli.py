"""The ``driftrec`` CLI end to end: the demo at a small size, and replay."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from streams.cli import app

runner = CliRunner()


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(out),
            "--users",
            "40",
            "--events-per-user",
            "30",
            "--items-per-topic",
            "12",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "what happened" in result.output
    assert "drifts from" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["events"] == 40 * 30
    assert report["recommendations"] == report["events"]
    assert report["clusters_born"] >= 2
    # The shown lists beat a random top-10 of the 144 items by far, before the users
    # drifted and after; the users' clusters follow their current topics.
    chance = 10 / (12 * 12)
    assert report["hr10_before_drift"] > 3 * chance
    assert report["hr10_after_drift"] > 2 * chance
    assert report["ari_users_topics"] > 0.2
    for name in ("cluster-sizes.png", "hit-rate.png", "report.md", "sample-recommendations.jsonl"):
        assert (out / name).stat().st_size > 0, name


def test_replay_writes_recommendation_events(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    events = [
        {"user_id": f"u{n % 5}", "item_id": f"i{n % 17}", "event": "click", "ts": 1000 + n}
        for n in range(60)
    ]
    (data / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\nnot json\n")
    (data / "items.jsonl").write_text(
        "\n".join(json.dumps({"item_id": f"i{n}", "title": f"Item number {n}"}) for n in range(17))
    )
    out = tmp_path / "recs.jsonl"
    result = runner.invoke(
        app,
        [
            "replay",
            str(data),
            "--out",
            str(out),
            "--interest-out",
            str(tmp_path / "interest.jsonl"),
            "--data-dir",
            str(tmp_path / "state"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 60
    assert {line["user_id"] for line in lines} == {f"u{n}" for n in range(5)}
    interest = [json.loads(line) for line in (tmp_path / "interest.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "born" for e in interest)  # the first cluster, at least
