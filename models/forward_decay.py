"""Forward exponential decay: decayed sums that stay additive across workers.

A decayed count ``C(T) = Σ w_i · 2^(-(T - t_i)/h)`` changes with the query time
``T``. Forward decay (Cormode et al., 2009) stores instead
``Ĉ = Σ w_i · 2^((t_i - L)/h)`` relative to a landmark time ``L``; the decayed
value is ``C(T) = Ĉ · 2^(-(T - L)/h)``. Updates never touch older entries,
arrive in any order, and two workers' sums with the same landmark simply add.
When ``(t - L)/h`` grows large the landmark moves forward and every stored sum
is rescaled once, so floats never overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np

__all__ = ["ForwardDecay", "decay_factor"]

#: Landmark moves once updates are this many half-lives past it (2^64 ≈ 1.8e19).
RESCALE_AFTER_HALF_LIVES = 64.0


@overload
def decay_factor(elapsed: float, half_life_s: float) -> float: ...
@overload
def decay_factor(elapsed: np.ndarray, half_life_s: float) -> np.ndarray: ...
def decay_factor(elapsed: float | np.ndarray, half_life_s: float) -> float | np.ndarray:
    """``2^(-elapsed/h)``: the one place the decay formula is written.

    Every decayed quantity in driftrec is a product of such factors: a gain
    relative to a landmark is ``decay_factor(L - t, h)``, a stored sum decayed to
    ``T`` is multiplied by ``decay_factor(T - L, h)``, a landmark move from ``L``
    to ``L'`` rescales by ``decay_factor(L' - L, h)``. Scalars use :func:`math.exp2`
    and arrays :func:`numpy.exp2`, element-wise; ``elapsed`` may be negative.

    >>> decay_factor(10.0, 10.0)
    0.5
    >>> decay_factor(-20.0, 10.0)
    4.0
    >>> decay_factor(np.array([0.0, 10.0, 30.0]), 10.0).tolist()
    [1.0, 0.5, 0.125]
    """
    if isinstance(elapsed, np.ndarray):
        return np.exp2(-elapsed / half_life_s)
    return math.exp2(-elapsed / half_life_s)


@dataclass(slots=True)
class ForwardDecay:
    """Landmark bookkeeping for forward-decayed sums with one half-life.

    Parameters
    ----------
    half_life_s
        Seconds after which a contribution counts half.
    landmark
        Event time ``L`` the stored sums are relative to; set by the first update.

    Examples
    --------
    >>> fd = ForwardDecay(half_life_s=10.0)
    >>> g = fd.gain(100.0)          # first update sets the landmark
    >>> g
    1.0
    >>> fd.gain(110.0)              # one half-life later counts double
    2.0
    >>> fd.to_decayed(1.0 + 2.0, at=110.0)   # 1 (decayed to 0.5) + 2 (=1 now)
    1.5
    """

    half_life_s: float
    landmark: float | None = None

    def gain(self, t: float) -> float:
        """Scale of a unit contribution made at event time ``t``."""
        if self.landmark is None:
            self.landmark = float(t)
        return decay_factor(self.landmark - t, self.half_life_s)

    def needs_rescale(self, t: float) -> bool:
        """Whether stored sums should be rescaled before an update at ``t``."""
        return (
            self.landmark is not None
            and (t - self.landmark) / self.half_life_s > RESCALE_AFTER_HALF_LIVES
        )

    def rescale_factor(self, new_landmark: float) -> float:
        """Factor to multiply stored sums by when moving the landmark to ``new_landmark``."""
        if self.landmark is None:
            return 1.0
        return decay_factor(new_landmark - self.landmark, self.half_life_s)

    def to_decayed(self, stored: float, at: float) -> float:
        """Decayed value at event time ``at`` of a stored forward-decay sum."""
        if self.landmark is None:
            return 0.0
        return stored * decay_factor(at - self.landmark, self.half_life_s)

    def convert_from(self, other_landmark: float) -> float:
        """Factor turning sums stored against ``other_landmark`` into this landmark's units."""
        if self.landmark is None:
            self.landmark = other_landmark
        return decay_factor(self.landmark - other_landmark, self.half_life_s)
