"""Which interest adapter: prequential next-item study of ``models.interest_adapter`` designs.

Why: the engine's interest space is frozen MiniLM, where every MovieLens user
lands in one cluster and the content signal is nearly useless (issue 12). This
study measures, on the real streams, what each adapter design does to the
signal the engine blends — ``cos(interest, item)`` — and to the clusters.

Protocol: events in event-time order, in batches of 256. For every scored
event (``scored_mask``: the user was seen before) the catalogue is scored
for its user with the adapter *as it stands* at the start of the batch and
the user's window *as of just before the event* (last 50 events; consumed
items excluded; tie rule: lower catalogue row), HR@10 / NDCG@10 of the true
next item recorded; *then* the adapter learns the batch's (window before →
next item) pairs as one mini-batch. So no score sees its own event or a
later one; the weights lag ≤ 255 events, as a trainer publishing weights to
workers would.

Per design: the adapter's own query (``model``); the engine's content signal
alone (``content``: recency/position/rating-weighted pooling of unit adapted
item vectors, as in ``models.interest.pooled_interest``, cosine with every
adapted item); for linear designs the same content query answered over the
*frozen* vectors with ``Wᵀq`` — for residual designs over ``[x_j, e_j]`` with
``[Wᵀq, q]`` (``index``: what an inner-product vector index whose frozen part
is never re-encoded would rank; ``index+rerank``: its 320 best re-ranked by
the cosine, the engine's two-stage shape); CPU µs per learned / scored
event (one thread); and at the end the users' content vectors clustered by
``DecayingCentroids()`` with its default threshold (clusters, silhouette on a
sample of 2,000 users, cosine).

``python -m benchmarks.adapter_study --dataset ml-latest-small --limit-events 20000``
adds its rows to ``docs/benchmarks/adapter-study.json`` and rewrites the
``.md`` from it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from tqdm import tqdm

from benchmarks.catalogue_vectors import real_item_vectors
from models.clustering import DecayingCentroids
from models.datasets import load_dataset
from models.evaluation.protocols import scored_mask
from models.interest import interest_weights, pooled_interest
from models.interest_adapter import InterestAdapter
from models.record_parser import EventParser
from models.settings import EngineSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "bench"
OUT = ROOT / "docs" / "benchmarks" / "adapter-study"
K = 10
WINDOW = 50
BATCH = 256
CANDIDATES = 320  # the engine's default candidate budget
SETTINGS = EngineSettings()

DESIGNS: dict[str, Callable[[int], InterestAdapter]] = {
    "frozen": lambda seed: InterestAdapter(dim=None, residual=False, seed=seed),
    "linear-384": lambda seed: InterestAdapter(dim=384, residual=False, seed=seed),
    "linear-128": lambda seed: InterestAdapter(dim=128, residual=False, seed=seed),
    "linear-64": lambda seed: InterestAdapter(dim=64, residual=False, seed=seed),
    "linear-128+residual": lambda seed: InterestAdapter(dim=128, residual=True, seed=seed),
    "linear-128-dot": lambda seed: InterestAdapter(
        dim=128, residual=False, cosine=False, seed=seed
    ),
    "linear-128+residual-dot": lambda seed: InterestAdapter(
        dim=128, residual=True, cosine=False, seed=seed
    ),
    "gru-128+residual": lambda seed: InterestAdapter(
        dim=128, residual=True, sequence="gru", seed=seed
    ),
}

app = typer.Typer(add_completion=False, help=__doc__)


@dataclass
class Stream:
    """A dataset as arrays: catalogue rows, users, times and weights of events in time order."""

    name: str
    vectors: np.ndarray  # [n_items, 384] frozen unit vectors
    item: np.ndarray
    user: np.ndarray
    ts: np.ndarray
    weight: np.ndarray
    scored: np.ndarray


def load_stream(name: str, limit: int | None, every: int) -> Stream:
    settings = EngineSettings()
    path = DATA / name
    dataset = load_dataset(path, EventParser.from_settings(settings), limit=limit)
    vectors = real_item_vectors(cache=CACHE / f"minilm-{name}.npy", data=path)
    rows = {item.item_id: r for r, item in enumerate(dataset.items)}
    events = [e for e in dataset.events if e.item_id in rows]
    users: dict[str, int] = {}
    scored = scored_mask(events, every)
    return Stream(
        name=name,
        vectors=vectors,
        item=np.array([rows[e.item_id] for e in events], np.int64),
        user=np.array([users.setdefault(e.user_id, len(users)) for e in events], np.int64),
        ts=np.array([e.ts for e in events], np.float64),
        weight=np.array([e.weight for e in events], np.float64),
        scored=scored,
    )


def _ranks(scores: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray]) -> np.ndarray:
    """Rank of each target (0 = first) under the tie rule; -1 if the target is excluded."""
    rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
    if len(rows):
        scores[rows, np.concatenate(exclude)] = -np.inf
    s = scores[np.arange(len(targets)), targets][:, None]
    index = np.arange(scores.shape[1])[None, :]
    ranks = (scores > s).sum(axis=1) + ((scores == s) & (index < targets[:, None])).sum(axis=1)
    return np.where(s[:, 0] == -np.inf, -1, ranks)


def _reranked(index: np.ndarray, content: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Two-stage ranks: ``CANDIDATES`` best by the frozen index, re-ranked by the cosine.

    Both matrices already hold -inf at excluded items (``_ranks`` set them).
    """
    top = np.argpartition(-index, CANDIDATES, axis=1)[:, :CANDIDATES]
    rows = np.arange(len(targets))
    found = (top == targets[:, None]).any(axis=1) & (index[rows, targets] > -np.inf)
    better = (content[rows[:, None], top] > content[rows, targets][:, None]).sum(axis=1)
    return np.where(found, better, -1)


