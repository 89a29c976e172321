"""``docs/benchmarks.md`` and its plots, from the JSON figures the benchmarks saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KAFKA_COLUMNS = [
    "workers", "items", "backlog events/s", "events per CPU s", "embedded engine events per CPU s",
    "worker CPU / engine CPU per event", "mean batch",
    "offered rate", "p50 ms", "p95 ms", "p99 ms", "max ms",
]  # fmt: skip
STAGE_NAMES = {
    "store_s": "window store",
    "encoder_s": "encoder",
    "interest_s": "interest + facets",
    "clustering_s": "clustering",
    "collaborative_s": "collaborative counts",
    "ranking_s": "ranking",
}


def _load(results: Path) -> dict[str, dict[str, Any]]:
    """The saved figures of ``make bench`` (other studies' JSON beside them are skipped)."""
    figures = {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json"))}
    return {name: data for name, data in figures.items() if "machine" in data}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _provenance(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (
        f"*{figures['date']}; `{figures['command']}`; {figures['wall_s']:.0f} s; "
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB{gpu}.*"
    )


def _goal(text: str, met: bool) -> str:
    return f"**Goal: {text} — {'met' if met else 'NOT met'}.**"


def clustering_section(figures: dict[str, Any], out: Path) -> str:
    rows = figures["rows"]
    streams = sorted({(r["dim"], r["noise"]) for r in rows}, key=lambda s: (-s[0], s[1]))
    parts = [
        "## 1. Clustering on drifting streams: driftrec vs River",
        _provenance(figures),
        "",
        f"{figures['stream_points']:,} points per stream, 20 clusters; halfway 4 centres rotate, "
        "4 clusters fade out, 4 appear. ARI of the online (prequential) labels on the first half "
        "and on the last quarter, and of the final model's labels on the last quarter. "
        "`points` < stream size: the method ran on every k-th point of the same stream (too "
        "slow for all of it). driftrec's defaults are set for 384-d text embeddings; in 32-d "
        "it also runs with `new_threshold=0.5, merge_threshold=0.8` (marked ★, the row scored "
        "for the goal there). River KMeans is given the true k = 20.",
    ]
    for dim, noise in streams:
        part = [r for r in rows if r["dim"] == dim and r["noise"] == noise]
        parts += [
            "",
            f"**{dim}-d, noise {noise}**",
            "",
            _table(
                ["method", "points", "points/s", "ARI first half", "ARI last quarter", "final"],
                [
                    [
                        r["method"] + (" ★" if r.get("recommended") and r["dim"] < 128 else ""),
                        f"{r['points']:,}",
                        f"{r['points_per_s']:,.0f}",
                        f"{r['ari_first_half']:.3f}",
                        f"{r['ari_last_quarter']:.3f}",
                        f"{r['ari_final_last_quarter']:.3f}",
                    ]
                    for r in part
                ],
            ),
        ]
    goal = figures["goal"]
    parts += [
        "",
        _goal(
            "≥ 100× River KMeans' throughput at 384-d with ARI ≥ River's best on every stream "
            f"(measured: {goal['min_speedup_vs_fastest_kmeans_384d']:,.0f}×, worst ARI "
            f"shortfall {goal['worst_ari_shortfall_vs_river_best']:+.3f})",
            goal["met"],
        ),
        "",
        "River's `DenStream` (0.26.1) computes a zero radius for data away from the origin "
        "(river issue #2004, fixed after that release); at 384-d it puts every point in one "
        "cluster (ARI 0). "
        "`DBSTREAM` renumbers clusters when it reclusters: compare its `final` column.",
        "",
        "![clustering](benchmarks/clustering.png)",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(streams)
    for j, (dim, noise) in enumerate(streams):
        part = {r["method"]: r for r in rows if r["dim"] == dim and r["noise"] == noise}
        xs = [i + j * width for i in range(len(methods))]
        axes[0].bar(
            xs,
            [part[m]["ari_last_quarter"] if m in part else 0.0 for m in methods],
            width,
            label=f"{dim}-d σ={noise}",
        )
        axes[1].bar(
            xs,
            [part[m]["points_per_s"] if m in part else 0.0 for m in methods],
            width,
            label=f"{dim}-d σ={noise}",
        )
    for ax, title in zip(
        axes, ("ARI on the last quarter (after drift)", "points/s (log)"), strict=True
    ):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(methods))])
        ax.set_xticklabels(
            [m.replace("River ", "") for m in methods], rotation=35, ha="right", fontsize=7
        )
        ax.set_title(title)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "clustering.png", dpi=110)
    plt.close(fig)
    return "\n".join(parts)


