"""What an engine exchanges with the other engines of a deployment, and what it shows of itself.

Several engines (one per Kafka worker) serve one model: each learns from its
own users and shares the rest — item vectors encoded once by whoever saw the
item first, the deltas of its collaborative counts and of its clusterer, and
the authoritative cluster model it adopts. :class:`SharedState` is that part
of :class:`~models.engine.Engine`'s API, so that a runtime moving these
between engines calls methods and never reaches into the engine's parts; its
read-only views (``decayed_counts``, ``item_info``, ``summary``) serve
operators. It holds no Kafka code: the bytes travel however the caller likes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from models.clustering.cluster_messages import ClusterDelta, ClusterSnapshot
from models.clustering.decaying_centroids import DecayingCentroids
from models.collaborative import CollaborativeDelta
from models.contracts import CatalogItem

if TYPE_CHECKING:
    from models.clustering.base import Clusterer
    from models.collaborative import CollaborativeCounts
    from models.engine import EngineStats
    from models.item_catalog import ItemCatalog, TextEncoderLike

__all__ = ["SharedState"]


class SharedState:
    """The engine's exchange with its peers (a mixin of :class:`~models.engine.Engine`)."""

    catalog: ItemCatalog
    counts: CollaborativeCounts
    clusterer: Clusterer | None
    encoder: TextEncoderLike
    stats: EngineStats
    model_version: int

    def upsert_items(self, items: Sequence[CatalogItem]) -> int:  # pragma: no cover - Engine's
        raise NotImplementedError

    # ------------------------------------------------------------------ in
    def set_item_vectors(
        self, items: Sequence[CatalogItem], vectors: np.ndarray, *, encoder_version: str
    ) -> None:
        """Adopt vectors another engine encoded; re-encode those of another encoder or size.

        A vector is trusted only when ``encoder_version`` is this engine's
        encoder's version and the size matches; otherwise the item's text is
        encoded here (vectors of two models never mix in one catalogue).
        """
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(items), -1)
        if encoder_version != self.encoder.model_version or vectors.shape[1] != self.catalog.dim:
            self.upsert_items(items)
            return
        indices = [self.catalog.upsert(item) for item in items]
        self.catalog.set_vectors(indices, vectors)

    def apply_counts_delta(self, delta: CollaborativeDelta) -> None:
        """Add another engine's collaborative-count changes (items it names are referenced)."""
        reference = self.catalog.reference
        self.counts.apply_delta(delta, lambda item_id: reference(item_id))

    def adopt_cluster_snapshot(self, snapshot: ClusterSnapshot) -> None:
        """Take the authoritative cluster model; its version stamps every recommendation.

        Counts kept per cluster for clusters the snapshot no longer has are dropped.
        """
        clusterer = self.clusterer
        if isinstance(clusterer, DecayingCentroids):
            before = set(clusterer.ids.tolist())
            clusterer.load_snapshot(snapshot)
            for gone in before - set(clusterer.ids.tolist()):
                self.counts.forget_cluster(gone)
        self.model_version = snapshot.version

    # ------------------------------------------------------------------ out
    def pop_deltas(self) -> tuple[ClusterDelta | None, CollaborativeDelta | None]:
        """What this engine learned since the last call, for its peers (None when nothing)."""
        cluster_delta: ClusterDelta | None = None
        if isinstance(self.clusterer, DecayingCentroids):
            popped = self.clusterer.pop_delta()
            cluster_delta = None if popped.is_empty else popped
        counts_delta = self.counts.pop_delta(self.catalog.id_of)
        return cluster_delta, (None if counts_delta.is_empty() else counts_delta)

    # ------------------------------------------------------------------ views
    @property
    def recommendable_items(self) -> int:
        """Items that may be recommended (encoded, not deleted)."""
        return int(self.catalog.recommendable.sum())

    @property
    def cluster_ids(self) -> list[int]:
        """Ids of the live clusters (empty with clustering off)."""
        ids = getattr(self.clusterer, "ids", None)
        return [] if ids is None else [int(i) for i in ids]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: model version, clusters, catalogue, events learned."""
        return {
            "model_version": self.model_version,
            "clusters": self.cluster_ids,
            "items": len(self.catalog),
            "recommendable_items": self.recommendable_items,
            "events_processed": self.stats.events,
        }

    def decayed_counts(self, at: float) -> dict[str, Any]:
        """Popularity, trending and transitions by item id, decayed to event time ``at``."""
        counts, catalog = self.counts, self.catalog
        n = len(catalog)
        ids = [catalog.id_of(i) for i in range(n)]
        scale = counts.decay.to_decayed(1.0, at)
        trending_scale = counts.trending_decay.to_decayed(1.0, at)
        popularity = counts.popularity_scores(n) * scale
        trending = counts.trending_scores(n) * trending_scale
        transitions: dict[str, dict[str, float]] = {}
        for source in range(n):
            successors, values = counts.transitions.row_arrays(source)
            if len(successors):
                transitions[ids[source]] = {
                    ids[int(s)]: float(v) * scale
                    for s, v in zip(successors, values, strict=True)
                    if int(s) < n
                }
        return {
            "at": at,
            "popularity": {ids[i]: float(v) for i, v in enumerate(popularity) if v},
            "trending": {ids[i]: float(v) for i, v in enumerate(trending) if v},
            "transitions": transitions,
        }

    def item_info(self, item_id: str) -> dict[str, Any] | None:
        """What the catalogue holds for an item, or None."""
        index = self.catalog.index_of(item_id)
        if index is None:
            return None
        return {
            "item_id": item_id,
            "text": self.catalog.text_of(index),
            "provisional": self.catalog.is_provisional(item_id),
            "recommendable": bool(self.catalog.recommendable[index]),
            **self.catalog.rules_of(index),
        }
