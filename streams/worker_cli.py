"""The Kafka commands of the ``driftrec`` CLI: ``worker``, ``produce`` and ``tail``.

* ``driftrec worker`` — a Faust worker with the whole topology
  (:mod:`streams.topology`); configured by ``DRIFTREC_*`` variables, it needs
  no argument against the local broker of ``make kafka-up``.
* ``driftrec produce PATH`` — publishes a dataset (a MovieLens folder, or an
  events-contract JSONL file with an optional ``items.jsonl`` beside it): the
  catalogue to the items topic, then the events, at ``--rate`` events/s.
* ``driftrec tail`` — prints recommendation events (or dead letters) as they
  arrive, one JSON object per line.

The commands live on :data:`app` and are added to the main CLI by
:func:`register_worker_commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from streams.settings import WorkerSettings

__all__ = ["app", "publish_dataset", "register_worker_commands", "run_worker", "tail_topic"]

app = typer.Typer(help="driftrec on Kafka: worker, produce, tail.", add_completion=False)
console = Console(stderr=True)


# --------------------------------------------------------------------------- worker


def run_worker(settings: WorkerSettings) -> None:
    """Wait for the brokers (and encoder service), build the topology, run a Faust worker."""
    import faust

    from streams.startup import StartupGate, wait_for_dependencies
    from streams.topology import build_topology, ensure_topics

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Alive (not ready) while the brokers or the encoder service are away, and while the
    # model loads: no crash loop, no liveness probe killing a worker that is starting.
    gate = StartupGate(settings).open()
    try:
        partitions = loop.run_until_complete(
            wait_for_dependencies(settings, gate, ensure_topics=ensure_topics)
        )
        topology = build_topology(settings, events_partitions=partitions["events"])
    finally:
        gate.close()

    class Worker(faust.Worker):
        async def on_stop(self) -> None:
            # Before the app stops its consumer, which waits for every acknowledgement.
            await topology.before_stop()
            await super().on_stop()

        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            # Faust leaves the root logger at DEBUG (its handler filters), so every
            # debug call in aiokafka and Faust builds a record: a few % of a core.
            logger.setLevel(level)

    worker = Worker(topology.app, loglevel=settings.log_level, loop=loop, quiet=True)
    worker.execute_from_commandline()


@app.command()
def worker(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where tables and caches live (DRIFTREC_DATA_DIR).")
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="Web port (DRIFTREC_WEB_PORT).")] = None,
    worker_id: Annotated[str | None, typer.Option(help="Name of this worker.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run a driftrec worker: events → recommendations, with the whole topology."""
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("data_dir", data_dir),
            ("web_port", web_port),
            ("worker_id", worker_id),
            ("log_level", log_level),
        )
        if value is not None
    }
    settings = WorkerSettings(**overrides)
    console.print(
        f"driftrec worker [bold]{settings.resolved_worker_id}[/bold]: "
        f"{settings.kafka_bootstrap}, topics {settings.topic_prefix}*, group {settings.app_id}, "
        f"data {settings.data_dir}, web :{settings.web_port}"
    )
    run_worker(settings)


# --------------------------------------------------------------------------- produce