def encoder_section(figures: dict[str, Any], out: Path, stem: str) -> str:
    rows = figures["rows"]
    parts = [
        f"## 2. Encoder: driftrec vs a plain transformers loop ({figures['device']})",
        _provenance(figures),
        "",
        "all-MiniLM-L6-v2, same device, precision, batch and token limit; torch threads "
        f"{figures['torch_threads']}. `ratio` = driftrec speed / reference speed; `max |Δ|` = "
        "largest difference between the two encoders' vectors.",
        "",
        _table(
            [
                "texts",
                "batch",
                "precision",
                "driftrec texts/s",
                "plain transformers texts/s",
                "ratio",
                "max abs diff",
            ],
            [
                [
                    f"{r['workload']} ×{r['texts']:,}",
                    str(r["batch"]),
                    r["dtype"],
                    f"{r['driftrec_per_s']:,.0f}",
                    f"{r['reference_per_s']:,.0f}",
                    f"{r['ratio']:.2f}",
                    f"{r['max_abs_diff']:.1e}",
                ]
                for r in rows
            ],
        ),
        "",
        _goal(
            "within 10% of the reference or faster "
            f"(worst ratio {figures['goal']['worst_ratio']:.2f})",
            figures["goal"]["met"],
        ),
        "",
        f"![encoder](benchmarks/{stem}.png)",
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for workload in dict.fromkeys(r["workload"] for r in rows):
        part = [r for r in rows if r["workload"] == workload]
        (line,) = ax.plot(
            [r["batch"] for r in part],
            [r["driftrec_per_s"] for r in part],
            "o-",
            label=f"driftrec, {workload}",
        )
        ax.plot(
            [r["batch"] for r in part],
            [r["reference_per_s"] for r in part],
            "x--",
            color=line.get_color(),
            label=f"plain, {workload}",
        )
    ax.set_xlabel("batch size")
    ax.set_ylabel("texts/s")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)
    return "\n".join(parts)


