"""The item catalogue: ids ↔ dense indices, texts and the item-vector matrix.

Ranking covers the whole catalogue with one matrix product, so every item
has a row in ``vectors`` (float32, unit norm). Items referenced by events
before the catalogue knows them get a *provisional* text (the event's
``item_text`` or the id) and are re-encoded once their real record arrives.
Deleted items keep their index (indices are never reused, so collaborative
counts stay aligned) but are no longer recommended. Every change of an item's
vector or availability is logged (:meth:`ItemCatalog.pop_changes`), so a vector
index follows the catalogue in time proportional to the changes.
"""

from __future__ import annotations

import heapq
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.contracts import CatalogItem
from models.item_rules import ItemRules

__all__ = ["ItemCatalog", "TextEncoderLike"]


class TextEncoderLike(Protocol):
    """What the engine needs from an encoder (TextEncoder, CachedEncoder, remote)."""

    @property
    def dim(self) -> int: ...

    @property
    def model_version(self) -> str: ...

    def encode(self, texts: Sequence[str], *, max_tokens: int | None = None) -> np.ndarray: ...


class ItemCatalog:
    """Item ids, texts and vectors, indexed densely for vectorised ranking.

    Parameters
    ----------
    dim
        Vector dimension (the encoder's).
    rules
        Which items may be recommended (availability, tags, ids); expiry is
        applied by :meth:`expire` at event time.

    Examples
    --------
    >>> catalog = ItemCatalog(dim=2)
    >>> catalog.reference("m1", text_hint="Heat (1995)")
    0
    >>> catalog.pending_texts()
    [(0, 'Heat (1995)')]
    >>> catalog.set_vectors([0], np.array([[3.0, 4.0]]))
    >>> catalog.vectors[0].tolist(), catalog.pending_texts()
    ([0.6000000238418579, 0.800000011920929], [])
    """

    def __init__(self, dim: int, rules: ItemRules | None = None) -> None:
        self.dim = dim
        self.rules = rules or ItemRules()
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        # Parallel lists and arrays, not an object per item: 10^6 small objects would be
        # walked by every full garbage collection (pauses of seconds).
        self._texts: list[str] = []
        # Tags (lower case) per item, one shared tuple per distinct combination: a few
        # bytes an item at 10^6 items. They name clusters (models/cluster_labels.py).
        self._tags: list[tuple[str, ...]] = []
        self._tag_sets: dict[tuple[str, ...], tuple[str, ...]] = {(): ()}
        self.tag_df: Counter[str] = Counter()  #: items carrying each tag
        self._provisional = np.zeros(64, bool)
        self._vectors = np.zeros((64, dim), np.float32)
        self._has_vector = np.zeros(64, bool)
        self._active = np.zeros(64, bool)
        self._recommendable = np.zeros(64, bool)
        self._eligible = np.zeros(64, bool)  # the rules allow it (available, tags, id)
        self._expired = np.zeros(64, bool)
        self._expires = np.full(64, np.inf)  # event time it stops being recommendable
        self._expiry_heap: list[tuple[float, int]] = []
        self._now = -np.inf  # the latest event time expire() was told
        self._pending: dict[int, str] = {}
        self._changed: dict[int, None] = {}
        self.version = 0  #: bumped on every change that alters rankings

    # ----------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._index

    def index_of(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    def id_of(self, index: int) -> str:
        return self._ids[index]

    def text_of(self, index: int) -> str:
        return self._texts[index]

    def tags_of(self, index: int) -> tuple[str, ...]:
        """The item's tags, lower case (empty for an item known only from events)."""
        return self._tags[index]

    def _set_tags(self, idx: int, tags: Iterable[str]) -> None:
        folded = tuple(dict.fromkeys(t.strip().casefold() for t in tags if t.strip()))
        old = self._tags[idx]
        if folded == old:
            return
        self.tag_df.subtract(old)
        self.tag_df.update(folded)
        self._tags[idx] = self._tag_sets.setdefault(folded, folded)

    def rules_of(self, index: int) -> dict[str, Any]:
        """What the business rules say of an item: allowed, its expiry, whether it passed."""
        expires = float(self._expires[index])
        return {
            "allowed_by_rules": bool(self._eligible[index]),
            "expires_at": None if np.isinf(expires) else expires,
            "expired": bool(self._expired[index]),
        }

    def is_provisional(self, item_id: str) -> bool:
        idx = self._index.get(item_id)
        return idx is not None and bool(self._provisional[idx])

    @property
    def vectors(self) -> np.ndarray:
        """``[n_items, dim]`` unit vectors (zero rows for items not encoded yet)."""
        return self._vectors[: len(self._ids)]

    @property
    def recommendable(self) -> np.ndarray:
        """``[n_items]`` mask of items that may be recommended (active, encoded, allowed by
        the rules, not expired); a view."""
        return self._recommendable[: len(self._ids)]

    def pop_changes(self) -> np.ndarray:
        """Indices whose vector or availability changed since the last call (sorted)."""
        changed = np.fromiter(self._changed, np.int64, len(self._changed))
        self._changed = {}
        changed.sort()
        return changed

    # ----------------------------------------------------------------- snapshots
    def save(self, directory: Path, *, encoder_version: str, extra: dict | None = None) -> None:
        """Write the catalogue (ids, texts, flags, vectors) and ``extra`` to ``directory``.

        A worker with 10^6 items saves it so that a restart need not read the
        item-vectors topic again; ``extra`` holds where its reader had got to.
        Written to a temporary folder first, then swapped in.
        """
        n = len(self._ids)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        flags = np.stack(
            [
                self._provisional[:n],
                self._has_vector[:n],
                self._active[:n],
                self._eligible[:n],
                self._expired[:n],
            ],
            axis=1,
        )
        np.save(tmp / "flags.npy", flags)
        np.save(tmp / "expires.npy", self._expires[:n])
        np.save(tmp / "vectors.npy", self._vectors[:n])
        (tmp / "items.json").write_text(
            json.dumps({"ids": self._ids, "texts": self._texts, "tags": self._tags})
        )
        meta = {
            "encoder_version": encoder_version,
            "dim": self.dim,
            "items": n,
            "rules": self.rules.digest,
            "now": None if np.isinf(self._now) else float(self._now),
            "extra": extra,
        }
        (tmp / "catalogue.json").write_text(json.dumps(meta))
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, directory: Path, *, encoder_version: str) -> dict | None:
        """Adopt a saved catalogue; returns its ``extra`` (None: nothing adopted — none
        saved, unreadable, or made by another encoder, dimension or rules). This catalogue
        must hold nothing encoded yet (reserved items at most: they are replaced).

        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "catalogue"
        >>> catalog = ItemCatalog(dim=2)
        >>> catalog.set_vectors([catalog.reference("m1", text_hint="Heat")], np.array([[1.0, 0]]))
        >>> catalog.save(folder, encoder_version="v1", extra={"at": 7})
        >>> again = ItemCatalog(dim=2)
        >>> again.load(folder, encoder_version="v2") is None     # another model's vectors
        True
        >>> again.load(folder, encoder_version="v1"), again.index_of("m1"), again.text_of(0)
        ({'at': 7}, 0, 'Heat')
        >>> again.recommendable.tolist(), again.vectors.tolist()
        ([True], [[1.0, 0.0]])
        """
        if self._has_vector[: len(self._ids)].any() or self._pending:
            raise RuntimeError("a saved catalogue is loaded only into one with nothing encoded")
        try:
            meta = json.loads((directory / "catalogue.json").read_text())
            if (
                meta["encoder_version"] != encoder_version
                or meta["dim"] != self.dim
                or meta.get("rules") != self.rules.digest
            ):
                return None
            names = json.loads((directory / "items.json").read_text())
            flags = np.load(directory / "flags.npy")
            expires = np.load(directory / "expires.npy")
            vectors = np.load(directory / "vectors.npy")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        n = int(meta["items"])
        ids, texts = list(names["ids"]), list(names["texts"])
        if not (len(ids) == len(texts) == len(flags) == len(vectors) == len(expires) == n):
            return None
        if flags.ndim != 2 or flags.shape[1] != 5:
            return None
        # The loaded arrays become the catalogue's (capacity n; the next item grows them):
        # no second copy of 10^6 vectors, even for a moment.
        self._ids, self._texts = ids, texts
        self._tags = [()] * n
        self.tag_df = Counter()
        for idx, tags in enumerate(names.get("tags") or []):
            self._set_tags(idx, tags)
        self._index = {item_id: idx for idx, item_id in enumerate(ids)}
        (self._provisional, self._has_vector, self._active, self._eligible, self._expired) = (
            np.array(column, bool) for column in flags.T
        )
        self._expires = np.array(expires, np.float64)
        self._now = -np.inf if meta.get("now") is None else float(meta["now"])
        live = np.flatnonzero(np.isfinite(self._expires) & ~self._expired)
        self._expiry_heap = [(float(self._expires[i]), int(i)) for i in live]
        heapq.heapify(self._expiry_heap)
        self._recommendable = self._active & self._has_vector & self._eligible & ~self._expired
        self._vectors = np.ascontiguousarray(vectors, np.float32)
        # Texts never encoded are encoded again (not reserved ids: their records will come).
        unencoded = np.flatnonzero(~self._has_vector).tolist()
        self._pending = {i: texts[i] for i in unencoded if texts[i] != ids[i]}
        self.version += 1
        return dict(meta.get("extra") or {})

    # ----------------------------------------------------------------- updates
    def _grow(self, needed: int) -> None:
        """Capacity × 1.5 (not × 2: at 10^6 items the vectors alone are 1.5 GB)."""
        cap = max(needed, len(self._has_vector) * 3 // 2)
        vectors = np.zeros((cap, self.dim), np.float32)
        vectors[: len(self._vectors)] = self._vectors
        self._vectors = vectors
        for name in ("_has_vector", "_active", "_recommendable", "_provisional", "_eligible"):
            old = getattr(self, name)
            setattr(self, name, np.concatenate([old, np.zeros(cap - len(old), bool)]))
        self._expired = np.concatenate([self._expired, np.zeros(cap - len(self._expired), bool)])
        self._expires = np.concatenate([self._expires, np.full(cap - len(self._expires), np.inf)])

    def _add(self, item_id: str, text: str, *, provisional: bool) -> int:
        idx = len(self._ids)
        if idx >= len(self._has_vector):
            self._grow(idx + 1)
        self._index[item_id] = idx
        self._ids.append(item_id)
        self._texts.append(text)
        self._tags.append(())
        self._provisional[idx] = provisional
        self._active[idx] = True
        # An item known only from events has no tags yet: the rules judge it on its id.
        self._eligible[idx] = self.rules.allows(item_id, ())
        self._pending[idx] = text
        return idx

    def upsert(self, item: CatalogItem) -> int:
        """Add or update an item from the catalogue topic; returns its index."""
        text = item.render_text()
        idx = self._index.get(item.item_id)
        if idx is None:
            idx = self._add(item.item_id, text, provisional=False)
        elif self._texts[idx] != text or self._provisional[idx] or not self._active[idx]:
            self._texts[idx] = text
            self._provisional[idx] = False
            self._set_active(idx, True)
            self._pending[idx] = text
        self._set_tags(idx, item.tags)
        eligible = self.rules.allows(item.item_id, item.tags, available=item.available)
        expires = np.inf if item.expires_at is None else float(item.expires_at)
        if eligible != bool(self._eligible[idx]) or expires != self._expires[idx]:
            self._eligible[idx] = eligible
            self._expires[idx] = expires
            self._expired[idx] = expires <= self._now
            if np.isfinite(expires) and not self._expired[idx]:
                heapq.heappush(self._expiry_heap, (expires, idx))
            self._refresh(idx)
        return idx

    def expire(self, now: float) -> int:
        """Stop recommending items whose ``expires_at`` is at or before event time ``now``;
        returns how many expired. Time only moves forward (a late event changes nothing).

        >>> catalog = ItemCatalog(dim=2)
        >>> idx = catalog.upsert(CatalogItem(item_id="sale", title="Sale", expires_at=100.0))
        >>> catalog.set_vectors([idx], np.array([[1.0, 0.0]]))
        >>> catalog.expire(99.0), catalog.recommendable.tolist()
        (0, [True])
        >>> catalog.expire(100.0), catalog.recommendable.tolist()
        (1, [False])
        """
        self._now = max(self._now, now)
        expired = 0
        heap = self._expiry_heap
        while heap and heap[0][0] <= self._now:
            at, idx = heapq.heappop(heap)
            if self._expires[idx] == at and not self._expired[idx]:
                self._expired[idx] = True
                self._refresh(idx)
                expired += 1
        return expired

    def reference(self, item_id: str, *, text_hint: str | None = None) -> int:
        """Index of an item an event refers to, adding a provisional entry if unknown."""
        idx = self._index.get(item_id)
        if idx is None:
            return self._add(item_id, text_hint or item_id, provisional=True)
        text = self._texts[idx]
        if self._provisional[idx] and text_hint and text != text_hint and text == item_id:
            self._texts[idx] = text_hint
            self._pending[idx] = text_hint
        return idx

    def reserve(self, item_ids: Iterable[str]) -> None:
        """Give these items the next indices, in this order, without text or vector yet.

        A restart reserves the indices the items had before (the vector index is
        keyed by them); their records fill them in as they are read. A reserved
        item is not recommendable, and is not encoded from its id, until then.
        """
        for item_id in item_ids:
            if item_id not in self._index:
                idx = self._add(item_id, item_id, provisional=True)
                self._pending.pop(idx, None)

    def delete(self, item_id: str) -> bool:
        """Stop recommending an item (a tombstone on the items topic)."""
        idx = self._index.get(item_id)
        if idx is None or not self._active[idx]:
            return False
        self._set_active(idx, False)
        self._pending.pop(idx, None)
        self.version += 1
        return True

    def pending_texts(self) -> list[tuple[int, str]]:
        """Items whose vector must be (re)computed, as ``(index, text)``."""
        return sorted(self._pending.items())

    def set_vectors(self, indices: Iterable[int], vectors: np.ndarray) -> None:
        """Store encoder output for ``indices`` (rows are L2-normalised here)."""
        idx = np.fromiter(indices, np.int64)
        vecs = np.asarray(vectors, np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        self._vectors[idx] = vecs / np.maximum(norms, 1e-12)
        self._has_vector[idx] = True
        self._recommendable[idx] = self._active[idx] & self._eligible[idx] & ~self._expired[idx]
        for i in idx.tolist():
            self._pending.pop(i, None)
            self._changed[i] = None
        self.version += 1

    def _set_active(self, idx: int, active: bool) -> None:
        if bool(self._active[idx]) != active:
            self._active[idx] = active
            self._refresh(idx)

    def _refresh(self, idx: int) -> None:
        """Recompute one item's recommendable flag; a change is logged for the index."""
        value = bool(
            self._active[idx]
            and self._has_vector[idx]
            and self._eligible[idx]
            and not self._expired[idx]
        )
        if value != bool(self._recommendable[idx]):
            self._recommendable[idx] = value
            self._changed[idx] = None
            self.version += 1

    def encode_pending(self, encoder: TextEncoderLike) -> int:
        """Encode every pending item text in one encoder call; returns how many."""
        pending = self.pending_texts()
        if not pending:
            return 0
        indices, texts = zip(*pending, strict=True)
        self.set_vectors(indices, encoder.encode(list(texts)))
        return len(indices)
