"""The one retry loop of the worker: try again with exponential backoff, never give up.

Everything the worker retries is something it must not drop — a batch whose
offsets stay uncommitted until it is through, recommendations owed for an
acknowledged batch, a broadcast topic every worker must read, a dependency the
worker cannot start without — so the loop has no attempt limit: it ends when
the call succeeds, when an error it was not told to wait out propagates, or
when the task is cancelled (``asyncio.CancelledError`` is never retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["retry_with_backoff"]

T = TypeVar("T")


async def retry_with_backoff(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    first_delay_s: float,
    max_delay_s: float,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """``await attempt()`` until it returns, sleeping between tries.

    After a ``retry_on`` error, ``on_retry(error, delay_s)`` says why (log it,
    set a gauge) and the loop sleeps ``delay_s``: ``first_delay_s``, doubled
    after every failure up to ``max_delay_s`` (equal values: a fixed delay).
    Other errors propagate at once.

    >>> failures = [OSError("down"), OSError("still down")]
    >>> async def attempt():
    ...     if failures:
    ...         raise failures.pop(0)
    ...     return "up"
    >>> waits = []
    >>> asyncio.run(retry_with_backoff(attempt, retry_on=(OSError,), first_delay_s=0.001,
    ...     max_delay_s=0.0015, on_retry=lambda error, delay_s: waits.append(delay_s)))
    'up'
    >>> waits
    [0.001, 0.0015]
    """
    delay_s = first_delay_s
    while True:
        try:
            return await attempt()
        except retry_on as error:
            if on_retry is not None:
                on_retry(error, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, max_delay_s)
