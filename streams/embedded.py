"""The embedded runner: the engine in-process, fed in event-time order, no broker.

The demo, ``driftrec replay``, the evaluator and the benchmarks use it. It cuts
the stream into micro-batches the way the Faust events agent does
(``stream.take(batch_size, within=…)``), so both paths run the same engine
calls with the same batch semantics.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

from tqdm import tqdm

from models.contracts import BehaviourEvent, Recommendation
from models.engine import Engine

__all__ = ["batched", "run_stream"]


def batched(events: Iterable[BehaviourEvent], size: int) -> Iterator[list[BehaviourEvent]]:
    """Consecutive micro-batches of at most ``size`` events."""
    iterator = iter(events)
    while batch := list(islice(iterator, size)):
        yield batch


def run_stream(
    engine: Engine,
    events: Sequence[BehaviourEvent],
    *,
    batch_size: int = 64,
    on_batch: Callable[[list[BehaviourEvent], list[Recommendation]], None] | None = None,
    progress: bool = True,
    description: str = "events",
) -> int:
    """Stream ``events`` through ``engine.process``; returns recommendations emitted.

    Objects alive at the start (the model, the catalogue) are frozen out of the
    garbage collector's full collections for the run, as a worker does once ready.
    """
    gc.collect()
    gc.freeze()
    try:
        return _run(engine, events, batch_size, on_batch, progress, description)
    finally:
        gc.unfreeze()


def _run(
    engine: Engine,
    events: Sequence[BehaviourEvent],
    batch_size: int,
    on_batch: Callable[[list[BehaviourEvent], list[Recommendation]], None] | None,
    progress: bool,
    description: str,
) -> int:
    emitted = 0
    with tqdm(
        total=len(events), desc=description, unit="ev", disable=not progress, mininterval=0.5
    ) as bar:
        for batch in batched(events, batch_size):
            recommendations = engine.process(batch)
            emitted += len(recommendations)
            if on_batch is not None:
                on_batch(batch, recommendations)
            bar.update(len(batch))
    return emitted
