"""``driftrec demo``: the main job on its embedded default.

Generates a synthetic shop whose customers' interests drift at known times
(:mod:`models.synthetic_shop`), streams it through the engine in event-time
order, and reports what happened: clusters born and retired, users moving
between clusters, sample recommendation lists with their sources, and how
well the recommendations the users were shown predicted what they did next,
before and after their drift. Plots and a Markdown report go to ``out_dir``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import adjusted_rand_score

from models.contracts import BehaviourEvent, Recommendation
from models.engine import Engine
from models.settings import EngineSettings
from models.synthetic_shop import SyntheticShop, synthetic_shop
from streams.console import ConsoleFeed, serve_console
from streams.embedded import run_stream

__all__ = ["DemoReport", "run_demo"]


@dataclass
class DemoReport:
    """What the demo measured (also written to ``report.json``)."""

    events: int = 0
    recommendations: int = 0
    wall_s: float = 0.0
    hits_before_drift: list[int] = field(default_factory=list)
    hits_after_drift: list[int] = field(default_factory=list)
    hit_series: list[tuple[float, int]] = field(default_factory=list)
    clusters_born: int = 0
    clusters_retired: int = 0
    clusters_merged: int = 0
    cluster_moves: int = 0
    final_clusters: int = 0
    ari_users_topics: float = 0.0
    source_counts: Counter = field(default_factory=Counter)
    size_series: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    samples: dict[str, Recommendation] = field(default_factory=dict)
    start_ts: float = 0.0
    drift_band: tuple[float, float] | None = None  #: 10th–90th percentile of drift times
    labels: dict[int, str] = field(default_factory=dict)  #: cluster labels (latest seen)
    interest_moves: int = 0  #: confirmed moves reported on interest-events
    #: Drifting users whose move interest-events reported within 20 of their events after
    #: the drift, and how many users drifted.
    drift_reported: int = 0
    drifting_users: int = 0
    #: Topics whose name is in the label of the cluster holding most of their users.
    topics_named: list[str] = field(default_factory=list)
    topics_followed: int = 0

    @staticmethod
    def rate(hits: list[int]) -> float:
        return float(np.mean(hits)) if hits else 0.0


def run_demo(
    settings: EngineSettings,
    out_dir: Path,
    *,
    n_users: int = 300,
    events_per_user: int = 60,
    items_per_topic: int = 40,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    console: Console | None = None,
    serve_port: int | None = None,
    pace_s: float = 0.0,
) -> DemoReport:
    """Run the demo end to end and write its report; returns the figures.

    With ``serve_port`` the live console (streams/console.py) is served while the
    stream runs (``pace_s`` seconds between batches, to watch it) and afterwards
    until interrupted."""
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = out_dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = settings.model_copy(update={"data_dir": data_dir})

    shop = synthetic_shop(
        n_users=n_users,
        events_per_user=events_per_user,
        items_per_topic=items_per_topic,
        seed=seed,
        event_weights=settings.event_weights,
        # 90 days: long enough after the drift (~day 27) for faded interests' clusters
        # to decay below the retirement weight at the default 3-day half-life.
        span_s=90 * 86_400.0,
        drift_at=0.3,
    )
    console.print(
        f"[bold]driftrec demo[/bold]: {len(shop.items)} items in "
        f"{len(set(shop.item_topic.values()))} topics, {n_users} users, "
        f"{len(shop.events)} events, {len(shop.drift_ts)} users drift at known times"
    )
    started = time.perf_counter()
    engine = Engine.build(settings)
    feed = None
    try:
        engine.upsert_items(shop.items)
        if serve_port is not None:
            feed = ConsoleFeed(engine)
            server = serve_console(feed, port=serve_port)
            console.print(f"live console: http://127.0.0.1:{server.server_address[1]}/console")
        report = _stream(
            engine,
            shop,
            batch_size=batch_size,
            progress=progress,
            out_dir=out_dir,
            feed=feed,
            pace_s=pace_s,
        )
        if feed is not None:
            _print(console, report, shop)
            console.print("console still served; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        engine.close()
    report.wall_s = time.perf_counter() - started
    _print(console, report, shop)
    _write(out_dir, report)
    console.print(f"report, plots and sample recommendations written to [bold]{out_dir}[/bold]")
    return report


def _stream(
    engine: Engine,
    shop: SyntheticShop,
    *,
    batch_size: int,
    progress: bool,
    out_dir: Path,
    feed: ConsoleFeed | None = None,
    pace_s: float = 0.0,
) -> DemoReport:
    report = DemoReport(start_ts=shop.events[0].ts if shop.events else 0.0)
    if shop.drift_ts:
        times = [t for t, _, _ in shop.drift_ts.values()]
        report.drift_band = (float(np.percentile(times, 10)), float(np.percentile(times, 90)))
    shown: dict[str, set[str]] = {}
    user_cluster: dict[str, int | None] = {}
    user_topic: dict[str, str] = {}
    topic_of_event = {id(e): t for e, t in zip(shop.events, shop.event_topic, strict=True)}
    samples = _SampleCollector(shop)
    # The event time of each drifting user's 20th event after the drift: a move reported
    # by then counts as the drift caught (issue 15's check).
    after_drift: dict[str, list[float]] = {}
    for event in shop.events:
        drift = shop.drift_ts.get(event.user_id)
        if drift is not None and event.ts >= drift[0]:
            after_drift.setdefault(event.user_id, []).append(event.ts)
    deadline = {u: ts[min(19, len(ts) - 1)] for u, ts in after_drift.items()}
    caught: set[str] = set()
    report.drifting_users = len(deadline)
    sample_every = max(1, len(shop.events) // 40)

    def on_batch(batch: list[BehaviourEvent], recs: list[Recommendation]) -> None:
        interest = engine.pop_interest_events()
        report.interest_moves += sum(e.kind == "moved" for e in interest)
        for move in interest:
            user = move.user_id or ""
            in_time = user in deadline and shop.drift_ts[user][0] <= move.ts <= deadline[user]
            if move.kind == "moved" and in_time:
                caught.add(user)
        report.drift_reported = len(caught)
        if feed is not None:
            feed.observe(recs, interest, n_events=len(batch))
            time.sleep(pace_s)
        for event in batch:
            previous = shown.get(event.user_id)
            if previous is not None:
                hit = int(event.item_id in previous)
                drift = shop.drift_ts.get(event.user_id)
                after = drift is not None and event.ts >= drift[0]
                (report.hits_after_drift if after else report.hits_before_drift).append(hit)
                report.hit_series.append((event.ts, hit))
            user_topic[event.user_id] = topic_of_event[id(event)]
        for rec in recs:
            shown[rec.user_id] = {i.item_id for i in rec.items}
            report.source_counts.update(i.source for i in rec.items)
            if (
                rec.cluster.previous is not None
                and rec.cluster.id is not None
                and rec.cluster.previous != rec.cluster.id
            ):
                report.cluster_moves += 1
            user_cluster[rec.user_id] = rec.cluster.id
            if rec.cluster.id is not None and rec.cluster.label:
                report.labels[rec.cluster.id] = rec.cluster.label
            samples.offer(rec)
        report.events += len(batch)
        report.recommendations += len(recs)
        if report.events // sample_every != (report.events - len(batch)) // sample_every:
            sizes = Counter(c for c in user_cluster.values() if c is not None)
            report.size_series.append((batch[-1].ts, dict(sizes)))

    run_stream(
        engine,
        shop.events,
        batch_size=batch_size,
        on_batch=on_batch,
        progress=progress,
        description="demo",
    )
    report.labels.update(engine.cluster_labels())
    kinds = Counter(e.kind for e in engine.cluster_events)
    report.clusters_born = kinds["born"]
    report.clusters_retired = kinds["retired"]
    report.clusters_merged = kinds["merged"]
    report.final_clusters = int(getattr(engine.clusterer, "n_clusters", 0) or 0)
    users = [u for u in user_cluster if user_cluster[u] is not None]
    if users:
        report.ari_users_topics = float(
            adjusted_rand_score([user_topic[u] for u in users], [user_cluster[u] for u in users])
        )
    holders: dict[str, Counter] = {}
    for u in users:
        holders.setdefault(user_topic[u], Counter())[user_cluster[u]] += 1
    report.topics_followed = len(holders)
    report.topics_named = sorted(
        topic
        for topic, clusters in holders.items()
        if topic in report.labels.get(clusters.most_common(1)[0][0], "")
    )
    samples.write(out_dir / "sample-recommendations.jsonl")
    report.samples = samples.picked
    return report


class _SampleCollector:
    """Keeps one drifting user's last recommendation before and after the drift.

    The user is a drifter with a single topic before the drift (so the change
    is easy to read), the one with the median drift time among them.
    """

    def __init__(self, shop: SyntheticShop) -> None:
        self.shop = shop
        topics_before: dict[str, set[str]] = {}
        for event, topic in zip(shop.events, shop.event_topic, strict=True):
            drift = shop.drift_ts.get(event.user_id)
            if drift is not None and event.ts < drift[0]:
                topics_before.setdefault(event.user_id, set()).add(topic)
        single = [u for u, topics in topics_before.items() if len(topics) == 1]
        drifters = sorted(single or list(shop.drift_ts), key=lambda u: shop.drift_ts[u][0])
        self.user = drifters[len(drifters) // 2] if drifters else None
        self.picked: dict[str, Recommendation] = {}

    def offer(self, rec: Recommendation) -> None:
        if rec.user_id != self.user:
            return
        drift_time = self.shop.drift_ts[self.user][0]
        if rec.ts < drift_time:
            self.picked["before drift"] = rec
        else:
            self.picked["after drift"] = rec

    def write(self, path: Path) -> None:
        with open(path, "wb") as f:
            for rec in self.picked.values():
                f.write(rec.to_json_bytes() + b"\n")


def _print(console: Console, report: DemoReport, shop: SyntheticShop) -> None:
    table = Table(title="what happened")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("events processed", f"{report.events:,}")
    table.add_row("recommendations emitted", f"{report.recommendations:,}")
    table.add_row(
        "throughput", f"{report.events / max(report.wall_s, 1e-9):,.0f} events/s (incl. setup)"
    )
    table.add_row(
        "clusters born / retired / merged",
        f"{report.clusters_born} / {report.clusters_retired} / {report.clusters_merged}",
    )
    table.add_row("clusters alive at the end", str(report.final_clusters))
    table.add_row(
        "topics named by their cluster's label",
        f"{len(report.topics_named)} of {report.topics_followed}",
    )
    for cluster, label in sorted(report.labels.items())[:12]:
        table.add_row(f"  cluster {cluster}", label)
    table.add_row("users moving between clusters", f"{report.cluster_moves:,} moves")
    table.add_row("confirmed moves (interest-events)", f"{report.interest_moves:,}")
    table.add_row(
        "drifting users reported within 20 events",
        f"{report.drift_reported} of {report.drifting_users}",
    )
    table.add_row("ARI (user cluster vs current topic)", f"{report.ari_users_topics:.3f}")
    table.add_row(
        "HR@10 of shown lists, before drift", f"{report.rate(report.hits_before_drift):.3f}"
    )
    table.add_row(
        "HR@10 of shown lists, after drift", f"{report.rate(report.hits_after_drift):.3f}"
    )
    total = sum(report.source_counts.values()) or 1
    table.add_row(
        "items by source",
        ", ".join(f"{s} {100 * n / total:.0f}%" for s, n in report.source_counts.most_common()),
    )
    console.print(table)
    picked = report.samples
    if picked:
        user = next(iter(picked.values())).user_id
        _, old, new = shop.drift_ts[user]
        console.print(f"\n[bold]{user}[/bold] drifts from [cyan]{old}[/cyan] to [cyan]{new}[/cyan]")
        titles = {i.item_id: i.title for i in shop.items}
        for label, rec in picked.items():
            console.print(
                f"  {label} (cluster {rec.cluster.id} [dim]{rec.cluster.label or ''}[/dim], "
                f"previous {rec.cluster.previous}):"
            )
            for item in rec.items[:5]:
                because = (
                    f"  [dim]because of {titles.get(item.because[0], item.because[0])}[/dim]"
                    if item.because
                    else ""
                )
                console.print(
                    f"    {item.score:6.3f}  {item.source:<20} "
                    f"{titles.get(item.item_id, item.item_id)}"
                    f"  [dim]({shop.item_topic.get(item.item_id, '?')})[/dim]{because}"
                )


def _write(out_dir: Path, report: DemoReport) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def days(t: float) -> float:
        return (t - report.start_ts) / 86_400

    def mark_drift(ax) -> None:
        if report.drift_band is not None:
            lo, hi = report.drift_band
            ax.axvspan(days(lo), days(hi), color="grey", alpha=0.15, label="most users drift")

    if report.size_series:
        xs = [days(t) for t, _ in report.size_series]
        ids = sorted({c for _, sizes in report.size_series for c in sizes})
        ys = np.array([[sizes.get(c, 0) for _, sizes in report.size_series] for c in ids])
        fig, ax = plt.subplots(figsize=(10, 4.5))
        if len(ids):
            colours = plt.get_cmap("tab20")(np.arange(len(ids)) % 20)
            names = [f"{c}: {report.labels.get(c, '')}"[:40] for c in ids]
            ax.stackplot(xs, ys, labels=names, colors=colours)
        mark_drift(ax)
        ax.set_xlabel("event time (days)")
        ax.set_ylabel("users in cluster")
        ax.set_title("Interest clusters over time")
        if len(ids) <= 40:
            ax.legend(
                loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=1 + len(ids) // 20
            )
        fig.tight_layout()
        fig.savefig(out_dir / "cluster-sizes.png", dpi=110)
        plt.close(fig)
    if report.hit_series:
        ts = np.array([t for t, _ in report.hit_series])
        hits = np.array([h for _, h in report.hit_series], float)
        window = max(50, len(hits) // 40)
        rolling = np.convolve(hits, np.ones(window) / window, mode="valid")
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.plot([days(t) for t in ts[window - 1 :]], rolling, label="HR@10")
        mark_drift(ax)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("event time (days)")
        ax.set_ylabel(f"HR@10 (rolling {window} events)")
        ax.set_title("Did users consume what they were shown next?")
        fig.tight_layout()
        fig.savefig(out_dir / "hit-rate.png", dpi=110)
        plt.close(fig)
    summary = {
        "events": report.events,
        "recommendations": report.recommendations,
        "wall_s": round(report.wall_s, 2),
        "hr10_before_drift": round(report.rate(report.hits_before_drift), 4),
        "hr10_after_drift": round(report.rate(report.hits_after_drift), 4),
        "clusters_born": report.clusters_born,
        "clusters_retired": report.clusters_retired,
        "clusters_merged": report.clusters_merged,
        "final_clusters": report.final_clusters,
        "cluster_moves": report.cluster_moves,
        "ari_users_topics": round(report.ari_users_topics, 4),
        "sources": dict(report.source_counts),
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# driftrec demo report", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    lines += ["", "![clusters](cluster-sizes.png)", "", "![hit rate](hit-rate.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
