"""A cache of text vectors, so that each item's text is encoded once per model version.

Encoding is the engine's most expensive step; an item's text rarely changes,
and the same catalogue is replayed again and again in evaluation. The cache
sits in front of a :class:`~models.encoder.TextEncoder` and offers the same
``encode`` / ``dim`` / ``model_version``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rocksdict import Options, Rdict, WriteBatch

from models.encoder import TextEncoder
from models.remote_encoder import RemoteEncoder

__all__ = ["CachedEncoder"]


class CachedEncoder:
    """A :class:`~models.encoder.TextEncoder` that remembers every vector it has made.

    A vector is stored under the key ``model_version | token limit | sha1(text)``:
    the encoder's ``model_version`` (model directory contents and pooling) and
    the token limit in force both change the vector, so a new model, pooling
    or limit never reads a stale vector, while the same text under the same
    model is encoded only once, across calls and, with a ``path``, across
    restarts.

    Lookups go first to a bounded in-memory LRU map, then to the optional
    persistent RocksDB store (values: the raw little-endian float32 bytes);
    whatever is still missing is encoded in one batched
    :meth:`TextEncoder.encode` call, with duplicates inside the call encoded
    once, and written back to both.

    Not thread-safe: one instance per worker thread or event loop.

    Parameters
    ----------
    encoder
        The encoder to call on a miss.
    path
        Directory of a RocksDB store for the vectors; ``None`` keeps them in
        memory only. One process at a time may open a store.
    memory_items
        Most vectors kept in memory (least recently used ones are evicted
        first); 0 keeps none in memory.

    Attributes
    ----------
    hits : int
        Texts (counted per position in the input) served from memory or the store.
    misses : int
        Texts that were not cached when asked for (duplicates inside one call
        each count, though the text is encoded once).
    store_hits : int
        The part of ``hits`` that came from the persistent store.

    Examples
    --------
    >>> cached = CachedEncoder(TextEncoder(device="cpu"))
    >>> first = cached.encode(["a quiet drama", "a loud comedy", "a quiet drama"])
    >>> cached.hits, cached.misses, cached.encoder.texts_encoded
    (0, 3, 2)
    >>> again = cached.encode(["a loud comedy", "a quiet drama"])
    >>> cached.hits, cached.misses
    (2, 3)
    >>> bool((again == first[[1, 0]]).all())
    True
    >>> cached.close()

    """

    def __init__(
        self,
        encoder: TextEncoder | RemoteEncoder,
        *,
        path: str | Path | None = None,
        memory_items: int = 100_000,
    ) -> None:
        if memory_items < 0:
            raise ValueError(f"memory_items must be >= 0, got {memory_items}")
        self.encoder = encoder
        self.memory_items = memory_items
        self.path = Path(path) if path is not None else None
        self._memory: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._store: Any = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._store = Rdict(str(self.path), Options(raw_mode=True))
        self.hits = 0
        self.misses = 0
        self.store_hits = 0

    @property
    def dim(self) -> int:
        """Length of the vectors."""
        return self.encoder.dim

    @property
    def model_version(self) -> str:
        """The wrapped encoder's model version."""
        return self.encoder.model_version

    def __len__(self) -> int:
        """Vectors held in memory."""
        return len(self._memory)

    def __repr__(self) -> str:
        return (
            f"CachedEncoder({self.encoder!r}, path={self.path}, memory_items={self.memory_items}, "
            f"hits={self.hits}, misses={self.misses})"
        )

    def _key(self, text: str, token_limit: int) -> bytes:
        prefix = f"{self.encoder.model_version}\x00{token_limit}\x00".encode()
        return prefix + hashlib.sha1(text.encode("utf-8")).digest()

    def _remember(self, key: bytes, vector: np.ndarray) -> None:
        if self.memory_items == 0:
            return
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def _from_store(self, keys: list[bytes]) -> list[np.ndarray | None]:
        """Vectors of ``keys`` in the persistent store (``None`` where absent or damaged)."""
        if self._store is None or not keys:
            return [None] * len(keys)
        found: list[np.ndarray | None] = []
        for value in self._store[keys]:
            vector = None if value is None else np.frombuffer(value, dtype="<f4")
            found.append(vector if vector is not None and vector.shape == (self.dim,) else None)
        return found

    def encode(self, texts: Sequence[str], *, max_tokens: int | None = None) -> np.ndarray:
        """Encode texts like :meth:`TextEncoder.encode`, computing only the uncached ones.

        Returns float32 ``[n, dim]`` of unit rows in input order (a fresh
        array the caller may modify).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, got a single str")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{position}] is a {type(text).__name__}; expected str")
        if self.path is not None and self._store is None:
            raise RuntimeError(
                f"the vector cache at {self.path} is closed; open a new CachedEncoder"
            )
        token_limit = self.encoder.resolve_max_tokens(max_tokens)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)

        # Positions of each distinct key not in memory, in first-seen order.
        not_in_memory: dict[bytes, list[int]] = {}
        for position, text in enumerate(texts):
            key = self._key(text, token_limit)
            cached = self._memory.get(key)
            if cached is not None:
                self._memory.move_to_end(key)
                vectors[position] = cached
                self.hits += 1
            else:
                not_in_memory.setdefault(key, []).append(position)

        keys = list(not_in_memory)
        to_encode: list[bytes] = []
        for key, stored in zip(keys, self._from_store(keys), strict=True):
            positions = not_in_memory[key]
            if stored is None:
                to_encode.append(key)
                self.misses += len(positions)
                continue
            vectors[positions] = stored
            self._remember(key, stored.copy())
            self.hits += len(positions)
            self.store_hits += len(positions)

        if to_encode:
            encoded = self.encoder.encode(
                [texts[not_in_memory[key][0]] for key in to_encode], max_tokens=max_tokens
            )
            batch = WriteBatch(raw_mode=True) if self._store is not None else None
            for key, vector in zip(to_encode, encoded, strict=True):
                vectors[not_in_memory[key]] = vector
                self._remember(key, vector.copy())
                if batch is not None:
                    batch.put(key, vector.astype("<f4").tobytes())
            if batch is not None:
                self._store.write(batch)
        return vectors

    def close(self) -> None:
        """Flush and close the persistent store (if any) and drop the in-memory vectors."""
        if self._store is not None:
            self._store.close()
            self._store = None
        self._memory.clear()

    def __enter__(self) -> CachedEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