async def publish_dataset(
    settings: WorkerSettings,
    items: Sequence[Any],
    events: Sequence[Any],
    *,
    rate: float | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Publish catalogue items, then events (at ``rate`` events/s); returns both counts."""
    from aiokafka import AIOKafkaProducer
    from tqdm import tqdm

    from streams.topology import ensure_topics

    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="driftrec-produce",
        acks="all",
        linger_ms=5,
        max_request_size=settings.max_message_bytes,
        **settings.aiokafka_security(),
    )
    await producer.start()
    try:
        items_topic, events_topic = settings.topic("items"), settings.topic("events")
        for item in tqdm(items, desc="items", unit="item", disable=not progress):
            await producer.send(
                items_topic, key=item.item_id.encode("utf-8"), value=item.to_json_bytes()
            )
        await producer.flush()
        started = time.perf_counter()
        with tqdm(total=len(events), desc="events", unit="ev", disable=not progress) as bar:
            for index, event in enumerate(events):
                if rate:
                    ahead = started + index / rate - time.perf_counter()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                await producer.send(
                    events_topic, key=event.user_id.encode("utf-8"), value=event.to_json_bytes()
                )
                if index % 256 == 255:
                    bar.update(256)
            bar.update(len(events) - bar.n)
        await producer.flush()
    finally:
        await producer.stop()
    return len(items), len(events)


@app.command()
def produce(
    path: Annotated[Path, typer.Argument(help="MovieLens folder, or events.jsonl (+items.jsonl).")],
    rate: Annotated[
        float | None, typer.Option(min=0, help="Events per second (default: as fast as possible).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N events.")] = None,
    items: Annotated[bool, typer.Option(help="Publish the catalogue first.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Publish a dataset to the items and events topics."""
    from models.datasets import load_dataset
    from models.record_parser import EventParser

    settings = WorkerSettings()
    dataset = load_dataset(path, EventParser.from_settings(settings), limit=limit)
    console.print(
        f"{dataset.name}: {len(dataset.items):,} items, {len(dataset.events):,} events"
        + (f", {len(dataset.rejected):,} rejected lines" if dataset.rejected else "")
        + f" → {settings.kafka_bootstrap} ({settings.topic_prefix}*)"
    )
    for bad in dataset.rejected[:5]:
        console.print(f"  [red]rejected[/red] {bad.source}:{bad.line}: {bad.error}")
    n_items, n_events = asyncio.run(
        publish_dataset(
            settings,
            dataset.items if items else [],
            dataset.events,
            rate=rate or None,
            progress=progress,
        )
    )
    console.print(f"published {n_items:,} items and {n_events:,} events")


# --------------------------------------------------------------------------- tail


async def tail_topic(
    settings: WorkerSettings,
    topic: str,
    *,
    from_beginning: bool = False,
    user: str | None = None,
    limit: int | None = None,
    timeout_s: float | None = None,
    on_record: Any = print,
) -> int:
    """Read ``topic`` (all partitions, no consumer group); ``on_record(value)`` for each record."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from streams.broadcast import topic_partitions

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="driftrec-tail",
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.max_message_bytes,
        **settings.aiokafka_security(),
    )
    await consumer.start()
    shown = 0
    try:
        partitions = await topic_partitions(consumer, topic)
        if not partitions:
            raise typer.BadParameter(f"topic {topic} does not exist at {settings.kafka_bootstrap}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        wanted_key = None if user is None else user.encode("utf-8")
        while limit is None or shown < limit:
            if deadline is not None and time.monotonic() > deadline:
                break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if wanted_key is not None and record.key != wanted_key:
                        continue
                    on_record(record.value)
                    shown += 1
                    if limit is not None and shown >= limit:
                        return shown
    finally:
        await consumer.stop()
    return shown


def _pretty(value: bytes) -> str:
    record = json.loads(value)
    if "items" not in record:  # a dead letter
        return (
            f"{record.get('source_topic')}[{record.get('partition')}]@{record.get('offset')}: "
            f"{record.get('error')}"
        )
    items = ", ".join(f"{i['item_id']} {i['score']:.2f} {i['source']}" for i in record["items"][:5])
    cluster = record.get("cluster") or {}
    return (
        f"{record['user_id']:>10}  cluster {cluster.get('id')}  v{record['model_version']}  "
        f"{record['latency_ms']:.1f} ms  [{items}]"
    )


@app.command()
def tail(
    dead_letters: Annotated[
        bool, typer.Option("--dead-letters", help="Tail the dead letters instead.")
    ] = False,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record.")] = False,
    user: Annotated[str | None, typer.Option(help="Only this user's recommendations.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N records.")] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop after this many s.")] = None,
    pretty: Annotated[bool, typer.Option(help="One readable line per record, not JSON.")] = False,
) -> None:
    """Print recommendation events (or dead letters) as they arrive, one JSON object per line."""
    settings = WorkerSettings()
    topic = settings.topic("dead_letters" if dead_letters else "recommendations")
    console.print(f"tailing {topic} at {settings.kafka_bootstrap} (Ctrl-C to stop)")

    def show(value: bytes) -> None:
        typer.echo(_pretty(value) if pretty else value.decode("utf-8", "replace"))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            tail_topic(
                settings,
                topic,
                from_beginning=from_beginning,
                user=user,
                limit=limit,
                timeout_s=timeout,
                on_record=show,
            )
        )


def register_worker_commands(cli: typer.Typer) -> None:
    """Add ``worker``, ``produce`` and ``tail`` to the main ``driftrec`` CLI."""
    cli.command()(worker)
    cli.command()(produce)
    cli.command()(tail)


if __name__ == "__main__":  # pragma: no cover
    app()
