"""One user's state as the engine sees it in a batch, and how its cluster is stored.

The window and the seen items have their own codecs (models/user_window.py);
the cluster id and the drift state (models/interest_drift.py) are a few
integers stored beside them under ``c:<user>``, written in the same batch as
the window, so a restart resumes both together.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.interest import interest_weights
from models.interest_drift import DriftState
from models.item_catalog import ItemCatalog
from models.settings import EngineSettings
from models.user_window import SeenItems, UserWindow

__all__ = [
    "CLUSTER_KEY",
    "UserState",
    "pack_cluster",
    "recent_indices",
    "unpack_cluster",
    "window_vectors",
]

CLUSTER_KEY = "c:"
_CLUSTER_VALUE = struct.Struct("<q")  # the cluster alone (stores written before drift states)
# The cluster, then the drift state: reported cluster, pending cluster, times in a row.
_CLUSTER_AND_DRIFT = struct.Struct("<qqqi")
_NO_CLUSTER = -1


@dataclass(slots=True)
class UserState:
    """Everything the ranker needs about one user, derived from the window."""

    user_id: str
    window: UserWindow
    seen: SeenItems
    interest: np.ndarray | None = None
    facets: np.ndarray | None = None
    facet_importance: np.ndarray | None = None
    cluster: int | None = None
    previous_cluster: int | None = None
    cluster_similarity: float | None = None
    drift: DriftState = field(default_factory=DriftState)
    recent: list[int] = field(default_factory=list)
    # The window's item vectors and pooling weights, shared by interest and facets.
    window_vectors: tuple[np.ndarray, np.ndarray] | None = None


def pack_cluster(u: UserState) -> bytes:
    """The stored form of a user's cluster and drift state.

    >>> from models.user_window import UserWindow, SeenItems
    >>> u = UserState("u", UserWindow(), SeenItems(4), cluster=3, drift=DriftState(3, 5, 1))
    >>> unpack_cluster(pack_cluster(u))
    (3, DriftState(reported=3, pending=5, count=1))
    >>> unpack_cluster(_CLUSTER_VALUE.pack(7))   # a value written before drift states
    (7, DriftState(reported=7, pending=None, count=0))
    """

    def code(cluster: int | None) -> int:
        return _NO_CLUSTER if cluster is None else cluster

    d = u.drift
    return _CLUSTER_AND_DRIFT.pack(code(u.cluster), code(d.reported), code(d.pending), d.count)


def unpack_cluster(raw: bytes | None) -> tuple[int | None, DriftState]:
    """``(cluster, drift state)`` from the stored value (None: a user never clustered)."""

    def cluster(code: int) -> int | None:
        return None if code == _NO_CLUSTER else code

    if not raw:
        return None, DriftState()
    if len(raw) == _CLUSTER_VALUE.size:
        old = cluster(_CLUSTER_VALUE.unpack(raw)[0])
        return old, DriftState(old)
    now, reported, pending, count = _CLUSTER_AND_DRIFT.unpack(raw)
    return cluster(now), DriftState(cluster(reported), cluster(pending), count)


def recent_indices(
    window: UserWindow,
    index_of: Callable[[str], int | None],
    m: int,
    *,
    before: float | None = None,
) -> list[int]:
    """Catalogue indices of the window's ``m`` newest items, newest first.

    With ``before``, only items at or before that event time count: a late
    event is a successor of what preceded it, not of what came after.
    """
    out: list[int] = []
    entries = window.entries
    for entry in reversed(entries) if before is not None else window.recent(m):
        if before is not None and entry.ts > before:
            continue
        idx = index_of(entry.item_id)
        if idx is not None:
            out.append(idx)
            if len(out) == m:
                break
    return out


def window_vectors(
    window: UserWindow, catalog: ItemCatalog, settings: EngineSettings
) -> tuple[np.ndarray, np.ndarray]:
    """The window's item vectors ``[n, d]`` and their pooling weights ``[n]`` (recency and
    position decay, models/interest.py): what interest, facets and the adapter pool."""
    entries = window.entries
    idx = np.array([catalog.index_of(e.item_id) for e in entries], np.int64)
    weights = interest_weights(
        np.array([e.ts for e in entries]),
        np.array([e.weight for e in entries]),
        half_life_s=settings.interest_half_life_s,
        position_decay=settings.interest_position_decay,
    )
    return catalog.vectors[idx], weights
