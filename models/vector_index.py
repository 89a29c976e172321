"""An approximate nearest-neighbour index over the catalogue's item vectors.

Two-stage ranking asks "which items lie closest to this interest vector?" for
every user of a batch. Scanning 10^6 items per user is what made ranking slow,
so the question goes to an HNSW graph (usearch, picked by the side-by-side
benchmark in docs/benchmarks/vector-index-libraries.md) that answers a batch of
queries in time that grows with ``log n``.

Keys are catalogue indices. Vectors are unit-norm and compared by inner
product (= cosine); the graph stores them in reduced precision: ``i8`` by
default (a quarter of float32's memory, and on CPUs without native half
precision about three times faster to search than ``f16``), ``f16`` or ``f32``
where recall matters more than speed. For ``i8`` the index quantises itself:
usearch's own conversion truncates ``x·127`` toward zero, which leaves the
components of a 384-d unit vector (σ ≈ 0.05) with a handful of levels, so
vectors and queries are rounded at ``x·127·s`` with ``s = √d / 6.5`` (a
component must lie 6.5 σ out to be clipped). On the libraries benchmark that
lifts recall@10 from 0.915 to 0.974 and is faster, since the graph is better.
Items are added, replaced and removed online: a replaced vector is removed
and added again, so a key never appears twice. The index is saved beside a
digest of the item ids its keys stand for and a fingerprint of each vector,
so that after a restart it is adopted only by a catalogue whose indices mean
the same items, and only the items that changed are redone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from usearch.index import Index

__all__ = ["ItemIndex"]

IndexPrecision = Literal["f32", "f16", "i8"]

_META = "item-index.json"
_GRAPH = "item-index.usearch"
_FINGERPRINTS = "item-index-fingerprints.npy"
_IDS = "item-index-ids.json"
_I8_CLIP_SIGMAS = 6.5
# Saved with the graph: an index written by another quantisation is rebuilt, not adopted.
_QUANTISATION = f"rint(x*127*sqrt(d)/{_I8_CLIP_SIGMAS})"


class ItemIndex:
    """HNSW index of unit item vectors keyed by catalogue index.

    Parameters
    ----------
    dim
        Vector dimension.
    precision
        How the graph stores vectors: ``f32``, ``f16`` or ``i8``.
    connectivity
        Edges per node (HNSW's ``M``).
    expansion_add
        Search depth when inserting (``efConstruction``).
    expansion_search
        Search depth when querying (``ef``); more is slower and more exact.
    threads
        Threads a batch add or search may use (0: all cores).

    Examples
    --------
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index = ItemIndex(dim=4)
    >>> index.upsert([0, 1, 2], vectors[:3])
    >>> keys, sims = index.search(vectors[[1]], k=2)
    >>> int(keys[0, 0]), round(float(sims[0, 0]), 3)
    (1, 1.0)
    >>> index.remove([1]); len(index), 1 in index
    (2, False)
    >>> sorted(index.search(vectors[[1]], k=3)[0][0].tolist())   # fewer items than k: -1 pads
    [-1, 0, 2]
    """

    def __init__(
        self,
        dim: int,
        *,
        precision: IndexPrecision = "i8",
        connectivity: int = 16,
        expansion_add: int = 64,
        expansion_search: int = 64,
        threads: int = 1,
    ) -> None:
        self.dim = dim
        self.precision = precision
        self.threads = threads
        # i8: the multiplier applied before rounding; sims come back divided by its square.
        self.i8_multiplier = 127.0 * np.sqrt(dim) / _I8_CLIP_SIGMAS
        self._index = Index(
            ndim=dim,
            # Inner product: on unit vectors the cosine, and with i8 storage 3x faster to
            # search than "cos" (no norms to compute), which usearch's i8 kernel would add.
            metric="ip",
            dtype=precision,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: int) -> bool:
        return int(key) in self._index

    @property
    def memory_bytes(self) -> int:
        """Bytes the graph and its vectors hold."""
        return int(self._index.memory_usage)

    def upsert(
        self, keys: Sequence[int] | np.ndarray, vectors: np.ndarray, *, threads: int | None = None
    ) -> None:
        """Add items, replacing the vectors of keys already present (``threads``: for this
        call, e.g. all cores while building before the worker is ready)."""
        keys = np.asarray(keys, np.uint64).reshape(-1)
        if not len(keys):
            return
        present = np.fromiter((int(k) in self._index for k in keys), bool, len(keys))
        if present.any():
            self._index.remove(keys[present])
        self._index.add(
            keys, self._input(vectors), threads=self.threads if threads is None else threads
        )

    def remove(self, keys: Sequence[int] | np.ndarray) -> None:
        """Forget items (absent keys are ignored)."""
        keys = np.asarray(keys, np.uint64).reshape(-1)
        present = keys[np.fromiter((int(k) in self._index for k in keys), bool, len(keys))]
        if len(present):
            self._index.remove(present)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``([Q, k]`` keys, ``[Q, k]`` cosines) of each query's ``k`` nearest items, best first.

        Rows with fewer than ``k`` results are padded with key ``-1`` and cosine ``-inf``.
        """
        queries = np.asarray(queries, np.float32).reshape(-1, self.dim)
        n = len(queries)
        keys = np.full((n, k), -1, np.int64)
        sims = np.full((n, k), -np.inf, np.float32)
        if not n or not len(self._index) or k <= 0:
            return keys, sims
        found = self._index.search(self._input(queries), k, threads=self.threads)
        # One query is answered with a flat Matches, without counts.
        counts = np.asarray(getattr(found, "counts", [len(found.keys)])).reshape(n)
        valid = np.arange(k)[None, :] < counts[:, None]
        raw_keys = np.zeros((n, k), np.int64)
        raw_dist = np.zeros((n, k), np.float32)
        got = np.asarray(found.keys).reshape(n, -1)
        raw_keys[:, : got.shape[1]] = got.astype(np.int64)
        raw_dist[:, : got.shape[1]] = np.asarray(found.distances).reshape(n, -1)
        keys[valid] = raw_keys[valid]
        # usearch's "ip" distance is 1 - dot, and for i8 input -dot of the integer
        # vectors: both mapped back to the cosine (approximate for i8).
        if self.precision == "i8":
            sims[valid] = -raw_dist[valid] / self.i8_multiplier**2
        else:
            sims[valid] = 1.0 - raw_dist[valid]
        return keys, sims

    def _input(self, vectors: np.ndarray) -> np.ndarray:
        """What the graph is given: float32, or for ``i8`` the rounded integers."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        if self.precision != "i8":
            return vectors
        out = np.empty(vectors.shape, np.int8)
        scale = np.float32(self.i8_multiplier)
        for start in range(0, len(vectors), 16_384):  # in chunks: no big float temporaries
            chunk = np.rint(vectors[start : start + 16_384] * scale)
            out[start : start + len(chunk)] = np.clip(chunk, -127, 127)
        return out

    # ------------------------------------------------------------ persistence
    def save(self, directory: Path, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Write the graph, the ids its keys stand for and a fingerprint of each vector."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (_GRAPH + ".tmp")
        self._index.save(str(tmp))
        tmp.replace(directory / _GRAPH)
        np.save(directory / _FINGERPRINTS, fingerprints(vectors))
        (directory / _IDS).write_text(json.dumps(list(item_ids)))
        meta = {
            "dim": self.dim,
            "precision": self.precision,
            "quantisation": _QUANTISATION,
            "items": len(item_ids),
            "ids_digest": _digest(item_ids),
        }
        (directory / _META).write_text(json.dumps(meta))

    @staticmethod
    def saved_ids(directory: Path) -> list[str]:
        """The item ids a saved index's keys stand for, in key order (empty if none saved).

        A catalogue that reserves them first gives every item its old index, so the
        saved index stays valid whatever order the items are read in afterwards.
        """
        try:
            ids = json.loads((directory / _IDS).read_text())
        except (OSError, ValueError):
            return []
        return [str(i) for i in ids] if isinstance(ids, list) else []

    @classmethod
    def restore(
        cls,
        directory: Path,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        recommendable: np.ndarray,
        *,
        build_threads: int | None = None,
        **settings: Any,
    ) -> ItemIndex | None:
        """The saved index brought up to date with this catalogue, or None to rebuild.

        It is adopted when its keys meant the same items (the saved ids are a
        prefix of ``item_ids``) with the same dimension and precision; then
        only what differs is redone: items added since, items whose vector
        changed (by fingerprint) and items no longer recommendable.
        """
        try:
            meta = json.loads((directory / _META).read_text())
            saved_prints = np.load(directory / _FINGERPRINTS)
        except (OSError, ValueError):
            return None
        n = int(meta.get("items", -1))
        if (
            n < 0
            or n > len(item_ids)
            or meta.get("ids_digest") != _digest(item_ids[:n])
            or int(meta.get("dim", -1)) != vectors.shape[1]
            or meta.get("precision") != settings.get("precision", "i8")
            or meta.get("quantisation") != _QUANTISATION
            or saved_prints.shape != (n, _PRINT_DIM)
        ):
            return None
        index = cls(int(meta["dim"]), **settings)
        try:
            index._index.load(str(directory / _GRAPH))
        except (OSError, RuntimeError, ValueError):
            return None
        changed = np.ones(len(item_ids), bool)
        changed[:n] = ~np.isclose(fingerprints(vectors[:n]), saved_prints, atol=1e-5).all(axis=1)
        keys = np.arange(len(item_ids))
        index.remove(keys[~recommendable[: len(item_ids)]])
        redo = keys[changed & recommendable[: len(item_ids)]]
        for start in range(0, len(redo), 65_536):  # in chunks: no copy of every vector at once
            chunk = redo[start : start + 65_536]
            index.upsert(chunk, vectors[chunk], threads=build_threads)
        return index


_PRINT_DIM = 4


def fingerprints(vectors: np.ndarray) -> np.ndarray:
    """``[n, 4]`` random projections of each vector: equal vectors, equal prints (cheap to check).

    >>> v = np.eye(3, dtype=np.float32)
    >>> bool(np.allclose(fingerprints(v), fingerprints(v.copy()))), fingerprints(v).shape
    (True, (3, 4))
    """
    projection = np.random.default_rng(20_260_101).normal(size=(vectors.shape[1], _PRINT_DIM))
    out = np.empty((len(vectors), _PRINT_DIM))
    for start in range(0, len(vectors), 65_536):  # in chunks: no float64 copy of 10^6 rows
        out[start : start + 65_536] = (
            np.asarray(vectors[start : start + 65_536], np.float64) @ projection
        )
    return out


def _digest(item_ids: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for item_id in item_ids:
        h.update(item_id.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()
