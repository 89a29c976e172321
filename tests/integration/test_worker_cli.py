"""``driftrec produce`` and ``driftrec tail`` against the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.contracts import ClusterInfo, Recommendation, RecommendedItem
from models.synthetic_shop import synthetic_shop
from streams.worker_cli import app

from .worker_harness import consume, delete_topics, produce, unique_names

pytestmark = pytest.mark.kafka


def test_produce_publishes_catalogue_and_events_keyed_and_tail_prints_them(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = synthetic_shop(
        n_users=5, items_per_topic=3, events_per_user=6, n_topics=3, n_fading=1, n_emerging=1
    )
    (tmp_path / "items.jsonl").write_bytes(b"".join(i.to_json_bytes() + b"\n" for i in shop.items))
    (tmp_path / "events.jsonl").write_bytes(
        b"".join(e.to_json_bytes() + b"\n" for e in shop.events) + b'{"broken": \n'
    )
    prefix, _ = unique_names("cli")
    monkeypatch.setenv("DRIFTREC_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("DRIFTREC_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("DRIFTREC_PARTITIONS", "3")
    runner = CliRunner()
    try:
        result = runner.invoke(
            app, ["produce", str(tmp_path / "events.jsonl"), "--no-progress", "--rate", "500"]
        )
        assert result.exit_code == 0, result.output
        assert f"published {len(shop.items)} items and {len(shop.events)} events" in result.output
        assert "1 rejected lines" in result.output

        events = consume(
            kafka_bootstrap, prefix + "events", until=lambda rs: len(rs) >= 30, timeout_s=30
        )
        items = consume(
            kafka_bootstrap, prefix + "items", until=lambda rs: len(rs) >= 9, timeout_s=30
        )
        assert len(events) == len(shop.events) and len(items) == len(shop.items)
        assert {r.partition for r in events} <= {0, 1, 2}
        for record in events:
            assert json.loads(record.value)["user_id"].encode() == record.key
        sent = sorted(e.event_id for e in shop.events)
        assert sorted(json.loads(r.value)["event_id"] for r in events) == sent

        recs = [
            Recommendation(
                user_id=u,
                event_id=f"e-{u}",
                ts=1.0,
                emitted_at=2.0,
                cluster=ClusterInfo(id=3, similarity=0.5, previous=None),
                items=[RecommendedItem(item_id="p00001", score=0.9, source="content")],
                model_version=4,
                latency_ms=1.5,
            )
            for u in ("u1", "u2")
        ]
        produce(
            kafka_bootstrap,
            prefix + "recommendations",
            [(r.user_id.encode(), r.to_json_bytes()) for r in recs],
        )
        result = runner.invoke(app, ["tail", "--from-beginning", "--limit", "2", "--timeout", "30"])
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        shown = [Recommendation.model_validate_json(line) for line in lines]
        assert sorted(shown, key=lambda r: r.user_id) == recs  # partitions interleave
        result = runner.invoke(
            app, ["tail", "--from-beginning", "--user", "u2", "--limit", "1", "--pretty"]
        )
        assert result.exit_code == 0, result.output
        assert "u2  cluster 3  v4  1.5 ms  [p00001 0.90 content]" in result.stdout
    finally:
        delete_topics(kafka_bootstrap, [prefix])
