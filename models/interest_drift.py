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

from dataclasses import dataclass

__all__ = ["DriftState"]


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
