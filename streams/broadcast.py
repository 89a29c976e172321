"""Reading a topic in full on every worker, outside any consumer group."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streams.retry import retry_with_backoff
from streams.settings import WorkerSettings

__all__ = ["BroadcastReader", "topic_partitions"]

logger = logging.getLogger(__name__)


async def topic_partitions(consumer: Any, topic: str) -> set[int]:
    """Partition ids of ``topic`` from fresh cluster metadata (empty if it does not exist).

    ``AIOKafkaConsumer.partitions_for_topic`` only knows subscribed topics, so
    this asks the consumer's client for the metadata of all topics.
    """
    cluster = await consumer._client.fetch_all_metadata()  # aiokafka 0.14
    return set(cluster.partitions_for_topic(topic) or ())


class BroadcastReader:
    """Reads every partition of a topic from its beginning, outside any consumer group.

    Faust agents share their topics' partitions among the workers of a group;
    the item vectors, the cluster model and the counts deltas must instead
    reach *every* worker in full. A reader assigns itself all partitions,
    starts at the earliest offset, hands each record to ``handle(key, value)``
    and sets :attr:`caught_up` once it has read up to the end offsets it found
    at start. Records ``handle`` fails on are passed, with their exceptions,
    to ``on_errors`` after each fetch and skipped. If the reader's consumer
    fails it starts again from the next unread offset (never re-applying a
    record: counts deltas are not idempotent).

    Parameters
    ----------
    settings
        Bootstrap servers and security.
    topic
        The topic to read.
    handle
        Called with each record's key and value, in offset order per partition.
    on_errors
        Awaited with ``[(record, exception), …]`` when ``handle`` raised.
    start_after
        An event to wait for before reading (e.g. the catalogue before the counts).
    caught_up
        The event to set once caught up (a new one by default).
    runner
        Runs the handling of each fetch, given as a function without arguments
        (the worker passes :meth:`WorkerRuntime.run_in_engine_thread`: the
        handlers change the engine); by default it runs inline.
    handle_many
        Instead of ``handle``: called with each partition's records of a fetch,
        in offset order, returning ``[(record, exception), …]`` for those it
        could not apply (a catalogue of 10^6 items is adopted in batches).
    positions
        Where to start reading, per partition (a worker that saved its catalogue
        reads only what came after); partitions not named start at the beginning.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        topic: str,
        handle: Callable[[bytes | None, bytes | None], Any],
        *,
        on_errors: Callable[[list[tuple[Any, BaseException]]], Awaitable[None]] | None = None,
        start_after: asyncio.Event | None = None,
        caught_up: asyncio.Event | None = None,
        runner: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
        handle_many: Callable[[list[Any]], list[tuple[Any, BaseException]]] | None = None,
        positions: dict[int, int] | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.topic = topic
        self.handle = handle
        self.on_errors = on_errors
        self.start_after = start_after
        self.caught_up = caught_up if caught_up is not None else asyncio.Event()
        self.handle_many = handle_many
        self.records_read = 0
        #: Next offset to read, per partition.
        self.positions: dict[int, int] = dict(positions or {})

    async def run_forever(self, retry_s: float = 2.0) -> None:
        """:meth:`run`, restarted after ``retry_s`` whenever it fails."""
        await retry_with_backoff(
            self.run,
            first_delay_s=retry_s,
            max_delay_s=retry_s,
            on_retry=lambda error, delay_s: logger.error(
                "reader of %s failed; restarting in %.0f s", self.topic, delay_s, exc_info=error
            ),
        )

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        if self.start_after is not None:
            await self.start_after.wait()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"driftrec-{self.settings.resolved_worker_id}-{self.topic}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=self.settings.max_message_bytes,
            **self.settings.aiokafka_security(),
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self.topic)
            while not partitions:
                logger.info("waiting for topic %s to exist", self.topic)
                await asyncio.sleep(0.5)
                partitions = await topic_partitions(consumer, self.topic)
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            for tp in assigned:
                if tp.partition in self.positions:
                    consumer.seek(tp, self.positions[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            end_offsets = await consumer.end_offsets(assigned)
            await self._check_caught_up(consumer, end_offsets)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                failures: list[tuple[Any, BaseException]] = []
                if batches:

                    def handle_all(fetched: dict = batches, failed: list = failures) -> None:
                        for records in fetched.values():
                            if self.handle_many is not None:
                                self._handle_many(records, failed)
                                continue
                            for record in records:
                                self._handle(record, failed)

                    if self.runner is None:
                        handle_all()
                    else:
                        await self.runner(handle_all)
                if failures:
                    await self._report(failures)
                if not self.caught_up.is_set():
                    await self._check_caught_up(consumer, end_offsets)
        finally:
            await consumer.stop()

    def _handle(self, record: Any, failures: list[tuple[Any, BaseException]]) -> None:
        self.records_read += 1
        self.positions[record.partition] = record.offset + 1
        try:
            self.handle(record.key, record.value)
        except Exception as error:
            failures.append((record, error))

    def _handle_many(self, records: list[Any], failures: list[tuple[Any, BaseException]]) -> None:
        assert self.handle_many is not None
        self.records_read += len(records)
        self.positions[records[-1].partition] = records[-1].offset + 1
        try:
            failures.extend(self.handle_many(records))
        except Exception as error:
            failures.extend((record, error) for record in records)

    async def _report(self, failures: list[tuple[Any, BaseException]]) -> None:
        if self.on_errors is not None:
            await self.on_errors(failures)
            return
        for record, error in failures:
            logger.error(
                "could not apply %s[%d]@%d: %r",
                record.topic,
                record.partition,
                record.offset,
                error,
            )

    async def _check_caught_up(self, consumer: Any, end_offsets: dict) -> None:
        for tp, end in end_offsets.items():
            if await consumer.position(tp) < end:
                return
        if not self.caught_up.is_set():
            logger.info("%s: caught up after %d records", self.topic, self.records_read)
            self.caught_up.set()