def _metrics(ranks: np.ndarray) -> dict[str, float]:
    hit = (ranks >= 0) & (ranks < K)
    ndcg = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    return {"hr": float(hit.mean()), "ndcg": float(ndcg.mean())}


def _content_queries(
    z: np.ndarray, windows: list[list[int]], ts: list[list[float]], w: list[list[float]]
) -> np.ndarray:
    """The engine's pooled interest (``models.interest``) over adapted unit item vectors."""
    out = np.zeros((len(windows), z.shape[1]), np.float32)
    for b, rows in enumerate(windows):
        if rows:
            a = interest_weights(
                np.array(ts[b]),
                np.array(w[b]),
                half_life_s=SETTINGS.interest_half_life_s,
                position_decay=SETTINGS.interest_position_decay,
            )
            out[b] = pooled_interest(z[rows], a)
    return out


def _clusters(points: np.ndarray, seed: int) -> dict[str, Any]:
    from sklearn.metrics import silhouette_score

    points = points[np.linalg.norm(points, axis=1) > 0]
    model = DecayingCentroids()
    model.learn_many(points, t=0.0)
    labels = model.predict_many(points)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(points), size=min(2000, len(points)), replace=False)
    n_labels = len(set(labels[sample].tolist()))
    silhouette = (
        float(silhouette_score(points[sample], labels[sample], metric="cosine"))
        if 1 < n_labels < len(sample)
        else None
    )
    sims = points[sample[:500]] @ points[sample[:500]].T
    return {
        "clusters": int(model.n_clusters),
        "largest_share": float(np.bincount(labels).max() / len(labels)),
        "silhouette": silhouette,
        "mean_user_cosine": float(sims[np.triu_indices(len(sims), 1)].mean()),
    }


def run_design(stream: Stream, design: str, seed: int) -> dict[str, Any]:
    """One prequential pass of one design over the stream."""
    torch.manual_seed(seed)
    adapter = DESIGNS[design](seed)
    n_items = len(stream.vectors)
    adapter.add_items(range(n_items), stream.vectors)
    windows: dict[int, deque[tuple[int, float, float]]] = {}
    consumed: dict[int, list[int]] = {}
    ranks: dict[str, list[np.ndarray]] = {
        "model": [],
        "content": [],
        "index": [],
        "index-rerank": [],
    }
    train_s = score_s = 0.0
    n_scored = 0
    n = len(stream.item)
    for start in tqdm(range(0, n, BATCH), desc=f"{stream.name} {design}", mininterval=2.0):
        end = min(n, start + BATCH)
        # Every event's window and consumed set as of just before it; the model as it stands.
        contexts, ts, ws, exclude, targets = [], [], [], [], []
        scored: list[int] = []
        for p in range(start, end):
            u, item = int(stream.user[p]), int(stream.item[p])
            window = windows.setdefault(u, deque(maxlen=WINDOW))
            contexts.append([r for r, _, _ in window])
            if stream.scored[p]:
                scored.append(p - start)
                ts.append([t for _, t, _ in window])
                ws.append([x for _, _, x in window])
                exclude.append(np.array(consumed.get(u, []), np.int64))
                targets.append(item)
            window.append((item, float(stream.ts[p]), float(stream.weight[p])))
            consumed.setdefault(u, []).append(item)
        if scored:
            ctx = [contexts[b] for b in scored]
            target_rows = np.array(targets, np.int64)
            began = time.process_time()
            z = adapter.item_matrix()
            q = adapter.transform_queries(ctx)
            ranks["model"].append(_ranks(q @ z.T, target_rows, exclude))
            score_s += time.process_time() - began
            n_scored += len(scored)
            qc = _content_queries(z, ctx, ts, ws)
            content = qc @ z.T
            ranks["content"].append(_ranks(content, target_rows, exclude))
            if adapter.sequence == "mean":  # inner product over [x_j, e_j] with [Wᵀq, q]
                index = qc @ adapter.item_matrix(unit=False).T
                ranks["index"].append(_ranks(index, target_rows, exclude))
                ranks["index-rerank"].append(_reranked(index, content, target_rows))
        began = time.process_time()
        adapter.learn_many(contexts, stream.item[start:end].tolist(), t=stream.ts[start:end])
        train_s += time.process_time() - began
    result: dict[str, Any] = {"design": design, "params": adapter.params()}
    for key, parts in ranks.items():
        if parts:
            result[key] = _metrics(np.concatenate(parts))
    result["train_us_per_event"] = 1e6 * train_s / max(1, n)
    result["score_us_per_event"] = 1e6 * score_s / max(1, n_scored)
    z = adapter.item_matrix()
    users = sorted(windows)
    points = _content_queries(
        z,
        [[r for r, _, _ in windows[u]] for u in users],
        [[t for _, t, _ in windows[u]] for u in users],
        [[x for _, _, x in windows[u]] for u in users],
    )
    result["users"] = _clusters(points, seed)
    result["users_centred"] = _clusters(points - points.mean(axis=0), seed)
    result["n_events"], result["n_scored"] = n, n_scored
    return result


