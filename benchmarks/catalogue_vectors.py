"""Realistic item vectors for vector-index benchmarks, at any catalogue size.

Approximate-nearest-neighbour indexes are sensitive to the geometry of the data:
recall at a given search effort is far better on clustered, anisotropic
sentence embeddings than on random unit vectors (where every neighbour is
almost orthogonal and no index beats brute force), and far worse on data with
many near-duplicates. So the benchmark vectors are derived from real ones:

- :func:`real_item_vectors` encodes the ~9.7k MovieLens ``ml-latest-small``
  movies (``CatalogItem.render_text()``: title, then genres) with the
  project's encoder (all-MiniLM-L6-v2, 384-d, unit norm), once, and caches
  them in ``.cache/bench/``;
- :func:`derived_item_vectors` makes any number of unit vectors from them:
  each is ``normalise(a·r_i + b·r_j + σ·ε)`` with ``r_i`` a real item, ``r_j``
  one of its real near neighbours (a "sequel" or a same-genre item),
  ``b/a`` drawn in ``[0, MIX_MAX]`` and ``ε`` Gaussian noise with the real
  vectors' own covariance (so the noise stays in the subspace sentence
  embeddings occupy instead of adding isotropic dimensions). ``σ`` is tuned so
  that a derived set the size of the real one has top-1 neighbour cosines
  distributed like the real set's (:func:`neighbour_cosines` measures it;
  ``python -m benchmarks.catalogue_vectors`` prints the comparison).

Derivation is chunked and deterministic under ``seed`` (the same ``n`` and
``seed`` give the same array on any machine with the same cached real vectors);
10^6 vectors take a few seconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ml-latest-small"
CACHE = ROOT / ".cache" / "bench" / "minilm-ml-latest-small.npy"

NOISE_SCALE = 0.6  # σ, in units of the real vectors' per-vector spread (see module doc)
NOISE_SPREAD = 0.3  # each item's σ is NOISE_SCALE·U(1 - spread, 1 + spread)
MIX_MAX = 0.5  # largest share b/a of the second real vector
PARTNERS = 32  # r_j is one of the PARTNERS nearest real neighbours of r_i
CHUNK = 1 << 16

__all__ = [
    "derived_item_vectors",
    "interest_queries",
    "neighbour_cosines",
    "real_item_vectors",
]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def real_item_vectors(cache: Path = CACHE, data: Path = DATA) -> np.ndarray:
    """The MiniLM vectors of the ``ml-latest-small`` movies, ``(n, 384)`` float32, unit norm.

    Encoded once with ``make_encoder(EngineSettings())`` and cached in ``cache``.
    """
    if cache.exists():
        return np.load(cache)
    from models.datasets import load_dataset
    from models.encoder_factory import make_encoder
    from models.record_parser import EventParser
    from models.settings import EngineSettings

    settings = EngineSettings()
    dataset = load_dataset(data, EventParser.from_settings(settings), limit=0)
    encoder = make_encoder(settings)
    vectors = _normalise(encoder.encode([item.render_text() for item in dataset.items]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(cache)
    return vectors


@functools.lru_cache(maxsize=4)
def _basis(cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real vectors, their ``PARTNERS`` nearest real neighbours, and the noise's square root."""
    real = real_item_vectors(cache)
    sims = real @ real.T
    np.fill_diagonal(sims, -np.inf)
    partners = np.argpartition(-sims, PARTNERS, axis=1)[:, :PARTNERS].astype(np.int32)
    # Noise with the real vectors' covariance: eps = z @ root, root = S^(1/2) V^T / sqrt(n).
    centred = real - real.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    root = (singular[:, None] * vt / np.sqrt(len(real))).astype(np.float32)
    # Scale so that E||eps||^2 = 1 (mean squared distance of a real vector to the mean).
    root /= np.sqrt((singular**2).sum() / len(real))
    return real, partners, root


