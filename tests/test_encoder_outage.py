"""What a worker does with its events while the encoder service is down.

With ``encoder_failure=retry`` a batch is tried again with backoff until the
encoder answers, and nothing is learned twice or dead-lettered; with
``dead-letter`` every event of the batch becomes a dead letter naming the
outage. The runtime and agents run here without a broker: the records are
plain stand-ins for Kafka's, the engine and MiniLM are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from models.remote_encoder import EncoderUnavailableError
from streams.agents import events_agent, retry_while_encoder_unavailable
from streams.metrics import WorkerMetrics
from streams.runtime import WorkerRuntime
from streams.settings import WorkerSettings
from streams.table_store import FaustTableStore
from streams.topology import build_worker_engine
from tests.records import Event, Message


class OutageEncoder:
    """The real encoder behind a switch: the next ``failures`` calls find the service down."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.model_version = inner.model_version
        self.failures = 0
        self.calls = 0

    def resolve_max_tokens(self, max_tokens: int | None = None) -> int:
        return self.inner.resolve_max_tokens(max_tokens)

    def encode(self, texts: Sequence[str], *, max_tokens: int | None = None) -> np.ndarray:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise EncoderUnavailableError("the encoder service at http://tei:8080 is unavailable")
        return self.inner.encode(texts, max_tokens=max_tokens)


def events_batch(n: int, start: int = 0) -> list[Event]:
    """Events on items nobody has seen, each with its text: the encoder must run."""
    batch = []
    for offset in range(start, start + n):
        user = f"u{offset % 3}"
        value = {
            "user_id": user,
            "item_id": f"new-{offset}",
            "event": "click",
            "ts": 1_800_000_000.0 + offset,
            "event_id": f"e{offset}",
            "item_text": f"a film about topic {offset}",
        }
        message = Message("driftrec.events", 0, offset, user.encode(), json.dumps(value).encode())
        batch.append(Event(message))
    return batch


def runtime(minilm_encoder: Any, **settings: Any) -> tuple[WorkerRuntime, OutageEncoder]:
    encoder = OutageEncoder(minilm_encoder)
    worker_settings = WorkerSettings(worker_id="w1", **settings)
    store = FaustTableStore({})
    engine = build_worker_engine(worker_settings, store, encoder=encoder)
    rt = WorkerRuntime(worker_settings, engine, window_store=store, metrics=WorkerMetrics())
    for loaded in (rt.catalog_loaded, rt.model_loaded, rt.counts_loaded):
        loaded.set()
    return rt, encoder


def test_dead_letter_policy_dead_letters_the_batch_with_the_reason(minilm_encoder: Any) -> None:
    rt, encoder = runtime(minilm_encoder, encoder_failure="dead-letter")
    encoder.failures = 1
    outcome = rt.process_events(events_batch(4))
    assert outcome.recommendations == []
    assert [d.offset for d in outcome.dead_letters] == [0, 1, 2, 3]
    assert {d.error_type for d in outcome.dead_letters} == {"EncoderUnavailableError"}
    assert "http://tei:8080 is unavailable" in outcome.dead_letters[0].error
    assert encoder.calls == 1  # not once more per event: the service is down for all of them
    assert len(rt.window_store.table) == 0  # nothing learned


def test_retry_policy_raises_then_the_batch_is_retried_until_the_encoder_answers(
    minilm_encoder: Any,
) -> None:
    rt, encoder = runtime(minilm_encoder, encoder_backoff_s=0.01, encoder_retry_max_s=0.2)
    batch = events_batch(6)
    encoder.failures = 1
    with pytest.raises(EncoderUnavailableError):
        rt.process_events(batch)
    assert len(rt.window_store.table) == 0

    encoder.failures = 3
    availability = []  # the gauge as each try starts

    def process(records: Sequence[Event]) -> Any:
        availability.append(rt.metrics.registry.get_sample_value("driftrec_encoder_available"))
        return rt.process_events(records)

    outcome = asyncio.run(retry_while_encoder_unavailable(process, batch, rt.settings, rt.metrics))
    assert availability == [1.0, 0.0, 0.0, 0.0]  # up, then down while the service fails
    assert rt.metrics.registry.get_sample_value("driftrec_encoder_available") == 1.0
    assert encoder.calls == 1 + 4
    assert outcome.dead_letters == []
    assert [r.event_id for r in outcome.recommendations] == [f"e{i}" for i in range(6)]
    # Each event was learned once: every user's window holds exactly their two events.
    windows = rt.engine.windows.get_windows(["u0", "u1", "u2"])
    assert [len(window) for window in windows] == [2, 2, 2]


def test_items_follow_the_same_policy(minilm_encoder: Any) -> None:
    items = [
        Event(Message("driftrec.items", 0, i, f"m{i}".encode(), json.dumps(
            {"item_id": f"m{i}", "title": f"Film {i}"}).encode()))
        for i in range(3)
    ]  # fmt: skip
    rt, encoder = runtime(minilm_encoder, encoder_failure="dead-letter")
    encoder.failures = 10
    outcome = rt.catalogue.encode_items(items)
    assert outcome.vector_records == [] and len(outcome.dead_letters) == 3

    rt, encoder = runtime(minilm_encoder, encoder_backoff_s=0.01)
    encoder.failures = 1
    with pytest.raises(EncoderUnavailableError):
        rt.catalogue.encode_items(items)
    assert len(rt.catalogue.encode_items(items).vector_records) == 3


class Stream:
    """A Faust stream stand-in that hands out the given batches."""

    def __init__(self, batches: list[list[Event]]) -> None:
        self.batches = batches

    async def take_events(self, n: int, within: float) -> AsyncIterator[list[Event]]:
        for batch in self.batches:
            yield batch