def write_report(results: dict[str, Any], out: Path) -> None:
    """Rewrite the ``.md`` table from every row in the JSON."""
    lines = [
        "# Interest adapter study",
        "",
        "Produced by `python -m benchmarks.adapter_study` (docstring: the protocol).",
        "Prequential, batches of 256 events scored then learned, top-10 over the whole",
        "catalogue, consumed items excluded. `model`: the adapter's own query; `content`:",
        "the engine's pooled `cos(interest, item)` alone in the design's space; `index`:",
        "that content query answered by inner product over the frozen vectors with `Wᵀq`",
        "(over `[x_j, e_j]` with `[Wᵀq, q]` for residual designs; no GRU);",
        "`index+rerank`: the 320 best of those, re-ranked by the content cosine (two-stage).",
        "Clusters: `DecayingCentroids()` defaults over the users' final content vectors",
        "(`largest`: share of users in the largest cluster; `user cos`: mean cosine between",
        "users); `centred`: the same after subtracting the mean user vector.",
        "CPU µs per event on one thread of a shared 2-core machine (indicative).",
        "",
        "| dataset (events) | design | HR@10 | NDCG@10 | content HR@10 | index HR@10 "
        "| index+rerank HR@10 | clusters | largest | silhouette | user cos "
        "| clusters centred | largest | silhouette | train µs/ev | score µs/ev |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(results["runs"]):
        r = results["runs"][key]
        u = r["users"]
        sil = "–" if u["silhouette"] is None else f"{u['silhouette']:.3f}"
        index = f"{r['index']['hr']:.4f}" if "index" in r else "–"
        rerank = f"{r['index-rerank']['hr']:.4f}" if "index-rerank" in r else "–"
        uc = r["users_centred"]
        sil_c = "–" if uc["silhouette"] is None else f"{uc['silhouette']:.3f}"
        lines.append(
            f"| {r['dataset']} ({r['n_events']:,}) | {r['design']} | {r['model']['hr']:.4f} "
            f"| {r['model']['ndcg']:.4f} | {r['content']['hr']:.4f} | {index} | {rerank} "
            f"| {u['clusters']} | {u['largest_share']:.2f} | {sil} | {u['mean_user_cosine']:.2f} "
            f"| {uc['clusters']} | {uc['largest_share']:.2f} | {sil_c} "
            f"| {r['train_us_per_event']:.0f} | {r['score_us_per_event']:.0f} |"
        )
    lines += ["", results.get("conclusion", "").strip(), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


@app.command()
def main(
    dataset: Annotated[str, typer.Option(help="Folder under ../shared/data.")] = "ml-latest-small",
    design: Annotated[
        list[str], typer.Option(help=f"Repeat for several; of {', '.join(DESIGNS)}.")
    ] = list(DESIGNS),  # noqa: B006 - typer needs a list default
    limit_events: Annotated[int, typer.Option(help="First events only; 0: all.")] = 20_000,
    every: Annotated[int, typer.Option(help="Score every n-th event.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="Results, .json and .md.")] = OUT,
) -> None:
    """Run the designs on one dataset and merge their rows into the results."""
    torch.set_num_threads(1)
    unknown = set(design) - set(DESIGNS)
    if unknown:
        raise typer.BadParameter(f"unknown design(s) {sorted(unknown)}")
    stream = load_stream(dataset, limit_events or None, every)
    path = out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    for name in design:
        row = run_design(stream, name, seed)
        row["dataset"], row["every"], row["limit_events"] = dataset, every, limit_events
        results["runs"][f"{dataset}/{limit_events or 'all'}/{every}/{name}"] = row
        typer.echo(json.dumps({k: row[k] for k in ("design", "model", "content", "users")}))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        write_report(results, out)


if __name__ == "__main__":
    app()