def derived_item_vectors(n: int, seed: int = 0, *, cache: Path = CACHE) -> np.ndarray:
    """``n`` unit float32 vectors of 384-d with the geometry of real MiniLM item vectors.

    Deterministic under ``seed``; built in chunks of 65,536 (fast for 10^6).
    """
    real, partners, root = _basis(cache)
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    z = np.empty((min(CHUNK, n), root.shape[0]), dtype=np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        base = rng.integers(0, len(real), size=m)
        other = partners[base, rng.integers(0, PARTNERS, size=m)]
        share = rng.uniform(0.0, MIX_MAX, size=(m, 1)).astype(np.float32)
        scale = NOISE_SCALE * rng.uniform(1 - NOISE_SPREAD, 1 + NOISE_SPREAD, size=(m, 1))
        rng.standard_normal(out=z[:m], dtype=np.float32)
        block = out[start : start + m]
        np.matmul(z[:m], root, out=block)  # the noise, then the mix, in place
        block *= scale.astype(np.float32)
        block += real[base]
        block += share * real[other]
        block /= np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]
    return out


def neighbour_cosines(
    vectors: np.ndarray, *, queries: int = 2000, seed: int = 0, k: int = 10
) -> np.ndarray:
    """Cosines of ``queries`` random members to their ``k`` nearest other members, ``(q, k)``.

    Exact (matmul in chunks); the first column is the top-1 neighbour cosine.
    """
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    q = vectors[picked]
    best = np.full((len(q), k + 1), -np.inf, dtype=np.float32)
    for start in range(0, len(vectors), CHUNK * 2):
        sims = q @ vectors[start : start + CHUNK * 2].T
        both = np.concatenate([best, sims], axis=1)
        best = -np.sort(-np.partition(both, both.shape[1] - k - 1, axis=1)[:, -k - 1 :], axis=1)
    return best[:, 1:]  # column 0 is the query itself (cosine 1)


def interest_queries(
    items: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    single_share: float = 0.25,
    topic_pool: int = 200,
) -> np.ndarray:
    """``n`` realistic user-interest vectors over ``items`` (unit rows), ``(n, d)`` float32.

    Most are the normalised weighted mean of 5-30 items of one topic: a random
    seed item and items drawn among its ``topic_pool`` nearest neighbours in a
    random sample of the catalogue, with random positive weights (recency or
    rating). A ``single_share`` of them are one item's own vector (a user with
    one event), with a little noise so the item itself is not a trivial hit.
    """
    rng = np.random.default_rng(seed)
    n_single = round(n * single_share)
    out = np.empty((n, items.shape[1]), dtype=np.float32)
    singles = rng.choice(len(items), size=n_single, replace=False)
    jitter = rng.standard_normal((n_single, items.shape[1])).astype(np.float32) * 0.01
    out[:n_single] = _normalise(items[singles] + jitter)
    sample = items[rng.choice(len(items), size=min(len(items), 50_000), replace=False)]
    for row in range(n_single, n):
        seed_item = items[rng.integers(len(items))]
        sims = sample @ seed_item
        topic = np.argpartition(-sims, topic_pool)[:topic_pool]
        size = int(rng.integers(5, 31))
        members = sample[rng.choice(topic, size=size, replace=False)]
        weights = rng.uniform(0.2, 1.0, size=size).astype(np.float32)
        out[row] = weights @ members
    return _normalise(out[rng.permutation(n)])


def _describe(name: str, cos: np.ndarray) -> str:
    top1 = cos[:, 0]
    pct = np.percentile(top1, [5, 25, 50, 75, 95])
    return (
        f"{name:<24} top-1 mean {top1.mean():.3f}  p5/25/50/75/95 "
        + "/".join(f"{p:.3f}" for p in pct)
        + f"   top-10 mean {cos[:, -1].mean():.3f}"
    )


def main() -> None:
    """Print the top-1 neighbour cosine distribution of the real and derived sets."""
    real = real_item_vectors()
    print(_describe(f"real ({len(real):,})", neighbour_cosines(real)))
    for n in (len(real), 100_000, 1_000_000):
        print(_describe(f"derived ({n:,})", neighbour_cosines(derived_item_vectors(n))))


if __name__ == "__main__":
    main()
