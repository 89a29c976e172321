"""Tests of the evaluator: metrics, protocols (leak-freedom), baselines and ``driftrec eval``.

:func:`sequential_stream` makes the small streams they share: users walk
item chains (item ``i`` is mostly followed by ``i + 1`` or ``i + 2``, so
transition models have something to find), never repeat an item, and
interleave in event time with some equal timestamps.
"""

from __future__ import annotations

import numpy as np

from models.contracts import BehaviourEvent, CatalogItem

GENRES = ("space", "cooking", "romance", "war", "football", "jazz")


def catalogue(n_items: int) -> list[CatalogItem]:
    """Items ``i0 … i{n-1}``, titled by a genre so their texts differ."""
    return [
        CatalogItem(item_id=f"i{n}", title=f"A {GENRES[n % len(GENRES)]} story number {n}")
        for n in range(n_items)
    ]


def sequential_stream(
    n_users: int = 30,
    n_items: int = 60,
    events_per_user: int = 12,
    *,
    seed: int = 0,
) -> list[BehaviourEvent]:
    """Interleaved item-chain walks, in event-time order (ties kept in generation order)."""
    rng = np.random.default_rng(seed)
    walks: dict[str, list[str]] = {}
    for u in range(n_users):
        visited: list[int] = []
        current = int(rng.integers(n_items))
        for _ in range(events_per_user):
            visited.append(current)
            step = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
            nxt = (current + step) % n_items
            while nxt in visited:
                nxt = (nxt + 1) % n_items
            current = nxt
        walks[f"u{u}"] = [f"i{i}" for i in visited]
    cursors = dict.fromkeys(walks, 0)
    events: list[BehaviourEvent] = []
    ts = 1_000_000.0
    while cursors:
        user = sorted(cursors)[int(rng.integers(len(cursors)))]
        item = walks[user][cursors[user]]
        cursors[user] += 1
        if cursors[user] == len(walks[user]):
            del cursors[user]
        if rng.random() < 0.8:  # else: the same timestamp as the previous event
            ts += float(rng.integers(1, 3600))
        events.append(
            BehaviourEvent(
                user_id=user,
                item_id=item,
                event="view",
                ts=ts,
                weight=1.0,
                event_id=str(len(events)),
            )
        )
    return events