class Publisher:
    def __init__(self) -> None:
        self.published: list[list[tuple[bytes, bytes | None]]] = []

    async def publish(self, topic: str, records: Any, *, headers: Any = ()) -> None:
        self.published.append(list(records))


class Letters:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, letters: Any) -> None:
        self.sent += letters


def test_events_agent_publishes_every_event_after_an_outage(minilm_encoder: Any) -> None:
    rt, encoder = runtime(minilm_encoder, encoder_backoff_s=0.01)
    encoder.failures = 2
    publisher, letters = Publisher(), Letters()
    stream = Stream([events_batch(3), events_batch(3, start=3)])
    asyncio.run(events_agent(stream, rt, publisher, letters))  # type: ignore[arg-type]
    assert [len(records) for records in publisher.published] == [3, 3]
    assert letters.sent == []
    assert encoder.calls == 2 + 2


def test_sequence_mode_batch_that_fails_in_the_encoder_leaves_no_trace(minilm_encoder) -> None:
    """Sequence mode encodes the windows after they change: a failure there must undo nothing."""
    from models.contracts import BehaviourEvent, CatalogItem
    from models.engine import Engine
    from models.settings import EngineSettings
    from models.state_store import MemoryStore

    settings = EngineSettings(interest_mode="sequence", clustering=False)
    item_encoder = OutageEncoder(minilm_encoder)
    sequence_encoder = OutageEncoder(minilm_encoder)
    engine = Engine(
        settings,
        encoder=item_encoder,
        sequence_encoder=sequence_encoder,
        store=MemoryStore(),
        clusterer=None,
    )
    engine.upsert_items([CatalogItem(item_id=f"i{n}", title=f"film {n}") for n in range(6)])
    ts = 1_800_000_000.0
    first = [
        BehaviourEvent(user_id="u", item_id=f"i{n}", event="view", ts=ts + n, weight=1.0)
        for n in range(3)
    ]
    engine.process(first)
    popularity = engine.counts.popularity.values.copy()
    entries = engine.counts.transitions.n_entries()
    second = [
        BehaviourEvent(user_id="u", item_id=f"i{n}", event="view", ts=ts + n, weight=1.0)
        for n in range(3, 6)
    ]

    sequence_encoder.failures = 1
    with pytest.raises(EncoderUnavailableError):
        engine.process(second)
    assert np.array_equal(engine.counts.popularity.values, popularity)
    assert engine.counts.transitions.n_entries() == entries
    assert [e.item_id for e in engine.windows.get_windows(["u"])[0].entries] == ["i0", "i1", "i2"]

    engine.process(second)  # the retry learns the batch once
    again = Engine(
        settings,
        encoder=minilm_encoder,
        store=MemoryStore(),
        clusterer=None,
    )
    again.upsert_items([CatalogItem(item_id=f"i{n}", title=f"film {n}") for n in range(6)])
    again.process(first)
    again.process(second)
    n = len(again.counts.popularity.values)
    assert np.allclose(engine.counts.popularity.values[:n], again.counts.popularity.values[:n])


class StallingEncoder(OutageEncoder):
    """The first call blocks its thread for ``stall_s``, as a socket waiting on a hung service."""

    def __init__(self, inner: Any, stall_s: float) -> None:
        super().__init__(inner)
        self.stall_s = stall_s

    def encode(self, texts: Sequence[str], *, max_tokens: int | None = None) -> np.ndarray:
        if self.calls == 0:
            time.sleep(self.stall_s)
        return super().encode(texts, max_tokens=max_tokens)


def test_a_hung_encoder_does_not_stop_the_event_loop(minilm_encoder: Any) -> None:
    """While a batch waits on the encoder, heartbeats and /healthz (the event loop) go on."""
    encoder = StallingEncoder(minilm_encoder, stall_s=2.0)
    worker_settings = WorkerSettings(worker_id="w1", engine_thread="always")
    store = FaustTableStore({})
    engine = build_worker_engine(worker_settings, store, encoder=encoder)
    rt = WorkerRuntime(worker_settings, engine, window_store=store, metrics=WorkerMetrics())
    for loaded in (rt.catalog_loaded, rt.model_loaded, rt.counts_loaded):
        loaded.set()
    publisher, letters = Publisher(), Letters()

    async def main() -> float:
        ticks: list[float] = []

        async def heartbeat() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        beating = asyncio.create_task(heartbeat())
        await events_agent(Stream([events_batch(3)]), rt, publisher, letters)  # type: ignore[arg-type]
        beating.cancel()
        return max(b - a for a, b in itertools.pairwise(ticks))

    worst_gap_s = asyncio.run(main())
    assert [len(records) for records in publisher.published] == [3]
    assert encoder.calls >= 1
    assert worst_gap_s < 0.5, f"the event loop stood still for {worst_gap_s:.2f} s"


def test_the_engine_leaves_the_loop_where_its_encoder_can_block() -> None:
    """auto: off the loop with a remote encoder or in sequence mode, inline otherwise."""

    def off_loop(**settings: Any) -> bool:
        engine = SimpleNamespace(clusterer=None, stats=SimpleNamespace(encoder_s=0.0))
        runtime = WorkerRuntime(
            WorkerSettings(worker_id="w", **settings),
            engine,  # type: ignore[arg-type]
            window_store=FaustTableStore({}),
            metrics=WorkerMetrics(),
        )
        return runtime.off_loop

    assert off_loop(encoder_backend="remote", encoder_url="http://tei:8080")
    assert off_loop(interest_mode="sequence")
    assert not off_loop()
    assert off_loop(engine_thread="always") and not off_loop(
        encoder_backend="remote", encoder_url="http://tei:8080", engine_thread="never"
    )
