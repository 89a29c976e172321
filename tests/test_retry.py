"""The worker's one retry loop: backoff, what it waits out, what it lets through."""

from __future__ import annotations

import asyncio

import pytest

from streams.retry import retry_with_backoff


def test_backoff_doubles_up_to_the_cap_and_never_gives_up() -> None:
    tries, waits = [], []

    async def attempt() -> int:
        tries.append(1)
        if len(tries) < 6:
            raise OSError("down")
        return len(tries)

    result = asyncio.run(
        retry_with_backoff(
            attempt,
            retry_on=(OSError,),
            first_delay_s=0.001,
            max_delay_s=0.004,
            on_retry=lambda error, delay_s: waits.append(delay_s),
        )
    )
    assert result == 6
    assert waits == [0.001, 0.002, 0.004, 0.004, 0.004]


def test_errors_it_was_not_told_to_wait_out_propagate_at_once() -> None:
    tries = []

    async def attempt() -> None:
        tries.append(1)
        raise ValueError("a wrong setting")

    with pytest.raises(ValueError):
        asyncio.run(
            retry_with_backoff(attempt, retry_on=(OSError,), first_delay_s=0.001, max_delay_s=1)
        )
    assert len(tries) == 1


def test_cancellation_ends_the_loop_even_when_every_error_is_retried() -> None:
    async def main() -> None:
        async def attempt() -> None:
            await asyncio.sleep(10)

        task = asyncio.create_task(retry_with_backoff(attempt, first_delay_s=0.001, max_delay_s=1))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
