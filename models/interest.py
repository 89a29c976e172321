"""A user's interest vector from the sliding window, in two modes.

``pooled`` (default, cheap): the window's item vectors ``x_i`` are pooled with
weights that fall with age and with position,

    a_i = w_i · 2^(-(t - t_i) / h) · p^(r_i),     I_t = Σ a_i x_i / ‖Σ a_i x_i‖,

where ``w_i`` is the event weight, ``t`` the newest event time of the window,
``h`` the recency half-life, ``r_i`` the position counted from the newest event
(0 for the newest) and ``p ≤ 1`` the position decay.

``sequence`` (the method's ``I_t = M(x_t)``): the window is rendered as text,
newest first (``"purchased: …; viewed: …"``), and the encoder reads the whole
sequence as one input; see :func:`render_sequence`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.forward_decay import decay_factor
from models.user_window import WindowEntry

__all__ = ["EVENT_VERBS", "interest_weights", "pooled_interest", "render_sequence"]

#: How each event type reads in a rendered sequence; custom types read as their name.
EVENT_VERBS = {
    "view": "viewed",
    "click": "clicked",
    "cart": "added to cart",
    "purchase": "purchased",
    "rate": "rated",
}


def interest_weights(
    ts: np.ndarray, weights: np.ndarray, *, half_life_s: float, position_decay: float
) -> np.ndarray:
    """Pooling weights ``a_i`` for a window sorted by event time (oldest first).

    >>> interest_weights(np.array([0.0, 10.0]), np.array([1.0, 1.0]),
    ...                  half_life_s=10.0, position_decay=1.0).tolist()
    [0.5, 1.0]
    """
    if len(ts) == 0:
        return np.zeros(0)
    age = ts[-1] - ts
    position = np.arange(len(ts) - 1, -1, -1, dtype=np.float64)
    return weights * decay_factor(age, half_life_s) * position_decay**position


def pooled_interest(vectors: np.ndarray, pool_weights: np.ndarray) -> np.ndarray:
    """``[n, d]`` item vectors and ``[n]`` weights → unit ``[d]`` vector (zeros if empty).

    >>> pooled_interest(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([3.0, 4.0])).tolist()
    [0.6, 0.8]
    """
    if len(vectors) == 0:
        return np.zeros(vectors.shape[1] if vectors.ndim == 2 else 0, np.float32)
    pooled = pool_weights @ vectors
    norm = float(np.linalg.norm(pooled))
    return pooled / norm if norm > 0 else pooled


def render_sequence(
    entries: Sequence[WindowEntry], text_of: Callable[[str], str], *, max_items: int = 50
) -> str:
    """The window as one text for the encoder, newest event first.

    Consecutive events of the same type are grouped under one verb.

    >>> from models.user_window import WindowEntry
    >>> window = [WindowEntry("a", 1.0, 1.0, "view"), WindowEntry("b", 2.0, 1.0, "view"),
    ...           WindowEntry("c", 3.0, 5.0, "purchase")]
    >>> render_sequence(window, {"a": "Tent", "b": "Stove", "c": "Boots"}.get)
    'purchased: Boots; viewed: Stove, Tent'
    """
    parts: list[str] = []
    current_verb: str | None = None
    group: list[str] = []
    for entry in list(reversed(entries))[:max_items]:
        verb = EVENT_VERBS.get(entry.event, entry.event)
        if verb != current_verb and group:
            parts.append(f"{current_verb}: {', '.join(group)}")
            group = []
        current_verb = verb
        group.append(text_of(entry.item_id))
    if group:
        parts.append(f"{current_verb}: {', '.join(group)}")
    return "; ".join(parts)
