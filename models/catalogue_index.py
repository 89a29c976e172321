"""The catalogue's vector index and checkpoints: built or restored once, then kept in step.

Two-stage ranking (models/candidates.py) asks the index for the items nearest
each user's interest. This object owns it: it is built from the catalogue the
first time it is needed (in chunks, so 10^6 vectors are never copied at once),
or restored from ``DATA_DIR/item-index`` when the catalogue holds the items it
was saved for; afterwards the catalogue's change log (added, re-encoded,
deleted, ruled-out or expired items) is applied before each ranking, in time
proportional to the changes. It also saves and adopts the catalogue's
checkpoint (``DATA_DIR/catalogue``), so a worker restarting on its volume
neither re-reads the item-vectors topic nor re-indexes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.item_catalog import ItemCatalog
from models.settings import EngineSettings
from models.vector_index import ItemIndex

__all__ = ["CatalogueIndex"]

_CHUNK = 65_536


class CatalogueIndex:
    """The vector index over one catalogue, and that catalogue's checkpoints.

    Parameters
    ----------
    catalog
        The catalogue it indexes (read only: its vectors, mask and change log).
    settings
        The ``ranking``, ``exact_max_items`` and ``index_*`` settings, ``data_dir``.
    persist
        Save and restore under ``data_dir`` (False for in-memory engines); when
        True, the catalogue first reserves the indices the saved index used.
    """

    def __init__(self, catalog: ItemCatalog, settings: EngineSettings, *, persist: bool) -> None:
        self.catalog = catalog
        self.settings = settings
        self.persist = persist
        self.index: ItemIndex | None = None
        self.changes = 0  #: catalogue changes applied to the index so far
        self.origin = ""  #: "built" or "restored", once the index exists
        self.ready_s = 0.0  #: how long building or restoring took
        if persist:
            catalog.reserve(ItemIndex.saved_ids(self.index_dir))

    @property
    def index_dir(self) -> Path:
        return Path(self.settings.data_dir) / "item-index"

    @property
    def catalogue_dir(self) -> Path:
        return Path(self.settings.data_dir) / "catalogue"

    def mode(self, recommendable_items: int) -> str:
        """``"exact"`` or ``"two-stage"``: the setting, or by catalogue size when ``auto``
        (once built, the index is kept up to date, so the engine stays two-stage)."""
        mode = self.settings.ranking
        if mode == "auto":
            if self.index is not None:
                return "two-stage"
            big = recommendable_items > self.settings.exact_max_items
            return "two-stage" if big else "exact"
        return mode

    def sync(self) -> ItemIndex:
        """The index, built or restored when first needed, then brought up to date."""
        catalog = self.catalog
        if self.index is None:
            started = time.perf_counter()
            self.index = self._restore()
            self.origin = "restored"
            if self.index is None:
                self.index = ItemIndex(
                    catalog.dim, precision=self.settings.index_precision, **self._params()
                )
                catalog.pop_changes()
                keys = np.flatnonzero(catalog.recommendable)
                for start in range(0, len(keys), _CHUNK):  # no second copy of 10^6 rows
                    chunk = keys[start : start + _CHUNK]
                    self.index.upsert(
                        chunk, catalog.vectors[chunk], threads=self.settings.index_build_threads
                    )
                self.origin = "built"
            self.ready_s = time.perf_counter() - started
        changed = catalog.pop_changes()
        if len(changed):
            alive = catalog.recommendable[changed]
            self.index.remove(changed[~alive])
            self.index.upsert(changed[alive], catalog.vectors[changed[alive]])
            self.changes += len(changed)
        return self.index

    def save_index(self) -> None:
        """Write the index under ``data_dir`` (for the next engine on this volume)."""
        if self.index is not None:
            self.sync()
            ids = [self.catalog.id_of(i) for i in range(len(self.catalog))]
            self.index.save(self.index_dir, ids, self.catalog.vectors)

    def save_checkpoint(self, encoder_version: str, extra: dict[str, Any] | None) -> None:
        """Save the catalogue with the caller's ``extra``, and the index if there is one."""
        self.catalog.save(self.catalogue_dir, encoder_version=encoder_version, extra=extra)
        self.save_index()

    def load_checkpoint(self, encoder_version: str) -> dict[str, Any] | None:
        """Adopt the saved catalogue of the same model; its ``extra``, or None."""
        return self.catalog.load(self.catalogue_dir, encoder_version=encoder_version)

    def _params(self) -> dict[str, int]:
        s = self.settings
        return {
            "connectivity": s.index_connectivity,
            "expansion_add": s.index_expansion_add,
            "expansion_search": s.index_expansion_search,
            "threads": s.index_threads,
        }

    def _restore(self) -> ItemIndex | None:
        """The saved index, when the catalogue holds the items it was saved for."""
        if not self.persist:
            return None
        catalog = self.catalog
        catalog.pop_changes()  # restore() compares every vector with the saved ones
        return ItemIndex.restore(
            self.index_dir,
            [catalog.id_of(i) for i in range(len(catalog))],
            catalog.vectors,
            catalog.recommendable,
            build_threads=self.settings.index_build_threads,
            precision=self.settings.index_precision,
            **self._params(),
        )
