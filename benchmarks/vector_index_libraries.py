"""Approximate-nearest-neighbour libraries for driftrec's item index, side by side.

``python -m benchmarks.vector_index_libraries --items 100000 [--items 1000000]``

The use case is the engine's: 384-d unit MiniLM item vectors ranked by inner
product (= cosine); a catalogue of 10^4-10^6 items that changes online (new
items, a new vector under the same integer key, deleted items that must never
be recommended again); queries in batches of 256 user-interest vectors,
k = 100 each; one process, 1-2 threads.

Data (:mod:`benchmarks.catalogue_vectors`): ``n`` items derived from the real
MiniLM vectors of the MovieLens catalogue; 1,100 new items; 1,000 keys whose
vector is replaced by another derived one; 1,100 deleted keys (1,000 old, 100
of the new ones). Queries: 2,048 interest vectors (8 batches of 256; 3/4 of
them the weighted mean of 5-30 items of one topic, 1/4 one item's vector).
Ground truth: exact top-100 of the final catalogue by numpy float32 matmul.

Every configuration runs in its own spawned process (so its memory figures are
its own), one after another, in this order: build (2 threads) -> add 1,000 as
one batch, then 100 one at a time -> update 1,000 -> delete 1,100 -> a sweep
of the search effort (``ef`` or ``nprobe``, 1 thread, stopped once
recall@100 >= 0.995) -> the two efforts that first reach recall@100 >= 0.95
and >= 0.99 again at 2 threads -> churn (10 x 1,000 updates of live keys with
their own vectors: the update path without changing the ground truth; memory
growth and recall after) -> save, load (and memory-mapped view where the
library has one) and recall/deleted-key checks on the loaded copy.

Figures: build items/s; batch times of add/update/delete; RSS growth of the
process over the build (``index MiB``: RSS after build - RSS before; ``peak``:
``ru_maxrss`` - RSS before); recall@10 and recall@100 against the exact
ground truth; median ms per batch of 256 and µs per query; how many deleted
keys came back in any result (all efforts, the reloaded copy, and 1,100
queries that are the deleted items' own vectors); the largest error of a
returned score against the exact inner product with the key's current vector
(a stale vector after an update, or quantisation); save/load seconds and bytes.

HNSW settings are the same for every library: M = 16 (usearch
``connectivity``), ef_construction = 128 (usearch ``expansion_add``). IVF:
``nlist`` = the power of two nearest 2·sqrt(n), trained (10 k-means iterations)
on min(n, 40·nlist) items. faiss' HNSW cannot remove vectors, so its row keeps
tombstones and filters them with an ``IDSelector`` at search time (and an
update is a tombstone plus an insert), which is what a user of it would write.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import multiprocessing
import os
import resource
import shlex
import shutil
import statistics
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from threadpoolctl import threadpool_limits

from benchmarks.catalogue_vectors import (
    derived_item_vectors,
    interest_queries,
    neighbour_cosines,
    real_item_vectors,
)
from benchmarks.machine import current_rss_mib, describe_machine, peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
DATA_CACHE = ROOT / ".cache" / "bench"
DIM = 384
K = 100
BATCH = 256
N_BATCHES = 8
N_NEW, N_SINGLE_ADDS, N_UPDATE, N_DELETE_OLD, N_DELETE_NEW = 1000, 100, 1000, 1000, 100
CHURN_ROUNDS = 10
INTERLEAVED_ROUNDS = 3
SELF_SAMPLE = 10_000  # live items whose own vector must find them
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 128
HNSW_EFFORTS = (100, 128, 192, 256, 384, 512, 768, 1024)
IVF_FRACTIONS = (128, 64, 32, 16, 8, 4, 2)  # nprobe = nlist / fraction
RECALL_TARGETS = (0.95, 0.99)
STOP_AT = 0.995  # the sweep stops there, or when recall@100 gains < PLATEAU per step
PLATEAU = 0.001
BUILD_THREADS = 2
LIBRARY_PACKAGES = {"usearch": "usearch", "faiss": "faiss-cpu", "hnswlib": "hnswlib"}
LIBRARY_PACKAGES.update(voyager="voyager", numpy="numpy")

app = typer.Typer(add_completion=False, help=__doc__)


# --------------------------------------------------------------------------- the indexes


class VectorIndex(ABC):
    """One library's index behind the calls the engine needs; keys are int64, scores cosines."""

    effort_name = "ef"
    can_view = False

    def __init__(self, dim: int, n: int) -> None:
        self.dim, self.n = dim, n

    def efforts(self) -> list[int]:
        return list(HNSW_EFFORTS)

    def prepare(self, sample: np.ndarray, threads: int) -> None:
        """Training, for the indexes that need it (IVF); nothing by default."""
        del sample, threads

    @abstractmethod
    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None: ...

    @abstractmethod
    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None: ...

    @abstractmethod
    def delete(self, keys: np.ndarray) -> None: ...

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, scores)``, each ``(q, k)``, best first; missing results are key -1."""

    @abstractmethod
    def count(self) -> int | None:
        """Live (not deleted) items; ``None`` where the library does not say."""

    @abstractmethod
    def save(self, path: Path) -> list[Path]:
        """Write the index (and anything else needed to use it) and return the files."""

    @abstractmethod
    def load(self, path: Path) -> None:
        """Replace this index by the one saved at ``path``."""

    def view(self, path: Path) -> None:
        """Replace this index by a read-only memory-mapped view of ``path``."""
        raise NotImplementedError


def _grown(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``array`` with at least ``size`` rows (new rows ``fill``), growing by 1/4 at a time."""
    if size <= len(array):
        return array
    out = np.full((max(size, len(array) * 5 // 4), *array.shape[1:]), fill, array.dtype)
    out[: len(array)] = array
    return out


class NumpyExact(VectorIndex):
    """The baseline (what the engine does today): one matmul over the whole catalogue."""

    effort_name = "-"
    can_view = True

    def __init__(self, dim: int, n: int) -> None:
        super().__init__(dim, n)
        self.vectors = np.empty((0, dim), np.float32)
        self.keys = np.empty(0, np.int64)
        self.live = np.empty(0, bool)
        self.rows = np.full(0, -1, np.int64)  # key -> row (keys are small ints here)
        self.size = 0

    def efforts(self) -> list[int]:
        return [0]

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        need = self.size + len(keys)
        self.vectors = _grown(self.vectors, need, 0.0)
        self.keys, self.live = _grown(self.keys, need, -1), _grown(self.live, need, False)
        self.rows = _grown(self.rows, int(keys.max()) + 1, -1)
        rows = np.arange(self.size, self.size + len(keys))
        self.vectors[rows], self.keys[rows], self.live[rows] = vectors, keys, True
        self.rows[keys] = rows
        self.size += len(keys)

    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.vectors[self.rows[keys]] = vectors

    def delete(self, keys: np.ndarray) -> None:
        self.live[self.rows[keys]] = False
        self.rows[keys] = -1

    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        with threadpool_limits(threads):
            sims = queries @ self.vectors[: self.size].T
        sims[:, ~self.live[: self.size]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-scores, axis=1)
        return self.keys[np.take_along_axis(top, order, 1)], np.take_along_axis(scores, order, 1)

    def count(self) -> int:
        return int(self.live[: self.size].sum())

    def save(self, path: Path) -> list[Path]:
        arrays: dict[str, np.ndarray] = {
            "vectors": self.vectors[: self.size],
            "keys": self.keys[: self.size],
            "live": self.live[: self.size],
        }
        for name, array in arrays.items():
            np.save(path.with_suffix(f".{name}.npy"), array)
        return [path.with_suffix(f".{name}.npy") for name in arrays]

    def _read(self, path: Path, mmap: bool) -> None:
        self.vectors = np.load(path.with_suffix(".vectors.npy"), mmap_mode="r" if mmap else None)
        self.keys = np.load(path.with_suffix(".keys.npy"))
        self.live = np.load(path.with_suffix(".live.npy"))
        self.size = len(self.keys)
        self.rows = np.full(int(self.keys.max()) + 1, -1, np.int64)
        self.rows[self.keys[self.live]] = np.flatnonzero(self.live)

    def load(self, path: Path) -> None:
        self._read(path, mmap=False)

    def view(self, path: Path) -> None:
        self._read(path, mmap=True)


class Usearch(VectorIndex):
    """usearch ``Index``: HNSW with f32/f16/i8 storage; remove + add for an update."""

    can_view = True

    def __init__(
        self,
        dim: int,
        n: int,
        dtype: str,
        *,
        compact: bool = False,
        metric: str = "ip",
        i8_scale: float | None = None,
    ) -> None:
        super().__init__(dim, n)
        from usearch.index import Index

        self.compact = compact  # remove(compact=True) also relinks the removed nodes' neighbours
        # With i8 storage and "ip", usearch returns -(dot of the ±127 integer vectors); it
        # converts floats by truncating x·127 toward zero. i8_scale: convert here instead,
        # rounding x·127·scale (MiniLM components stay below 0.26, so 3 clips none).
        self.metric, self.dtype, self.i8_scale = metric, dtype, i8_scale
        self.score_scale = (127.0 * (i8_scale or 1.0)) ** 2 if dtype == "i8" else None
        self.index = Index(
            ndim=dim,
            metric=self.metric,
            dtype=dtype,
            connectivity=HNSW_M,
            expansion_add=HNSW_EF_CONSTRUCTION,
        )

    def _input(self, vectors: np.ndarray) -> np.ndarray:
        if self.i8_scale is None:
            return vectors
        out = np.empty(vectors.shape, np.int8)
        for start in range(0, len(vectors), 1 << 14):  # in chunks: no big float temporaries
            chunk = np.rint(vectors[start : start + (1 << 14)] * np.float32(127 * self.i8_scale))
            out[start : start + len(chunk)] = np.clip(chunk, -127, 127)
        return out

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.index.add(keys.astype(np.uint64), self._input(vectors), threads=threads)

    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.index.remove(keys.astype(np.uint64), compact=self.compact, threads=threads)
        self.add(keys, vectors, threads)  # add() refuses a key the index holds

    def delete(self, keys: np.ndarray) -> None:
        self.index.remove(keys.astype(np.uint64), compact=self.compact)

    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self.index.expansion_search = effort  # type: ignore[misc]  # the stub misses the setter
        found: Any = self.index.search(self._input(queries), k, threads=threads)
        keys = found.keys.astype(np.int64)
        if self.metric == "ip" and self.score_scale is not None:
            scores = -found.distances / self.score_scale
        else:
            scores = 1.0 - found.distances
        missing = np.arange(k)[None, :] >= found.counts[:, None]
        keys[missing], scores[missing] = -1, -np.inf
        return keys, scores

    def count(self) -> int:
        return len(self.index)

    def save(self, path: Path) -> list[Path]:
        self.index.save(str(path))
        return [path]

    def load(self, path: Path) -> None:
        from usearch.index import Index

        self.index = _restored(Index.restore(str(path)), path)

    def view(self, path: Path) -> None:
        from usearch.index import Index

        self.index = _restored(Index.restore(str(path), view=True), path)


def _restored(index: Any, path: Path) -> Any:
    if index is None:  # usearch returns None for a file without its metadata
        raise ValueError(f"{path} is not a usearch index")
    return index


class FaissHnsw(VectorIndex):
    """faiss ``IndexHNSWFlat``: no removal, so tombstones filtered by an ``IDSelector``."""

    can_view = True

    def __init__(self, dim: int, n: int) -> None:
        super().__init__(dim, n)
        import faiss

        self.faiss = faiss
        self.index: Any = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.labels = np.empty(0, np.int64)  # faiss row -> key (capacity >= ntotal)
        self.row_of = np.full(0, -1, np.int64)  # key -> live faiss row
        self.dead = np.empty(0, bool)  # faiss row -> tombstone
        self._selector: Any = None

    def _append(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        start = self.index.ntotal
        self.faiss.omp_set_num_threads(threads)
        self.index.add(vectors)
        end = start + len(keys)
        self.labels, self.dead = _grown(self.labels, end, -1), _grown(self.dead, end, True)
        self.labels[start:end], self.dead[start:end] = keys, False
        self.row_of = _grown(self.row_of, int(keys.max()) + 1, -1)
        self.row_of[keys] = np.arange(start, end)

    def _bury(self, keys: np.ndarray) -> None:
        self.dead[self.row_of[keys]] = True
        self.row_of[keys] = -1
        self._selector = None

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self._append(keys, vectors, threads)

    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self._bury(keys)
        self._append(keys, vectors, threads)

    def delete(self, keys: np.ndarray) -> None:
        self._bury(keys)

    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self.faiss
        dead = self.dead[: self.index.ntotal]
        if self._selector is None and dead.any():
            batch = faiss.IDSelectorBatch(np.flatnonzero(dead).astype(np.int64))
            self._selector = (batch, faiss.IDSelectorNot(batch))  # keep batch alive
        params = faiss.SearchParametersHNSW()
        params.efSearch = effort
        if self._selector is not None:
            params.sel = self._selector[1]
        faiss.omp_set_num_threads(threads)
        scores, rows = self.index.search(queries, k, params=params)
        keys = np.where(rows >= 0, self.labels[np.maximum(rows, 0)], -1)
        return keys, np.where(rows >= 0, scores, -np.inf)

    def count(self) -> int:
        return int((~self.dead[: self.index.ntotal]).sum())

    def save(self, path: Path) -> list[Path]:
        self.faiss.write_index(self.index, str(path))
        extra = path.with_suffix(".labels.npz")
        total = self.index.ntotal
        with open(extra, "wb") as f:  # np.savez would append .npz to a str path
            np.savez(f, labels=self.labels[:total], dead=self.dead[:total])
        return [path, extra]

    def _read(self, path: Path, flags: int) -> None:
        self.index = self.faiss.read_index(str(path), flags)
        with np.load(path.with_suffix(".labels.npz")) as saved:
            self.labels, self.dead = saved["labels"], saved["dead"]
        self.row_of = np.full(int(self.labels.max()) + 1, -1, np.int64)
        alive = np.flatnonzero(~self.dead)
        self.row_of[self.labels[alive]] = alive
        self._selector = None

    def load(self, path: Path) -> None:
        self._read(path, 0)

    def view(self, path: Path) -> None:
        self._read(path, self.faiss.IO_FLAG_MMAP)


class FaissIvf(VectorIndex):
    """faiss ``IndexIVFFlat`` / ``IndexIVFScalarQuantizer``: native ids and ``remove_ids``."""

    effort_name = "nprobe"
    can_view = True

    def __init__(self, dim: int, n: int, storage: str) -> None:
        super().__init__(dim, n)
        import faiss

        self.faiss = faiss
        self.nlist = 2 ** round(math.log2(2 * math.sqrt(n)))
        self.quantizer = faiss.IndexFlatIP(dim)
        ip = faiss.METRIC_INNER_PRODUCT
        self.index: Any
        if storage == "f32":
            self.index = faiss.IndexIVFFlat(self.quantizer, dim, self.nlist, ip)
        else:
            qtype = {"f16": faiss.ScalarQuantizer.QT_fp16, "i8": faiss.ScalarQuantizer.QT_8bit}
            self.index = faiss.IndexIVFScalarQuantizer(
                self.quantizer, dim, self.nlist, qtype[storage], ip
            )

    def efforts(self) -> list[int]:
        return sorted({max(1, self.nlist // f) for f in IVF_FRACTIONS})

    def prepare(self, sample: np.ndarray, threads: int) -> None:
        self.faiss.omp_set_num_threads(threads)
        self.index.cp.niter = 10
        with threadpool_limits(threads):
            self.index.train(sample[: 40 * self.nlist])

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.faiss.omp_set_num_threads(threads)
        with threadpool_limits(threads):
            self.index.add_with_ids(vectors, keys.astype(np.int64))

    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.delete(keys)  # add_with_ids would keep the old entry beside the new one
        self.add(keys, vectors, threads)

    def delete(self, keys: np.ndarray) -> None:
        self.index.remove_ids(self.faiss.IDSelectorBatch(keys.astype(np.int64)))

    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self.index.nprobe = effort
        self.faiss.omp_set_num_threads(threads)
        with threadpool_limits(threads):
            scores, keys = self.index.search(queries, k)
        return keys, np.where(keys >= 0, scores, -np.inf)

    def count(self) -> int:
        return int(self.index.ntotal)

    def save(self, path: Path) -> list[Path]:
        self.faiss.write_index(self.index, str(path))
        return [path]

    def load(self, path: Path) -> None:
        self.index = self.faiss.read_index(str(path))

    def view(self, path: Path) -> None:
        self.index = self.faiss.read_index(str(path), self.faiss.IO_FLAG_MMAP)


class Hnswlib(VectorIndex):
    """hnswlib ``Index``: add_items updates an existing label in place; mark_deleted."""

    def __init__(self, dim: int, n: int) -> None:
        super().__init__(dim, n)
        import hnswlib

        self.hnswlib = hnswlib
        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(
            max_elements=n + 4096,
            M=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION,
            allow_replace_deleted=True,
        )
        self.deleted: int | None = 0  # hnswlib counts deleted items as present

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        need = self.index.element_count + len(keys)
        if need > self.index.max_elements:
            self.index.resize_index(max(need, int(self.index.max_elements * 1.25)))
        self.index.add_items(vectors, keys, num_threads=threads, replace_deleted=True)

    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.index.add_items(vectors, keys, num_threads=threads)

    def delete(self, keys: np.ndarray) -> None:
        for key in keys.tolist():
            self.index.mark_deleted(key)
        if self.deleted is not None:
            self.deleted += len(keys)

    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self.index.set_ef(effort)
        keys, distances = self.index.knn_query(queries, k=k, num_threads=threads)
        return keys.astype(np.int64), 1.0 - distances

    def count(self) -> int | None:
        if self.deleted is None:  # loaded: the file does not say how many are deleted
            return None
        return int(self.index.get_current_count()) - self.deleted

    def save(self, path: Path) -> list[Path]:
        self.index.save_index(str(path))
        return [path]

    def load(self, path: Path) -> None:
        self.index = self.hnswlib.Index(space="ip", dim=self.dim)
        self.index.load_index(str(path), allow_replace_deleted=True)
        self.deleted = None


class Voyager(VectorIndex):
    """Spotify voyager ``Index`` (hnswlib inside): float32, E4M3 or Float8 storage."""

    def __init__(self, dim: int, n: int, storage: str) -> None:
        super().__init__(dim, n)
        import voyager

        self.voyager = voyager
        self.index = voyager.Index(
            voyager.Space.InnerProduct,
            num_dimensions=dim,
            M=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION,
            max_elements=n + 4096,
            storage_data_type=getattr(voyager.StorageDataType, storage),
        )
        self.deleted: int | None = 0  # len(index) counts deleted items as present

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.index.add_items(vectors, ids=keys.astype(np.uint64), num_threads=threads)

    def update(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self.add(keys, vectors, threads)  # an existing id is updated in place

    def delete(self, keys: np.ndarray) -> None:
        for key in keys.tolist():
            self.index.mark_deleted(key)
        if self.deleted is not None:
            self.deleted += len(keys)

    def search(
        self, queries: np.ndarray, k: int, effort: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        keys, distances = self.index.query(queries, k=k, num_threads=threads, query_ef=effort)
        return keys.astype(np.int64), 1.0 - distances

    def count(self) -> int | None:
        return None if self.deleted is None else len(self.index) - self.deleted

    def save(self, path: Path) -> list[Path]:
        self.index.save(str(path))
        return [path]

    def load(self, path: Path) -> None:
        self.index = self.voyager.Index.load(str(path))
        self.deleted = None


@dataclass(frozen=True)
class Config:
    """A library configuration: how to make it, and what to call it in the table."""

    library: str  # import name, to skip a library that is missing
    precision: str
    make: Callable[[int, int], VectorIndex]
    note: str = ""


CONFIGS: dict[str, Config] = {
    "numpy exact": Config("numpy", "f32", NumpyExact, "matmul + argpartition (today's engine)"),
    "usearch HNSW f32": Config("usearch", "f32", lambda d, n: Usearch(d, n, "f32")),
    "usearch HNSW f16": Config("usearch", "f16", lambda d, n: Usearch(d, n, "f16")),
    "usearch HNSW f16 compact": Config(
        "usearch", "f16", lambda d, n: Usearch(d, n, "f16", compact=True), "remove(compact=True)"
    ),
    "usearch HNSW i8": Config(
        "usearch", "i8", lambda d, n: Usearch(d, n, "i8"), "ip, usearch's own f32->i8 (truncates)"
    ),
    "usearch HNSW i8 cos": Config(
        "usearch", "i8", lambda d, n: Usearch(d, n, "i8", metric="cos"), "metric cos"
    ),
    "usearch HNSW i8 rounded": Config(
        "usearch",
        "i8",
        lambda d, n: Usearch(d, n, "i8", i8_scale=3.0),
        "ip, int8 input = rint(x·127·3)",
    ),
    "faiss HNSWFlat": Config("faiss", "f32", FaissHnsw, "tombstones + IDSelector"),
    "faiss IVFFlat": Config("faiss", "f32", lambda d, n: FaissIvf(d, n, "f32")),
    "faiss IVF-SQfp16": Config("faiss", "f16", lambda d, n: FaissIvf(d, n, "f16")),
    "faiss IVF-SQ8": Config("faiss", "i8", lambda d, n: FaissIvf(d, n, "i8")),
    "hnswlib": Config("hnswlib", "f32", Hnswlib),
    "voyager f32": Config("voyager", "f32", lambda d, n: Voyager(d, n, "Float32")),
    "voyager E4M3": Config("voyager", "e4m3", lambda d, n: Voyager(d, n, "E4M3")),
    "voyager Float8": Config("voyager", "i8", lambda d, n: Voyager(d, n, "Float8")),
}


# --------------------------------------------------------------------------- the data


@dataclass
class Workload:
    """The arrays of one catalogue size, cached on disk for the child processes."""

    catalogue: np.ndarray  # keys 0..n-1
    new: np.ndarray  # keys n..n+N_NEW+N_SINGLE_ADDS-1
    update_keys: np.ndarray
    update_vectors: np.ndarray
    delete_keys: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # exact top-K keys of the final catalogue, best first
    update_order: np.ndarray = field(init=False)
    sorted_updates: np.ndarray = field(init=False)

    NAMES = (
        "catalogue", "new", "update_keys", "update_vectors", "delete_keys", "queries", "truth",
    )  # fmt: skip

    @classmethod
    def read(cls, folder: Path) -> Workload:
        return cls(*(np.load(folder / f"{name}.npy") for name in cls.NAMES))

    def current(self, keys: np.ndarray) -> np.ndarray:
        """The vectors the keys hold in the final catalogue (keys must be live or updated)."""
        n = len(self.catalogue)
        out = np.where(
            (keys < n)[:, None],
            self.catalogue[np.minimum(keys, n - 1)],
            self.new[np.clip(keys - n, 0, len(self.new) - 1)],
        )
        where = np.searchsorted(self.sorted_updates, keys)
        where = np.minimum(where, len(self.sorted_updates) - 1)
        hit = self.sorted_updates[where] == keys
        out[hit] = self.update_vectors[self.update_order[where[hit]]]
        return out

    def __post_init__(self) -> None:
        self.update_order = np.argsort(self.update_keys)
        self.sorted_updates = self.update_keys[self.update_order]


def _exact_top(matrix: np.ndarray, live: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-k of ``matrix`` (live rows) per query, best first."""
    best_rows = np.empty((len(queries), 0), np.int64)
    best = np.empty((len(queries), 0), np.float32)
    step = 1 << 16
    for start in range(0, len(matrix), step):
        sims = queries @ matrix[start : start + step].T
        sims[:, ~live[start : start + step]] = -np.inf
        rows = np.arange(start, start + sims.shape[1])
        sims = np.concatenate([best, sims], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(rows, (len(queries), len(rows)))], 1)
        keep = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(sims, keep, 1)
        best_rows = np.take_along_axis(rows, keep, 1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best_rows, order, 1)


def _top1_summary(cosines: np.ndarray) -> dict[str, float]:
    """Mean and percentiles of the top-1 neighbour cosine (column 0), and the mean top-10."""
    top1 = cosines[:, 0]
    summary = {f"p{q}": float(np.percentile(top1, q)) for q in (5, 25, 50, 75, 95)}
    return {"mean": float(top1.mean()), **summary, "mean_10th": float(cosines[:, -1].mean())}


def prepare_workload(n: int, seed: int) -> Path:
    """Make (or reuse) the cached arrays for ``n`` items; returns their folder."""
    folder = DATA_CACHE / f"vector-index-n{n}-seed{seed}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    extra = N_NEW + N_SINGLE_ADDS + N_UPDATE
    vectors = derived_item_vectors(n + extra, seed=seed)
    catalogue, new = vectors[:n], vectors[n : n + N_NEW + N_SINGLE_ADDS]
    update_vectors = vectors[n + N_NEW + N_SINGLE_ADDS :]
    rng = np.random.default_rng(seed + 1)
    old = rng.choice(n, size=N_UPDATE + N_DELETE_OLD, replace=False)
    update_keys, delete_old = old[:N_UPDATE], old[N_UPDATE:]
    delete_new = n + rng.choice(len(new), size=N_DELETE_NEW, replace=False)
    delete_keys = np.concatenate([delete_old, delete_new]).astype(np.int64)
    queries = interest_queries(catalogue, BATCH * N_BATCHES, seed=seed + 2)

    final = np.concatenate([catalogue, new])
    final[update_keys] = update_vectors
    live = np.ones(len(final), bool)
    live[delete_keys] = False
    truth = _exact_top(final, live, queries, K)  # rows are keys
    del final
    arrays = dict(
        catalogue=catalogue,
        new=new,
        update_keys=update_keys.astype(np.int64),
        update_vectors=update_vectors,
        delete_keys=delete_keys,
        queries=queries,
        truth=truth.astype(np.int64),
    )
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
    geometry = {
        "real": _top1_summary(neighbour_cosines(real_item_vectors())),
        "derived": _top1_summary(neighbour_cosines(catalogue)),
    }
    (folder / "geometry.json").write_text(json.dumps(geometry, indent=1) + "\n")
    (folder / "done").write_text(f"{time.perf_counter() - started:.1f} s\n")
    return folder


# --------------------------------------------------------------------------- measuring


def _reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    """Peak RSS since the process started or since :func:`_reset_peak`, MiB (``VmHWM``).

    Not ``ru_maxrss``: a spawned child inherits its parent's ``ru_maxrss`` (the
    fork before the exec counts), so it would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def _busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (``/proc/stat``), or NaN."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    except (OSError, ValueError):
        return float("nan")
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait_s: float, threshold: float = 0.3, window_s: float = 3.0) -> float:
    """Wait until the machine's other CPU load is below ``threshold`` cores; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        before = _busy_seconds()
        time.sleep(window_s)
        load = (_busy_seconds() - before) / window_s
        if not load >= threshold:  # NaN (no /proc/stat) counts as quiet
            break
        print(f"  waiting: other processes use {load:.1f} cores", flush=True)
    return time.perf_counter() - started


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / k


@contextmanager
def _timer(out: dict[str, Any], key: str) -> Iterator[None]:
    """Wall seconds in ``out[key]``, CPU seconds of the process (all threads) in ``key_cpu``."""
    started, cpu = time.perf_counter(), time.process_time()
    yield
    out[key] = time.perf_counter() - started
    out[f"{key}_cpu"] = time.process_time() - cpu


def _query_pass(
    index: VectorIndex, work: Workload, effort: int, threads: int, deleted: np.ndarray
) -> dict[str, Any]:
    """All query batches at one effort: timings, recalls, deleted keys returned, score errors."""
    queries = work.queries
    index.search(queries[:BATCH], K, effort, threads)  # warm-up
    times, cpu_times, keys, scores = [], [], [], []
    for start in range(0, len(queries), BATCH):
        began, cpu = time.perf_counter(), time.process_time()
        k_, s_ = index.search(queries[start : start + BATCH], K, effort, threads)
        times.append(time.perf_counter() - began)
        cpu_times.append(time.process_time() - cpu)
        keys.append(k_)
        scores.append(s_)
    found, found_scores = np.concatenate(keys), np.concatenate(scores)
    top = found[:, :10]
    valid = top >= 0
    leaked = np.isin(found, deleted)
    safe = np.where(valid & ~np.isin(top, deleted), top, work.truth[:, :1])
    exact = np.einsum("qd,qkd->qk", queries, work.current(safe.ravel()).reshape(*safe.shape, -1))
    error = np.abs(found_scores[:, :10] - exact)[valid & ~np.isin(top, deleted)]
    batch_ms = statistics.median(times) * 1e3
    batch_cpu_ms = statistics.median(cpu_times) * 1e3
    return {
        "effort": effort,
        "threads": threads,
        "recall_at_10": _recall(found, work.truth, 10),
        "recall_at_100": _recall(found, work.truth, K),
        "batch_ms": batch_ms,
        "us_per_query": batch_ms * 1e3 / BATCH,
        "batch_cpu_ms": batch_cpu_ms,  # CPU time: robust to other load, = latency at 1 thread
        "cpu_us_per_query": batch_cpu_ms * 1e3 / BATCH,
        "deleted_returned": int(leaked.sum()),
        "missing_results": int((found < 0).sum()),
        "score_error_max": float(error.max()) if error.size else float("nan"),
        "score_error_mean": float(error.mean()) if error.size else float("nan"),
    }


def _probe_deleted(index: VectorIndex, work: Workload, effort: int) -> int:
    """Deleted keys returned when querying with the deleted items' own (old) vectors."""
    n = len(work.catalogue)
    keys = work.delete_keys
    vectors = np.where(
        (keys < n)[:, None],
        work.catalogue[np.minimum(keys, n - 1)],
        work.new[np.maximum(keys - n, 0)],
    )
    leaked = 0
    for start in range(0, len(vectors), BATCH):
        found, _ = index.search(vectors[start : start + BATCH], K, effort, BUILD_THREADS)
        leaked += int(np.isin(found, keys).sum())
    return leaked


def measure(name: str, folder: str, n: int) -> dict[str, Any]:
    """Everything for one configuration, in a fresh process (see the module docstring)."""
    config = CONFIGS[name]
    work = Workload.read(Path(folder))
    gc.collect()
    out: dict[str, Any] = {"config": name, "library": config.library, "items": n}
    out["precision"], out["note"] = config.precision, config.note
    rss0 = current_rss_mib()
    _reset_peak()
    index = config.make(DIM, n)
    out["effort_name"] = index.effort_name
    keys = np.arange(n, dtype=np.int64)
    with _timer(out, "build_s"):
        index.prepare(work.catalogue, BUILD_THREADS)
        index.add(keys, work.catalogue, BUILD_THREADS)
    out["build_items_per_s"] = n / out["build_s"]
    out["index_mib"] = current_rss_mib() - rss0
    out["build_peak_mib"] = _peak_mib() - rss0

    new_keys = np.arange(n, n + len(work.new), dtype=np.int64)
    with _timer(out, "add_1000_s"):
        index.add(new_keys[:N_NEW], work.new[:N_NEW], BUILD_THREADS)
    single, single_cpu = [], []
    for key, vector in zip(new_keys[N_NEW:], work.new[N_NEW:], strict=True):
        began, cpu = time.perf_counter(), time.process_time()
        index.add(np.array([key]), vector[None, :], 1)
        single.append(time.perf_counter() - began)
        single_cpu.append(time.process_time() - cpu)
    out["add_one_ms"] = statistics.median(single) * 1e3
    out["add_one_cpu_ms"] = statistics.median(single_cpu) * 1e3
    with _timer(out, "update_1000_s"):
        index.update(work.update_keys, work.update_vectors, BUILD_THREADS)
    with _timer(out, "delete_1100_s"):
        index.delete(work.delete_keys)
    out["live_count"], out["expected_count"] = (
        index.count(),
        n + len(work.new) - len(work.delete_keys),
    )
    out["rss_after_changes_mib"] = current_rss_mib() - rss0

    sweep = []
    for effort in index.efforts():
        point = _query_pass(index, work, effort, 1, work.delete_keys)
        sweep.append(point)
        print(
            f"  [{name}] {index.effort_name}={effort}: r@10 {point['recall_at_10']:.3f} "
            f"r@100 {point['recall_at_100']:.3f} {point['batch_ms']:.1f} ms/batch",
            flush=True,
        )
        gain = point["recall_at_100"] - (sweep[-2]["recall_at_100"] if len(sweep) > 1 else 0.0)
        if point["recall_at_100"] >= STOP_AT or gain < PLATEAU:
            break
    out["sweep"] = sweep
    picks: dict[str, Any] = {}
    for target in RECALL_TARGETS:
        reached = [p for p in sweep if p["recall_at_100"] >= target]
        chosen = reached[0] if reached else max(sweep, key=lambda p: p["recall_at_100"])
        two = _query_pass(index, work, chosen["effort"], 2, work.delete_keys)
        picks[str(target)] = {"one_thread": chosen, "two_threads": two, "reached": bool(reached)}
    out["picks"] = picks
    effort95 = picks[str(RECALL_TARGETS[0])]["one_thread"]["effort"]
    top_effort = sweep[-1]["effort"]
    out["deleted_probe_returned"] = _probe_deleted(index, work, top_effort)

    # Reachability: an item's own vector must find it (top 10). New and updated keys, and a
    # sample of all live keys (graph nodes left unreachable by a build would show here).
    rng = np.random.default_rng(7)
    live_keys = np.setdiff1d(np.arange(n + len(work.new)), work.delete_keys)
    changed = np.concatenate([new_keys, work.update_keys])
    changed = changed[~np.isin(changed, work.delete_keys)]
    sample = rng.choice(live_keys, size=min(SELF_SAMPLE, len(live_keys)), replace=False)
    for label, probe in (("changed", changed), ("sample", sample)):
        hits = 0
        for start in range(0, len(probe), BATCH):
            chunk = probe[start : start + BATCH]
            found, _ = index.search(work.current(chunk), 10, max(effort95, 10), BUILD_THREADS)
            hits += int((found == chunk[:, None]).any(axis=1).sum())
        out[f"self_found_at_10_{label}"] = hits / len(probe)

    # Churn: updates of live keys with their own vectors (the ground truth stays the same).
    gc.collect()
    rss_before = current_rss_mib()
    churn_times, churn_cpu = [], []
    for _ in range(CHURN_ROUNDS):
        chosen_keys = rng.choice(live_keys, size=N_UPDATE, replace=False)
        vectors = work.current(chosen_keys)
        began, cpu = time.perf_counter(), time.process_time()
        index.update(chosen_keys, vectors, BUILD_THREADS)
        churn_times.append(time.perf_counter() - began)
        churn_cpu.append(time.process_time() - cpu)
    gc.collect()
    out["churn_update_1000_s"] = statistics.median(churn_times)
    out["churn_update_1000_cpu_s"] = statistics.median(churn_cpu)
    out["churn_rss_growth_mib"] = current_rss_mib() - rss_before
    out["after_churn"] = _query_pass(index, work, effort95, 1, work.delete_keys)
    out["after_churn_count"] = index.count()

    path = _saved_path(Path(folder), name)  # kept for the interleaved query timings
    path.parent.mkdir(parents=True, exist_ok=True)
    with _timer(out, "save_s"):
        files = index.save(path)
    out["file_bytes"] = sum(f.stat().st_size for f in files)
    can_view = index.can_view
    del index
    gc.collect()
    loaded = config.make(DIM, n)
    with _timer(out, "load_s"):
        loaded.load(path)
    out["after_load"] = _query_pass(loaded, work, effort95, 1, work.delete_keys)
    out["after_load_count"] = loaded.count()
    del loaded
    gc.collect()
    if can_view:
        viewed = config.make(DIM, n)
        try:
            with _timer(out, "view_s"):
                viewed.view(path)
            out["after_view"] = _query_pass(viewed, work, effort95, 1, work.delete_keys)
        except Exception as exc:  # a library that cannot map this index type
            out["view_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        del viewed
    out["peak_mib"] = _peak_mib() - rss0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    return out


def _saved_path(folder: Path, name: str) -> Path:
    return folder / "saved" / (name.replace(" ", "-") + ".index")


def interleaved(jobs: list[tuple[str, int]], folder: str, n: int) -> dict[str, Any]:
    """Query timings of the saved indexes taken in turns, so other load hits each alike.

    Every (config, effort) of ``jobs`` makes one pass over the query batches per round,
    one thread, for ``INTERLEAVED_ROUNDS`` rounds; its figure is the median over rounds
    of each pass's median batch time (CPU and wall).
    """
    work = Workload.read(Path(folder))
    indexes: dict[str, VectorIndex] = {}
    for name, _ in jobs:
        if name not in indexes:
            indexes[name] = CONFIGS[name].make(DIM, n)
            indexes[name].load(_saved_path(Path(folder), name))
    cpu: dict[tuple[str, int], list[float]] = {job: [] for job in jobs}
    wall: dict[tuple[str, int], list[float]] = {job: [] for job in jobs}
    queries = work.queries
    for _ in range(INTERLEAVED_ROUNDS):
        for name, effort in jobs:
            index = indexes[name]
            index.search(queries[:BATCH], K, effort, 1)  # warm-up
            walls, cpus = [], []
            for start in range(0, len(queries), BATCH):
                began, began_cpu = time.perf_counter(), time.process_time()
                index.search(queries[start : start + BATCH], K, effort, 1)
                walls.append(time.perf_counter() - began)
                cpus.append(time.process_time() - began_cpu)
            cpu[name, effort].append(statistics.median(cpus) * 1e3)
            wall[name, effort].append(statistics.median(walls) * 1e3)
    out: dict[str, Any] = {}
    for name, effort in jobs:
        out.setdefault(name, {})[str(effort)] = {
            "batch_cpu_ms": statistics.median(cpu[name, effort]),
            "batch_ms": statistics.median(wall[name, effort]),
            "rounds_cpu_ms": cpu[name, effort],
        }
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    return out


def _child(target: Any, args: tuple[Any, ...], conn: Any) -> None:
    try:
        conn.send(("ok", target(*args)))
    except BaseException as exc:  # report any failure to the parent instead of hanging
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_isolated(
    name: str, folder: Path, n: int, timeout_s: float, target: Any = None, args: Any = None
) -> dict[str, Any]:
    """``measure`` (or ``target(*args)``) in a spawned process, killed if it runs too long."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    call = (measure, (name, str(folder), n)) if target is None else (target, args)
    process = context.Process(target=_child, args=(*call, send), daemon=True)
    started, busy = time.perf_counter(), _busy_seconds()
    process.start()
    send.close()
    result: dict[str, Any]
    if receive.poll(timeout_s):
        try:
            status, payload = receive.recv()
        except EOFError:
            status, payload = "error", f"the process died (exit code {process.exitcode})"
        result = payload if status == "ok" else {"config": name, "items": n, "error": payload}
    else:
        result = {"config": name, "items": n, "error": f"killed after {timeout_s:.0f} s"}
    process.join(10)
    if process.is_alive():
        process.kill()
        process.join()
    result["wall_s"] = time.perf_counter() - started
    if "cpu_s" in result:  # CPU the rest of the machine used meanwhile, in cores
        other = _busy_seconds() - busy - result["cpu_s"]
        result["other_load_cores"] = max(0.0, other) / result["wall_s"]
    return result


# --------------------------------------------------------------------------- the report


def _fmt(value: float | None, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _mib(nbytes: float) -> float:
    return nbytes / (1 << 20)


def _leaks(row: dict[str, Any]) -> int:
    passes = [*row["sweep"], row["after_churn"], row["after_load"]]
    passes += [
        p for pick in row["picks"].values() for p in (pick["one_thread"], pick["two_threads"])
    ]
    if "after_view" in row:
        passes.append(row["after_view"])
    return sum(p["deleted_returned"] for p in passes) + row["deleted_probe_returned"]


def _wall_cpu(r: dict[str, Any], key: str, scale: float, spec: str) -> str:
    """``wall (CPU)`` of a timed phase, scaled (e.g. 1e3 for ms)."""
    wall, cpu = r[key] * scale, r.get(f"{key}_cpu")
    return f"{wall:{spec}} ({cpu * scale:{spec}})" if cpu is not None else f"{wall:{spec}}"


def _tables(rows: list[dict[str, Any]], n: int) -> list[str]:
    ok = [r for r in rows if "error" not in r]
    lines = [f"### {n:,} items", ""]
    lines += [
        "Build and changes, 2 threads; wall time (CPU time of the process in brackets):",
        "",
        "| config | prec. | build s | items/s | add 1k ms | add 1 ms | update 1k ms "
        "| delete 1.1k ms | churn update 1k ms | other load |",
        "|---|---|" + "---:|" * 8,
    ]
    for r in ok:
        churn = f"{r['churn_update_1000_s'] * 1e3:,.0f}"
        if "churn_update_1000_cpu_s" in r:
            churn += f" ({r['churn_update_1000_cpu_s'] * 1e3:,.0f})"
        lines.append(
            f"| {r['config']} | {r['precision']} | {_wall_cpu(r, 'build_s', 1, ',.1f')} "
            f"| {r['build_items_per_s']:,.0f} | {_wall_cpu(r, 'add_1000_s', 1e3, ',.0f')} "
            f"| {r['add_one_ms']:.2f} | {_wall_cpu(r, 'update_1000_s', 1e3, ',.0f')} "
            f"| {_wall_cpu(r, 'delete_1100_s', 1e3, ',.1f')} | {churn} "
            f"| {_fmt(r.get('other_load_cores'), '.2f')} |"
        )
    lines += [
        "",
        "Memory, correctness and persistence:",
        "",
        "| config | index MiB | peak MiB | churn +MiB | live ok | deleted returned | self@10 "
        "| churn r@100 | save s | load s | view s | file MiB |",
        "|---|" + "---:|" * 11,
    ]
    for r in ok:
        view = _fmt(r.get("view_s"), ".3f") if "view_s" in r else "-"
        live = "yes" if r["live_count"] == r["expected_count"] else str(r["live_count"])
        lines.append(
            f"| {r['config']} | {r['index_mib']:,.0f} | {r['build_peak_mib']:,.0f} "
            f"| {r['churn_rss_growth_mib']:+.0f} | {live} | {_leaks(r)} "
            f"| {r['self_found_at_10_sample']:.4f} | {r['after_churn']['recall_at_100']:.3f} "
            f"| {r['save_s']:.2f} | {r['load_s']:.2f} | {view} | {_mib(r['file_bytes']):,.1f} |"
        )
    lines += [
        "",
        "Queries: batches of 256, k = 100; the smallest effort reaching recall@100 ≥ 0.95 and "
        "≥ 0.99 (`*`: not reached, best of the sweep shown). Times at 1 thread: `CPU` is the "
        "process's CPU time per batch (≈ the latency on an idle core), `wall` the elapsed time; "
        "`interleaved`: CPU ms per batch again, all configurations' saved indexes loaded in one "
        "process and timed in turns (median of 3 rounds), the fairest comparison when other "
        "load comes and goes. `max |Δ|`: largest error of a returned top-10 score against the "
        "exact inner product.",
        "",
        "| config | prec. | target | effort | r@10 | r@100 | CPU ms/batch | interleaved "
        "| µs/query | wall ms/batch | wall ms/batch 2 thr | max |Δ| score |",
        "|---|---|---:|---|" + "---:|" * 8,
    ]
    for r in ok:
        for target, pick in r["picks"].items():
            one, two = pick["one_thread"], pick["two_threads"]
            effort = "exact" if r["effort_name"] == "-" else f"{r['effort_name']}={one['effort']}"
            turns = r.get("interleaved", {}).get(str(one["effort"]), {}).get("batch_cpu_ms")
            lines.append(
                f"| {r['config']} | {r['precision']} | {target}{'' if pick['reached'] else '*'} "
                f"| {effort} | {one['recall_at_10']:.3f} | {one['recall_at_100']:.3f} "
                f"| {one.get('batch_cpu_ms', float('nan')):,.1f} | {_fmt(turns, ',.1f')} "
                f"| {one.get('cpu_us_per_query', float('nan')):,.0f} | {one['batch_ms']:,.1f} "
                f"| {two['batch_ms']:,.1f} | {one['score_error_max']:.4f} |"
            )
            if r["effort_name"] == "-":
                break
    for r in rows:
        if "error" in r:
            lines += ["", f"- **{r['config']}**: {r['error']}"]
    lines += [
        "",
        "<details><summary>Effort sweeps (1 thread)</summary>",
        "",
        "| config | effort | r@10 | r@100 | CPU ms/batch | wall ms/batch |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in ok:
        for p in r["sweep"]:
            effort = "exact" if r["effort_name"] == "-" else f"{r['effort_name']}={p['effort']}"
            lines.append(
                f"| {r['config']} | {effort} | {p['recall_at_10']:.3f} "
                f"| {p['recall_at_100']:.3f} | {p.get('batch_cpu_ms', float('nan')):,.1f} "
                f"| {p['batch_ms']:,.1f} |"
            )
    lines += ["", "</details>"]
    return lines


VERDICT = """\
## Which and why

See the figures above (they are regenerated; this paragraph was written for the run recorded
in the JSON). **usearch** (`usearch.index.Index`, HNSW) is the choice for driftrec's item
index: among the graph indexes it has the fastest builds and batch queries on 1-2 threads, it
is the only one with native float16/int8 storage that keeps recall@100 ≥ 0.95 at a moderate
`expansion_search` — for int8 only when the vectors are quantised before they reach it
(`i8 rounded`: `rint(x·127·3)`; usearch's own float→int8 conversion truncates `x·127`, which
leaves a 384-d unit vector's components, σ ≈ 0.05, a handful of levels and caps recall@10
near 0.92 however deep the search; driftrec's `models/vector_index.py` rounds this way) —
its `remove()` really frees the slot (no memory growth under update churn, deleted keys never
come back), and it saves/loads/memory-maps a single file. Its one
sharp edge: `add()` refuses a key it already holds, so an update is `remove(keys)` then
`add(keys, vectors)`. hnswlib and voyager (hnswlib inside) are close on recall but slower to
build and only hide deleted items (`mark_deleted`, one call per key); voyager's `Float8` is a
fixed-point [-1, 1] format that loses too much precision for 384-d unit vectors. faiss HNSW
cannot remove at all (tombstones + `IDSelector`, growing on every update); faiss IVF supports
`remove_ids` but needs training and scans far more vectors than HNSW for recall@100 ≥ 0.95. At
10^4-10^5 items the exact numpy matmul is itself a few ms per batch of 256, so an ANN index
only pays off towards 10^6 items or when latency per batch must stay far below that.
"""


def _geometry_text(g: dict[str, float]) -> str:
    return (
        f"{g['mean']:.3f} ({g['p5']:.3f} / {g['p50']:.3f} / {g['p95']:.3f}; {g['mean_10th']:.3f})"
    )


def write_report(figures: dict[str, Any], markdown: Path) -> None:
    """The markdown page: provenance, one pair of tables per catalogue size, the verdict."""
    m = figures["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in figures["library_versions"].items() if v)
    lines = [
        "# Vector index libraries for the item index",
        "",
        "Generated by `python -m benchmarks.vector_index_libraries` "
        "(module `benchmarks/vector_index_libraries.py`, whose docstring describes the "
        "protocol); figures in `vector-index-libraries.json`.",
        "",
        f"*{figures['date']}; `{figures['command']}`; machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, {'GPU ' + m['gpu'] if m.get('gpu') else 'no GPU'}; "
        f"Python {m['python']}; {versions}.*",
        "",
        f"384-d unit vectors derived from MiniLM item vectors "
        f"(`benchmarks/catalogue_vectors.py`); {N_BATCHES} batches of {BATCH} interest queries, "
        f"k = {K}; recall against exact numpy top-k of the final catalogue. HNSW: M = {HNSW_M}, "
        f"ef_construction = {HNSW_EF_CONSTRUCTION} for every library; IVF: nlist ≈ 2·√n. "
        "`index MiB`: RSS after the build minus before; `peak MiB`: peak RSS during build minus "
        "RSS before; `live ok`: the index counts exactly the live items; `deleted returned`: "
        "deleted keys found in any result (every sweep point, 2 threads, after churn, reloaded, "
        "and 1,100 queries that are the deleted items' own vectors) — must be 0; `churn`: RSS "
        "growth and recall@100 (effort for ≥ 0.95) after 10 × 1,000 more updates; `self@10`: "
        "share of 10,000 random live items found in the top 10 of a query with their own vector "
        "(an item the graph cannot reach would miss); `other load`: "
        "CPU cores other processes used meanwhile (figures with more than ~0.3 are slowed by "
        "them).",
    ]
    geometry = figures.get("geometry", {})
    if geometry:
        first = next(iter(geometry.values()))
        lines += [
            "",
            "Top-1 neighbour cosine of 2,000 random items (mean; p5 / p50 / p95; mean of the "
            "10th): real MiniLM vectors "
            + _geometry_text(first["real"])
            + "; derived "
            + "; ".join(f"{int(n):,}: " + _geometry_text(g["derived"]) for n, g in geometry.items())
            + ".",
        ]
    for n in sorted({int(r["items"]) for r in figures["results"]}):
        rows = [r for r in figures["results"] if int(r["items"]) == n]
        order = list(CONFIGS)
        rows.sort(key=lambda r: order.index(r["config"]) if r["config"] in order else len(order))
        lines += ["", *_tables(rows, n)]
    if figures.get("skipped"):
        lines += ["", "Skipped (not importable): " + ", ".join(figures["skipped"]) + "."]
    lines += ["", VERDICT.rstrip()]
    markdown.write_text("\n".join(lines) + "\n")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for package in LIBRARY_PACKAGES.values():
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


@app.command()
def main(
    items: Annotated[
        list[int], typer.Option(help="Catalogue size; repeat for several (e.g. 1e5 and 1e6).")
    ] = [100_000],  # noqa: B006 - typer needs a list default
    only: Annotated[
        str, typer.Option(help="Comma-separated config names (default: all); see CONFIGS.")
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed of the vectors and queries.")] = 0,
    timeout_s: Annotated[float, typer.Option(help="Kill a configuration after this long.")] = 1800,
    results: Annotated[Path, typer.Option(help="The JSON figures.")] = DOCS
    / "vector-index-libraries.json",
    markdown: Annotated[Path, typer.Option(help="The page to write.")] = DOCS
    / "vector-index-libraries.md",
    wait_quiet_s: Annotated[
        float, typer.Option(help="Before each config, wait up to this long for an idle machine.")
    ] = 600,
    report_only: Annotated[
        bool, typer.Option(help="Only rewrite the page from the JSON figures.")
    ] = False,
    keep_saved: Annotated[
        bool, typer.Option(help="Keep the saved indexes (in .cache/bench) after the run.")
    ] = False,
    fresh: Annotated[
        bool, typer.Option(help="Drop earlier figures instead of merging by (config, items).")
    ] = False,
) -> None:
    """Measure the configurations at each size, merge into the JSON, write the page."""
    if report_only:
        write_report(json.loads(results.read_text()), markdown)
        print(f"report: {markdown}")
        return
    names = [s.strip() for s in only.split(",") if s.strip()] or list(CONFIGS)
    unknown = set(names) - set(CONFIGS)
    if unknown:
        raise typer.BadParameter(f"unknown config(s) {sorted(unknown)}; known: {list(CONFIGS)}")
    skipped = sorted(
        {CONFIGS[c].library for c in names if not importlib.util.find_spec(CONFIGS[c].library)}
    )
    for library in skipped:
        print(f"skipping {library}: not importable (pip install {LIBRARY_PACKAGES[library]})")
    names = [c for c in names if CONFIGS[c].library not in skipped]
    DATA_CACHE.mkdir(parents=True, exist_ok=True)
    previous: list[dict[str, Any]] = []
    if results.exists() and not fresh:
        previous = json.loads(results.read_text()).get("results", [])
    fresh_rows: list[dict[str, Any]] = []
    geometry: dict[str, Any] = {}
    if results.exists() and not fresh:
        geometry = json.loads(results.read_text()).get("geometry", {})
    for n in items:
        print(f"[{n:,} items] preparing vectors, queries and exact ground truth", flush=True)
        folder = prepare_workload(n, seed)
        geometry[str(n)] = json.loads((folder / "geometry.json").read_text())
        for name in names:
            print(f"[{n:,} items] {name}", flush=True)
            waited = wait_for_quiet(wait_quiet_s)
            row = run_isolated(name, folder, n, timeout_s)
            row["waited_for_quiet_s"] = waited
            fresh_rows.append(row)
            if "error" in row:
                print(f"  [{name}] FAILED: {row['error']}", flush=True)
            else:
                pick = row["picks"][str(RECALL_TARGETS[0])]["one_thread"]
                print(
                    f"  [{name}] build {row['build_s']:.1f} s, {row['effort_name']}="
                    f"{pick['effort']}: r@100 {pick['recall_at_100']:.3f}, "
                    f"{pick['batch_ms']:.1f} ms/batch, deleted returned {_leaks(row)}, "
                    f"wall {row['wall_s']:.0f} s",
                    flush=True,
                )
        done_here = [r for r in fresh_rows if int(r["items"]) == n and "error" not in r]
        jobs = sorted(
            {
                (r["config"], p["one_thread"]["effort"])
                for r in done_here
                for p in r["picks"].values()
            },
            key=lambda job: (list(CONFIGS).index(job[0]), job[1]),
        )
        if jobs:
            print(f"[{n:,} items] interleaved query timings ({len(jobs)} config/effort pairs)")
            wait_for_quiet(wait_quiet_s)
            timings = run_isolated(
                "interleaved", folder, n, timeout_s, target=interleaved, args=(jobs, str(folder), n)
            )
            if "error" in timings:
                print(f"  interleaved timings FAILED: {timings['error']}", flush=True)
            for r in done_here:
                r["interleaved"] = timings.get(r["config"], {})
                r["interleaved_other_load_cores"] = timings.get("other_load_cores")
        if not keep_saved:
            shutil.rmtree(folder / "saved", ignore_errors=True)
    done = {(r["config"], int(r["items"])) for r in fresh_rows}
    merged = [r for r in previous if (r["config"], int(r["items"])) not in done] + fresh_rows
    figures = {
        "benchmark": "vector-index-libraries",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            shlex.quote(a)
            for a in ["python", "-m", "benchmarks.vector_index_libraries", *sys.argv[1:]]
        ),
        "machine": describe_machine(),
        "library_versions": _versions(),
        "settings": {
            "dim": DIM,
            "k": K,
            "batch": BATCH,
            "batches": N_BATCHES,
            "hnsw_m": HNSW_M,
            "hnsw_ef_construction": HNSW_EF_CONSTRUCTION,
            "build_threads": BUILD_THREADS,
            "seed": seed,
        },
        "skipped": skipped,
        "geometry": geometry,
        "results": merged,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(figures, indent=1) + "\n")
    write_report(figures, markdown)
    print(f"figures: {results}\nreport: {markdown}")


if __name__ == "__main__":
    app()