def engine_section(figures: dict[str, Any], out: Path, stem: str) -> str:
    rows = figures["rows"]
    stages = list(STAGE_NAMES)
    parts = [
        f"## 3. Engine, embedded ({figures['device']})",
        _provenance(figures),
        "",
        f"Replay of `{rows[0]['dataset']}` through `Engine.process` in batches of "
        f"{rows[0]['batch']}, MiniLM, windows in RocksDB. Time per event by stage in µs; "
        "`other` is batching, recommendation objects and the loop. Peak RSS includes torch "
        "and the model (the RSS before the replay is given beside it). The engine's work is "
        "per *user* in a batch (window, interest, facets, ranking over the catalogue), so "
        "events/s depends on how many distinct users a batch holds: MovieLens replays "
        "a user's ratings in bursts, a live shop interleaves users (see section 4).",
        "",
        _table(
            ["configuration", "events", "items", "users/batch", "events/s"]
            + [STAGE_NAMES[s] for s in stages]
            + ["other", "RSS before / peak MiB"],
            [
                [
                    r["config"],
                    f"{r['events']:,}",
                    f"{r['items']:,}",
                    f"{r['users_per_batch']:.0f}",
                    f"{r['events_per_s']:,.0f}",
                    *[f"{r['breakdown_s'][s] / r['events'] * 1e6:,.0f}" for s in stages],
                    f"{r['other_s'] / r['events'] * 1e6:,.0f}",
                    f"{r['rss_before_replay_mib']:,.0f} / {r['peak_rss_mib']:,.0f}",
                ]
                for r in rows
            ],
        ),
        "",
        "Events/s per tenth of the whole-stream replay (flat = cost per event does not grow "
        "with the events seen): "
        + ", ".join(f"{v:,.0f}" for v in rows[0]["events_per_s_by_tenth"])
        + ".",
        "",
        f"Catalogue encoding before the replay: {rows[0]['catalogue_encode_s']:.1f} s for "
        f"{rows[0]['native_items']:,} items.",
        "",
        _goal(
            "≥ 5,000 events/s in pooled mode "
            f"(measured {figures['goal']['pooled_events_per_s']:,.0f})",
            figures["goal"]["met"],
        ),
        "",
        f"![engine](benchmarks/{stem}.png)",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    scaled = [r for r in rows if "catalogue" in r["config"]]
    axes[0].plot(
        [r["items"] for r in scaled], [1e6 / r["events_per_s"] for r in scaled], "o-", label="total"
    )
    axes[0].plot(
        [r["items"] for r in scaled],
        [r["breakdown_s"]["ranking_s"] / r["events"] * 1e6 for r in scaled],
        "s--",
        label="ranking",
    )
    axes[0].set_xscale("log")
    axes[0].set_xlabel("catalogue items")
    axes[0].set_ylabel("µs per event")
    axes[0].set_title("cost per event vs catalogue size")
    axes[0].legend()
    tenths = rows[0]["events_per_s_by_tenth"]
    axes[1].plot(range(1, len(tenths) + 1), tenths, "o-")
    axes[1].set_ylim(0, max(tenths) * 1.2 if tenths else 1)
    axes[1].set_xlabel("tenth of the stream")
    axes[1].set_ylabel("events/s")
    axes[1].set_title("throughput along the replay (pooled)")
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)
    return "\n".join(parts)


SCALE_STAGES = {
    "store_s": "store",
    "interest_s": "interest",
    "clustering_s": "clusters",
    "collaborative_s": "counts",
    "index_s": "index sync",
    "ranking_s": "ranking",
}


