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

__all__ = ["ForwardDecay"]

#: Landmark moves once updates are this many half-lives past it (2^64 ≈ 1.8e19).
RESCALE_AFTER_HALF_LIVES = 64.0


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
        return math.exp2((t - self.landmark) / self.half_life_s)

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
        return math.exp2(-(new_landmark - self.landmark) / self.half_life_s)

    def to_decayed(self, stored: float, at: float) -> float:
        """Decayed value at event time ``at`` of a stored forward-decay sum."""
        if self.landmark is None:
            return 0.0
        return stored * math.exp2(-(at - self.landmark) / self.half_life_s)

    def convert_from(self, other_landmark: float) -> float:
        """Factor turning sums stored against ``other_landmark`` into this landmark's units."""
        if self.landmark is None:
            self.landmark = other_landmark
        return math.exp2((other_landmark - self.landmark) / self.half_life_s)
