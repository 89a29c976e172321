"""When has a user's interest *moved* to another cluster? A confirmation rule (hysteresis).

A user whose interest lies between two clusters is assigned to one, then the
other, then back: reporting every flip would flood ``driftrec.interest-events``
with noise. So a move is reported only when the user's new cluster has held
for ``confirm`` consecutive assignments; a flip back before that cancels it.
The first cluster a user gets is adopted silently (joining is not drifting),
and so is a new cluster when the reported one no longer exists (merged or
retired: the user did not move, the clusters did).

The state is three numbers per user (reported cluster, pending cluster, how
many times in a row), stored with the user's window so a restart neither
forgets a pending move nor reports one twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.clustering.cluster_messages import PROVISIONAL_ID_START, ClusterEvent
from models.contracts import InterestEvent
from models.user_window import UserWindow

__all__ = ["DriftState", "lifecycle_event", "moved_events", "with_labels"]


def with_labels(events: list[InterestEvent], labels: dict[int, str]) -> list[InterestEvent]:
    """The events with their cluster's label filled in, where one is known."""
    return [
        e.model_copy(update={"label": labels[e.cluster]}) if e.cluster in labels else e
        for e in events
    ]


def lifecycle_event(event: ClusterEvent, model_version: int) -> InterestEvent:
    """A cluster's birth, merge or retirement as an interest event.

    >>> lifecycle_event(ClusterEvent("merged", 7, 3, 10.0), model_version=4).into
    3
    """
    return InterestEvent(
        kind=event.kind,
        ts=event.t,
        cluster=event.cluster_id,
        into=event.other_id if event.kind == "merged" else None,
        model_version=model_version,
    )


@dataclass(slots=True)
class DriftState:
    """A user's reported cluster and the move pending confirmation.

    Examples
    --------
    >>> state = DriftState()
    >>> [state.observe(c, confirm=2) for c in [3, 3, 7, 3, 7, 7, 7]]
    [None, None, None, None, None, (3, 7), None]
    >>> state.reported
    7
    """

    reported: int | None = None
    pending: int | None = None
    count: int = 0

    def observe(
        self, cluster: int | None, *, confirm: int, reported_alive: bool = True
    ) -> tuple[int, int] | None:
        """Take the user's latest cluster; ``(from, to)`` when a move is confirmed."""
        if cluster is None or cluster == self.reported:
            self.pending, self.count = None, 0
            return None
        if self.reported is None or not reported_alive:
            self.reported, self.pending, self.count = cluster, None, 0
            return None
        if cluster == self.pending:
            self.count += 1
        else:
            self.pending, self.count = cluster, 1
        if self.count < confirm:
            return None
        move = (self.reported, cluster)
        self.reported, self.pending, self.count = cluster, None, 0
        return move


class _Tracked(Protocol):
    """What :func:`moved_events` reads of a user (models/user_state.py's UserState)."""

    user_id: str
    window: UserWindow
    cluster: int | None
    cluster_similarity: float | None
    drift: DriftState


def moved_events(
    states: Sequence[_Tracked],
    centroid_of: Callable[[int], Any] | None,
    *,
    confirm: int,
    model_version: int,
) -> list[InterestEvent]:
    """Each user's latest cluster through its drift state; the confirmed moves as events.

    A provisional cluster id (a worker's, not yet numbered by the model agent)
    counts as no cluster: it never leaves the worker. ``centroid_of`` tells
    whether the reported cluster still exists (None: assume it does).
    """
    events = []
    for u in states:
        cluster = u.cluster if (u.cluster or 0) < PROVISIONAL_ID_START else None
        reported = u.drift.reported
        alive = reported is None or centroid_of is None or centroid_of(reported) is not None
        move = u.drift.observe(cluster, confirm=confirm, reported_alive=alive)
        if move is None:
            continue
        similarity = u.cluster_similarity
        events.append(
            InterestEvent(
                kind="moved",
                ts=u.window.newest_ts,
                user_id=u.user_id,
                cluster=move[1],
                previous=move[0],
                similarity=None if similarity is None else round(similarity, 6),
                items=[e.item_id for e in u.window.recent(max(3, confirm))],
                model_version=model_version,
            )
        )
    return events
