"""Readable names for interest clusters: the terms that set a cluster's items apart (c-TF-IDF).

A cluster id means nothing to a person; the items it is made of do. As in
topic models (BERTopic's class-based TF-IDF), each cluster is treated as one
document made of its *member items* — the items most consumed within it and
the items nearest its centroid — and a term scores

.. math::

    w_{t,c} = \\frac{tf_{t,c}}{\\sum_{t'} tf_{t',c}} \\cdot \\log\\left(1 + \\frac{N}{df_t}\\right)

where :math:`tf_{t,c}` is the (weighted) number of member items carrying term
:math:`t`, :math:`df_t` the number of catalogue items carrying it and
:math:`N` the catalogue's size: frequent in the cluster, rare in the
catalogue. Terms are an item's tags, whole phrases ("trail running",
"Animation"); a catalogue without tags gets no labels. The label is the best
``n_terms`` joined by " · ". It is recomputed as the cluster drifts (the
engine refreshes labels every few batches and whenever the cluster model
changes), so a label follows its cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from models.clustering.cluster_messages import PROVISIONAL_ID_START
from models.collaborative import CollaborativeCounts
from models.contracts import InterestEvent
from models.item_catalog import ItemCatalog
from models.vector_index import ItemIndex

__all__ = ["ClusterLabeller", "label_of"]


def label_of(
    members: Sequence[tuple[Sequence[str], float]],
    df: Mapping[str, int],
    n_items: int,
    *,
    n_terms: int = 3,
) -> str | None:
    """The label of a cluster from its members' ``(terms, weight)`` (None: no terms).

    >>> df = {"espresso": 10, "coffee": 12, "machine": 90, "running": 10}
    >>> members = [(("espresso", "machine"), 2.0), (("espresso", "coffee"), 1.0)]
    >>> label_of(members, df, n_items=100, n_terms=2)
    'espresso · coffee'
    """
    tf: dict[str, float] = {}
    for terms, weight in members:
        for term in terms:
            tf[term] = tf.get(term, 0.0) + weight
    total = sum(tf.values())
    if not total:
        return None
    scores = {
        term: count / total * math.log(1.0 + n_items / max(1, df.get(term, 1)))
        for term, count in tf.items()
    }
    best = sorted(scores, key=lambda term: (-scores[term], term))[:n_terms]
    return " · ".join(best)


class ClusterLabeller:
    """Labels of the live clusters, recomputed every ``every`` batches (or on demand).

    A cluster's members are its ``members`` most consumed items (weight: their
    share of the cluster's consumption, ×2) and the ``members`` items nearest
    its centroid (weight 1), so a new cluster is named from its centroid before
    anyone consumed much in it.
    """

    def __init__(self, *, members: int = 30, n_terms: int = 3, every: int = 20) -> None:
        self.members = members
        self.n_terms = n_terms
        self.every = every
        self.labels: dict[int, str] = {}
        self._seen: set[int] = set()  # clusters the last refresh looked at (labelled or not)
        self._batches = 0
        self._relabelled: list[InterestEvent] = []

    def due(self, clusters: Iterable[int]) -> bool:
        """Count a batch; whether the labels should be recomputed now."""
        self._batches += 1
        if self._batches % self.every == 1:
            return True
        # A cluster never looked at is labelled now (one without tags is not asked again).
        return any(c not in self._seen and c < PROVISIONAL_ID_START for c in clusters)

    def refresh_from(
        self,
        ids: Sequence[int],
        centroids: np.ndarray,
        catalog: ItemCatalog,
        counts: CollaborativeCounts,
        index: ItemIndex | None,
        t: float = 0.0,
    ) -> dict[int, str]:
        """Recompute for clusters ``ids`` with unit ``centroids`` from the engine's state:
        the index answers "nearest the centroid" when there is one, else one product."""
        # A worker's provisional clusters (not yet numbered by the model agent) get no
        # label: their ids never leave the worker.
        confirmed = [j for j, c in enumerate(ids) if c < PROVISIONAL_ID_START]
        ids, centroids = [ids[j] for j in confirmed], centroids[confirmed]
        if not len(ids):
            self.labels = {}
            return self.labels
        k = self.members
        if index is not None and len(index):
            keys, _ = index.search(centroids, k)
            nearest = {c: [int(i) for i in row if i >= 0] for c, row in zip(ids, keys, strict=True)}
        else:
            allowed = catalog.recommendable
            sims = np.where(allowed[:, None], catalog.vectors @ centroids.T, -np.inf)
            depth = min(k, len(sims))
            top = np.argpartition(-sims, depth - 1, axis=0)[:depth] if depth else sims[:0]
            nearest = {
                c: [int(i) for i in top[:, j] if np.isfinite(sims[i, j])] for j, c in enumerate(ids)
            }
        popular = {}
        for c in ids:
            items, values = counts.cluster_popularity.row_arrays(c)
            order = np.argsort(-values, kind="stable")[:k]
            popular[c] = (items[order].tolist(), values[order].tolist())
        before = self.labels
        labels = self.refresh(nearest, popular, catalog.tags_of, catalog.tag_df, len(catalog))
        self._relabelled += [
            InterestEvent(kind="relabelled", ts=t, cluster=c, label=label, model_version=0)
            for c, label in sorted(labels.items())
            if before.get(c) != label
        ]
        return labels

    def pop_relabelled(self, model_version: int) -> list[InterestEvent]:
        """``relabelled`` interest events since the last call: a cluster got its first
        label, or its label changed as it drifted."""
        events, self._relabelled = self._relabelled, []
        return [e.model_copy(update={"model_version": model_version}) for e in events]

    def refresh(
        self,
        nearest: Mapping[int, Sequence[int]],
        popular: Mapping[int, tuple[Sequence[int], Sequence[float]]],
        tags_of: Callable[[int], Sequence[str]],
        df: Mapping[str, int],
        n_items: int,
    ) -> dict[int, str]:
        """Recompute from each cluster's nearest items and ``(items, counts)`` consumed."""
        labels: dict[int, str] = {}
        self._seen = set(nearest) | set(popular)
        for cluster in self._seen:
            members = [(tags_of(i), 1.0) for i in nearest.get(cluster, ())]
            items, counts = popular.get(cluster, ((), ()))
            total = float(sum(counts)) or 1.0
            members += [
                (tags_of(i), 2.0 * len(items) * c / total)
                for i, c in zip(items, counts, strict=True)
            ]
            label = label_of(members, df, n_items, n_terms=self.n_terms)
            if label is not None:
                labels[cluster] = label
        self.labels = labels
        return labels