def scale_section(figures: dict[str, Any], out: Path) -> str:
    rows = figures["rows"]
    exact = {r["items"]: r for r in rows if r["ranking"] == "exact"}
    checks = figures["checks"]
    parts = [
        "## 3b. Catalogue scale: two-stage against exact ranking",
        _provenance(figures),
        "",
        "The embedded engine through its public API with default settings, 384-d item vectors "
        "derived from real MiniLM vectors (`benchmarks/catalogue_vectors.py`), windows in "
        "RocksDB, batches of 256. *Live shop*: a batch holds about 250 different shoppers; "
        "*bursty replay*: each shopper's session arrives in one run, as in a MovieLens replay. "
        "The first half of each stream warms windows and counts; the second is timed. "
        "Exact ranking is the baseline in the same run (on 1,024 events at 10^5 items, where "
        "it is slow; not at 10^6, where one `[256, n]` float64 signal matrix is 2 GB). "
        "µs per event by stage; `other` is recommendation objects and the loop. Peak RSS "
        "includes torch, the model and the derivation of the vectors. `load`: the machine's "
        "1-minute load average at the end of the timed part (on 2 cores, above ~1 means "
        "other processes took CPU too; the ratios against exact hold, absolute events/s "
        "do not).",
        "",
        _table(
            [
                "items",
                "ranking",
                "stream",
                "users/batch",
                "candidates/user",
                "events/s",
                "× exact",
                *SCALE_STAGES.values(),
                "other",
                "index build s",
                "peak RSS MiB",
            ],
            [
                [
                    f"{r['items']:,}",
                    r["ranking"],
                    r["stream"],
                    f"{r['users_per_batch']:.0f}",
                    f"{r['candidates_per_user']:,.0f}",
                    f"{r['events_per_s']:,.0f}",
                    (
                        f"{r['events_per_s'] / exact[r['items']]['events_per_s']:.1f}"
                        if r["items"] in exact and r["stream"] == "live shop"
                        else "–"
                    ),
                    *[f"{r['breakdown_us_per_event'][s]:,.0f}" for s in SCALE_STAGES],
                    f"{r['other_us_per_event']:,.0f}",
                    f"{r['index_build_s']:.1f}",
                    f"{r['peak_rss_mib']:,.0f}",
                    f"{r['load_avg']:.1f}" if "load_avg" in r else "–",
                ]
                for r in rows
            ],
        ),
        "",
        _goal(
            "≥ 3,000 events/s on the live shop at every size (two-stage)",
            checks["events_per_s_at_least_3000"],
        ),
        _goal(
            "the largest catalogue ≥ 50 % of the smallest's events/s",
            checks["largest_at_least_half_of_smallest"],
        ),
        _goal("peak RSS ≤ 4 GiB at the largest catalogue", checks["peak_rss_at_most_4_gib"]),
        "",
        "![scale](benchmarks/scale.png)",
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for ranking, stream, style in (
        ("two-stage", "live shop", "o-"),
        ("two-stage", "bursty replay", "s--"),
        ("exact", "live shop", "x-"),
    ):
        chosen = sorted(
            (r for r in rows if r["ranking"] == ranking and r["stream"] == stream),
            key=lambda r: r["items"],
        )
        if chosen:
            ax.plot(
                [r["items"] for r in chosen],
                [r["events_per_s"] for r in chosen],
                style,
                label=f"{ranking}, {stream}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalogue items")
    ax.set_ylabel("events/s")
    ax.set_title("embedded engine: events/s against catalogue size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)
    plt.close(fig)
    return "\n".join(parts)


def kafka_section(figures: dict[str, Any]) -> str:
    rows = figures["rows"]
    goal = figures["goal"]
    return "\n".join(
        [
            "## 4. Through Kafka",
            _provenance(figures),
            "",
            "`driftrec worker` subprocesses (pooled, MiniLM, 8 partitions) on the local "
            "single-node broker: the synthetic shop (480 items, encoded by the items agent), "
            "and a 10^5-item catalogue published as MiniLM-derived item vectors with a "
            "live-shop stream (two-stage ranking). Throughput: a backlog published at once, "
            "first to last recommendation received. Latency: from just before each event's "
            "send to its recommendation's arrival at a consumer, at fixed offered rates "
            "(20 s each). The mean batch mixes the backlog and the paced phases. "
            "The embedded engine columns: the same backlog replayed through the embedded "
            "engine in a fresh process (same settings and catalogue, batches of the worker's "
            "mean batch), so the last ratio is what the Kafka path adds per event, measured "
            "in one run. "
            "All processes (broker, workers, load generator) share the same cores: where "
            "there are fewer than two cores per worker, the two-worker rows measure CPU "
            "contention as much as scale-out (read them as a lower bound).",
            "",
            _table(
                KAFKA_COLUMNS,
                [
                    [
                        *(
                            [
                                str(r["workers"]),
                                f"{r.get('items', 480):,}",
                                f"{r['events_per_s']:,.0f}",
                                f"{r['events_per_cpu_s']:,.0f}",
                                f"{r['engine_events_per_cpu_s']:,.0f}"
                                if "engine_events_per_cpu_s" in r
                                else "-",
                                f"{r['kafka_overhead']:.2f}" if "kafka_overhead" in r else "-",
                                f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-",
                            ]
                            if i == 0
                            else ["", "", "", "", "", "", ""]
                        ),
                        f"{lat['rate']:,.0f}/s",
                        f"{lat['p50']:.1f}",
                        f"{lat['p95']:.1f}",
                        f"{lat['p99']:.1f}",
                        f"{lat['max']:.1f}",
                    ]
                    for r in rows
                    for i, lat in enumerate(r["latency"])
                ],
            ),
            "",
            _goal(
                "≥ 2,000 events/s per worker and p99 ≤ 100 ms at 500 events/s "
                f"(measured {goal['events_per_s_one_worker']:,.0f} events/s, "
                f"p99 {goal['p99_ms_at_rate']:.0f} ms at {goal['rate']:,.0f}/s)",
                goal["met"],
            ),
            *(
                [
                    "",
                    "Where one worker's CPU goes draining the demo shop's backlog (py-spy, "
                    "200 samples/s, every thread; flame graph: "
                    "[kafka-worker-flame.svg](benchmarks/kafka-worker-flame.svg)):",
                    "",
                    _table(
                        ["part of the worker", "share of its CPU"],
                        [[group, f"{100 * share:.1f} %"] for group, share in figures["profile"]],
                    ),
                ]
                if figures.get("profile")
                else []
            ),
            *(
                [
                    "",
                    _goal(
                        "one worker's CPU per event ≤ 1.3 × the embedded engine's on the same "
                        "events, and ≥ 5,000 events per worker CPU second (measured "
                        f"{figures['overhead_goal']['ratio']:.2f} ×, "
                        f"{figures['overhead_goal']['events_per_cpu_s']:,.0f} events per CPU s)",
                        figures["overhead_goal"]["met"],
                    ),
                ]
                if "overhead_goal" in figures
                else []
            ),
        ]
    )


def startup_section(figures: dict[str, Any]) -> str:
    checks = figures["checks"]
    return "\n".join(
        [
            "## 4b. Worker start-up with a big catalogue",
            _provenance(figures),
            "",
            f"{figures['items']:,} item-vectors records (MiniLM-derived vectors, "
            f"published in {figures['publish_s']:.0f} s) on the local broker; one `driftrec "
            "worker` with default settings (two-stage ranking by catalogue size). Seconds from "
            "the process start to ready (`/state`), on an empty data directory, then after a "
            "clean stop on the same one (the catalogue checkpoint and the vector index "
            "adopted; only the topic's tail read).",
            "",
            _table(
                ["start", "seconds to ready", "index", "index ready s", "indexed items"],
                [
                    [
                        r["start"],
                        f"{r['seconds_to_ready']:.0f}",
                        str(r["index_origin"]),
                        f"{r['index_ready_s'] or 0:.1f}",
                        f"{r['index_items'] or 0:,}",
                    ]
                    for r in figures["rows"]
                ],
            ),
            "",
            _goal(
                "ready within 5 minutes on an empty data directory", checks["ready_within_5_min"]
            ),
            _goal(
                "ready within 1 minute on restart, the index restored",
                checks["restart_within_1_min"] and checks["index_restored_on_restart"],
            ),
        ]
    )


def write(results: Path, markdown: Path) -> None:
    """Regenerate ``markdown`` and the plots in ``results`` from the saved figures."""
    figures = _load(results)
    if not figures:
        raise FileNotFoundError(f"no benchmark results in {results}; run `make bench` first")
    machine = next(iter(figures.values()))["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    sections = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks run`) from the JSON figures in "
        "`docs/benchmarks/`; do not edit by hand. Each section names its command, date and "
        "machine. Benchmarks print and record figures; they are not tests (a smoke test runs "
        "each at a tiny size in `make test`).",
        "",
        f"Software: Python {machine['python']}, {packages}, Apache Kafka {machine['kafka']}, "
        f"{machine['java']}.",
    ]
    if "clustering" in figures:
        sections += ["", clustering_section(figures["clustering"], results)]
    for stem in [s for s in figures if s.startswith("encoder")]:
        sections += ["", encoder_section(figures[stem], results, stem)]
    for stem in [s for s in figures if s.startswith("engine")]:
        sections += ["", engine_section(figures[stem], results, stem)]
    if "scale" in figures:
        sections += ["", scale_section(figures["scale"], results)]
    if "kafka" in figures:
        sections += ["", kafka_section(figures["kafka"])]
    if "startup" in figures:
        sections += ["", startup_section(figures["startup"])]
    if not any(s.endswith("-gpu") for s in figures):
        sections += [
            "",
            "## 5. GPU",
            "",
            "Not measured yet: no CUDA machine was available where these figures were made. "
            "`deploy/gpu/bench.sh` runs the encoder and engine benchmarks in bf16 on a CUDA "
            "machine and adds their sections here (`encoder-gpu`, `engine-gpu`).",
        ]
    markdown.write_text("\n".join(sections) + "\n")
