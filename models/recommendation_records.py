"""The engine's answer as contract records: one ``Recommendation`` per event (or per user).

Built with :func:`models.contracts.trusted` (no re-validation of values the
engine made itself: a quarter of a batch's time went there), and a user's item
list and cluster are built once per batch and shared by that user's events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from models.clustering.cluster_messages import PROVISIONAL_ID_START
from models.contracts import (
    BehaviourEvent,
    ClusterInfo,
    Recommendation,
    RecommendedItem,
    trusted,
)
from models.ranking import RankedItem

__all__ = ["recommendation_records"]


class _Clustered(Protocol):
    cluster: int | None
    previous_cluster: int | None
    cluster_similarity: float | None


def _shown(cluster: int | None) -> int | None:
    """A cluster id as users see it: a worker's provisional id (not yet numbered by the
    model agent) never leaves the worker; until then the user shows no cluster."""
    return cluster if cluster is not None and cluster < PROVISIONAL_ID_START else None


def recommendation_records(
    targets: Sequence[BehaviourEvent],
    users: Mapping[str, _Clustered],
    ranked: Mapping[str, Sequence[RankedItem]],
    id_of: Callable[[int], str],
    *,
    labels: Mapping[int, str],
    emitted_at: float,
    latency_ms: float,
    model_version: int,
) -> list[Recommendation]:
    """One record per target event, from its user's ranked items and cluster."""
    parts: dict[str, tuple[ClusterInfo, list[RecommendedItem]]] = {}
    for user_id, ranked_items in ranked.items():
        u = users[user_id]
        shown, previous = _shown(u.cluster), _shown(u.previous_cluster)
        similarity = u.cluster_similarity if shown is not None else None
        parts[user_id] = (
            trusted(
                ClusterInfo,
                id=shown,
                similarity=round(similarity, 6) if similarity is not None else None,
                previous=previous,
                label=None if shown is None else labels.get(shown),
            ),
            [
                trusted(
                    RecommendedItem,
                    item_id=id_of(r.index),
                    score=round(r.score, 6),
                    source=r.source,
                    because=[] if r.because is None else [id_of(r.because)],
                )
                for r in ranked_items
            ],
        )
    latency = round(latency_ms, 3)
    records = []
    for event in targets:
        cluster, items = parts[event.user_id]
        records.append(
            trusted(
                Recommendation,
                user_id=event.user_id,
                event_id=event.event_id,
                ts=event.ts,
                emitted_at=emitted_at,
                cluster=cluster,
                items=items,
                model_version=model_version,
                latency_ms=latency,
            )
        )
    return records
