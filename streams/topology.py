"""driftrec's Kafka topology: every topic in and out, who writes it, who reads it, the state.

::

    topic (key)                         parts cleanup  written by            read by
    ----------------------------------- ----- -------- --------------------- ---------------------
    driftrec.events (user_id)           P     delete   your producers        events agent (group)
    driftrec.recommendations (user_id)  P     delete   events agent          your consumers
    driftrec.items (item_id)            P     compact  your catalogue        items agent (group)
    driftrec.item-vectors (item_id)     P     compact  items agent           every worker
    driftrec.cluster-deltas (worker)    1     delete   every worker (timer)  model agent (owner)
    driftrec.cluster-model ("model")    1     compact  model agent           every worker
    driftrec.collab-deltas (worker)     1     30 days  every worker (timer)  every worker
    driftrec.dead-letters (topic/p/off) 1     delete   agents and readers    operators
    driftrec.interest-events (user_id   P     delete   events agent (moves), your consumers
      or cluster/<id>)                                 model agent (clusters)
    <app_id>-windows-changelog (user)   P     compact  the windows table     recovery, standbys

    events ──► [events agent] ──► recommendations
                 │  windows table: RocksDB (rocksdict) per partition, changelogged
                 │  Engine.process(batch): one encoder call, one ranking per batch
                 ├──► interest-events (a user's confirmed move to another cluster)
                 └──► dead-letters (anything unparsable, with its bytes and reason)
    items ──► [items agent: encode once] ──► item-vectors ──► [catalogue reader] every worker
    [ship_deltas timer] ──► cluster-deltas ──► [model agent] ──► cluster-model ──► [model reader]
                                                     └──► interest-events (born, merged, retired)
    [ship_deltas timer] ──► collab-deltas ──► [counts reader] every worker (skips its own)

The events agent reads its partitions' users, so it keeps their windows; the
item vectors, the cluster model and the collaborative counts are global, so
every worker reads those topics in full (:class:`~streams.broadcast.BroadcastReader`)
and ranks over the whole catalogue with everybody's counts, a few seconds behind.

:func:`build_topology` declares all of it — app, topics, table, agents, timers,
readers, web views — in one place; :func:`ensure_topics` creates the topics
with their partition counts and cleanup policies before a worker starts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.clustering.decaying_centroids import DecayingCentroids
from models.engine import Engine
from models.item_catalog import TextEncoderLike
from models.state_store import StateStore
from streams.agents import events_agent, items_agent, model_agent, ship_deltas
from streams.broadcast import BroadcastReader
from streams.dead_letters import DeadLetterSink
from streams.metrics import WorkerMetrics, events_backlog, register_web_views
from streams.publisher import BatchPublisher
from streams.runtime import WorkerRuntime
from streams.settings import WorkerSettings
from streams.table_store import FaustTableStore

__all__ = [
    "TopicSpec",
    "Topology",
    "build_topology",
    "build_worker_engine",
    "ensure_topics",
    "topic_specs",
]

logger = logging.getLogger(__name__)

#: Window-table store options: bounded RocksDB memory per partition database.
_TABLE_OPTIONS = {
    "driver": "rocksdict",
    "block_cache_size": 64 << 20,
    "write_buffer_size": 16 << 20,
    "max_write_buffer_number": 2,
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as driftrec creates it: name, partitions and topic-level configs."""

    role: str
    name: str
    partitions: int
    configs: dict[str, str]

    @property
    def compacted(self) -> bool:
        return self.configs.get("cleanup.policy") == "compact"


def topic_specs(settings: WorkerSettings) -> dict[str, TopicSpec]:
    """Every topic of the topology (but the table changelog, which Faust creates).

    >>> specs = topic_specs(WorkerSettings(topic_prefix="driftrec.", partitions=4))
    >>> [(s.name, s.partitions, s.compacted) for s in specs.values()]
    [('driftrec.events', 4, False), ('driftrec.recommendations', 4, False),
     ('driftrec.items', 4, True), ('driftrec.item-vectors', 4, True),
     ('driftrec.cluster-deltas', 1, False), ('driftrec.cluster-model', 1, True),
     ('driftrec.collab-deltas', 1, False), ('driftrec.dead-letters', 1, False),
     ('driftrec.interest-events', 4, False)]
    """
    p = settings.partitions
    compact = {"cleanup.policy": "compact"}
    retention = {"retention.ms": str(int(settings.collab_delta_retention_s * 1000))}
    large = {"max.message.bytes": str(settings.max_message_bytes)}
    layout: list[tuple[str, int, dict[str, str]]] = [
        ("events", p, {}),
        ("recommendations", p, {}),
        ("items", p, compact),
        ("item_vectors", p, compact),
        ("cluster_deltas", 1, large),
        ("cluster_model", 1, {**compact, **large}),
        ("collab_deltas", 1, {**retention, **large}),
        ("dead_letters", 1, large),
        ("interest_events", p, {}),
    ]
    return {
        role: TopicSpec(role, settings.topic(role), partitions, configs)
        for role, partitions, configs in layout
    }


async def ensure_topics(settings: WorkerSettings, *, timeout_s: float = 30.0) -> dict[str, int]:
    """Create the missing topics; returns the partition count of every topic by role.

    Existing topics are left as they are (an events topic created elsewhere
    keeps its partitions, and the window table follows it).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    specs = topic_specs(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"driftrec-admin-{settings.resolved_worker_id}",
        **settings.aiokafka_security(),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs.values() if spec.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=settings.replication,
                        topic_configs=spec.configs,
                    )
                    for spec in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = rest[0] if rest else ""
                    raise RuntimeError(f"could not create topic {name}: error {code} {message}")
            logger.info("created topics %s", [spec.name for spec in missing])
        counts: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        for role, spec in specs.items():
            while True:
                described = await admin.describe_topics([spec.name])
                partitions = described[0]["partitions"] if described else []
                if partitions:
                    counts[role] = len(partitions)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {spec.name} shows no partitions after {timeout_s} s")
                await asyncio.sleep(0.1)
        return counts
    finally:
        await admin.close()


def build_worker_engine(
    settings: WorkerSettings, store: StateStore, *, encoder: TextEncoderLike | None = None
) -> Engine:
    """The engine of a worker: its windows in ``store`` and a worker-role clusterer.

    Without ``encoder`` the model of the settings is loaded (MiniLM by default),
    behind a vector cache under ``data_dir/vector-cache``.
    """
    clusterer = None
    if settings.clustering:
        params = Engine.make_clusterer(settings).params
        clusterer = DecayingCentroids(**params, role="worker")
    return Engine.build(
        settings, encoder=encoder, store=store, clusterer=clusterer, ships_deltas=True
    )


@dataclass
class Topology:
    """The Faust app of a worker with its topics, table, runtime and broadcast readers."""

    app: Any
    topics: dict[str, Any]
    windows: Any
    runtime: WorkerRuntime
    readers: dict[str, BroadcastReader]
    #: Awaited when the worker begins to stop, before Faust waits for acknowledgements.
    before_stop: Any = None


def build_topology(
    settings: WorkerSettings,
    *,
    events_partitions: int | None = None,
    encoder: TextEncoderLike | None = None,
) -> Topology:
    """Declare the worker: app, topics, windows table, agents, timers, readers, web views.

    ``events_partitions`` is the actual partition count of the events topic
    (from :func:`ensure_topics`); the window table's changelog must match it.
    """
    import faust

    from streams import faust_fixes

    faust_fixes.apply()
    partitions = events_partitions or settings.partitions
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls(),
        broker_credentials=settings.faust_credentials(),
        store="rocksdb://",
        datadir=str(Path(settings.data_dir) / "faust"),
        topic_partitions=partitions,
        topic_replication_factor=settings.replication,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        producer_max_request_size=settings.max_message_bytes,
        web_enabled=settings.web_enabled,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        autodiscover=False,
        worker_redirect_stdouts=False,
    )

    def topic(role: str, partitions: int) -> Any:
        # Raw bytes in and out: the agents parse (and dead-letter) values themselves.
        return app.topic(
            settings.topic(role),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    topics = {
        "events": topic("events", partitions),
        "recommendations": topic("recommendations", partitions),
        "items": topic("items", settings.partitions),
        "item_vectors": topic("item_vectors", settings.partitions),
        "cluster_deltas": topic("cluster_deltas", 1),
        "cluster_model": topic("cluster_model", 1),
        "collab_deltas": topic("collab_deltas", 1),
        "dead_letters": topic("dead_letters", 1),
        "interest_events": topic("interest_events", partitions),
    }
    windows = app.Table(
        "windows",
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        options=dict(_TABLE_OPTIONS),
        help="Each user's window, seen items and cluster id (engine keys w:/s:/c:<user>).",
    )
    window_store = FaustTableStore(windows)
    metrics = WorkerMetrics()
    engine = build_worker_engine(settings, window_store, encoder=encoder)
    runtime = WorkerRuntime(settings, engine, window_store=window_store, metrics=metrics)
    dead_letters = DeadLetterSink(
        topics["dead_letters"],
        on_sent=lambda letter: metrics.dead_letters.labels(
            source_topic=letter.source_topic, field=letter.field or letter.error_type
        ).inc(),
        on_failed=lambda letter: metrics.dead_letters_failed.inc(),
    )

    # --- agents: Kafka in, engine, Kafka out ---------------------------------------
    publisher = BatchPublisher(settings)  # recommendations: one record batch per partition

    @app.agent(topics["events"], name="events")
    async def events(stream: Any) -> None:
        """events → engine → recommendations, dead-letters."""
        # One batch writes up to batch_max table entries (changelog records) at once;
        # Faust pauses all intake while more than 100 wait to be produced, which
        # turns every large batch into a stall. Let one batch's worth through.
        buffer = app.producer.buffer
        buffer.max_messages = max(buffer.max_messages, 2 * settings.batch_max)
        await events_agent(
            stream,
            runtime,
            publisher,
            dead_letters,
            backlog=lambda: events_backlog(app, runtime),
            generation=lambda: app.consumer_generation_id,
            hold_acks=settings.ack_after_deltas,
        )

    @app.agent(topics["items"], name="items")
    async def items(stream: Any) -> None:
        """items → encoder → item-vectors."""
        await items_agent(stream, runtime, topics["item_vectors"], dead_letters)

    if engine.clusterer is not None:

        @app.agent(topics["cluster_deltas"], name="model")
        async def model(stream: Any) -> None:
            """cluster-deltas → authoritative model → cluster-model."""
            await model_agent(
                stream, runtime, topics["cluster_model"], dead_letters, topics["interest_events"]
            )

    @app.timer(interval=settings.delta_interval_s, name="ship_deltas")
    async def deltas() -> None:
        await ship_deltas(runtime, topics["cluster_deltas"], topics["collab_deltas"])

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stubs miss async receivers
    async def last_deltas(sender: Any, **kwargs: Any) -> None:
        """Ship what is still pending, so a restart (which replays the deltas) misses nothing."""
        await ship_deltas(runtime, topics["cluster_deltas"], topics["collab_deltas"])
        await publisher.stop()
        await runtime.run_off_loop(
            lambda: runtime.catalogue.save(readers["item_vectors"].positions)
        )
        runtime.close()
        gc.unfreeze()  # let the interpreter's last collection free everything

    @app.task
    async def freeze_startup_objects() -> None:
        """Keep the model and libraries out of full garbage collections once ready.

        A worker holds millions of long-lived objects (torch, transformers,
        Faust); every full collection walked them all: 300-450 ms pauses of the
        event loop, the p99 latency. Frozen, they are never scanned again.
        """
        await runtime.wait_ready()
        gc.collect()
        gc.freeze()

    # --- broadcast readers: what every worker needs in full ------------------------
    async def report(failures: list[tuple[Any, BaseException]]) -> None:
        await dead_letters.send(runtime.broadcast_dead_letters(failures))

    items_read = asyncio.Event()
    saved_positions = runtime.catalogue.load()
    readers = {
        "item_vectors": BroadcastReader(
            settings,
            settings.topic("item_vectors"),
            runtime.catalogue.apply_item_vector,
            on_errors=report,
            caught_up=items_read,
            runner=runtime.run_in_engine_thread,
            handle_many=runtime.catalogue.apply_item_vectors,
            positions=saved_positions,
        ),
        "collab_deltas": BroadcastReader(
            settings,
            settings.topic("collab_deltas"),
            runtime.apply_collab_delta,
            on_errors=report,
            start_after=runtime.catalog_loaded,
            caught_up=runtime.counts_loaded,
            runner=runtime.run_in_engine_thread,
        ),
    }
    if engine.clusterer is not None:
        readers["cluster_model"] = BroadcastReader(
            settings,
            settings.topic("cluster_model"),
            lambda key, value: runtime.apply_cluster_snapshot(value),
            on_errors=report,
            start_after=runtime.catalog_loaded,
            caught_up=runtime.model_loaded,
            runner=runtime.run_in_engine_thread,
        )
    else:
        runtime.model_loaded.set()
    for reader in readers.values():
        app.task(_forever(reader))

    @app.task
    async def prepare_ranking() -> None:
        """The catalogue is loaded once its vectors are read and the index is ready."""
        await items_read.wait()
        await runtime.run_off_loop(runtime.catalogue.prepare_ranking)
        runtime.catalog_loaded.set()
        if not saved_positions and runtime.engine.index is not None:
            # Read from scratch and indexed: saved now, a restart after a crash skips both.
            await runtime.run_off_loop(
                lambda: runtime.catalogue.save(readers["item_vectors"].positions)
            )

    async def before_stop() -> None:
        """Ship the held events' deltas and acknowledge the events, before Faust stops.

        Faust's consumer waits, as it stops, until every event it handed out is
        acknowledged; the held ones are only once their deltas are shipped,
        and the delta timer is stopped by then.
        """
        runtime.stopping = True
        await ship_deltas(runtime, topics["cluster_deltas"], topics["collab_deltas"])

    register_web_views(app, runtime)
    return Topology(
        app=app,
        topics=topics,
        windows=windows,
        runtime=runtime,
        readers=readers,
        before_stop=before_stop,
    )


def _forever(reader: BroadcastReader) -> Any:
    async def read() -> None:
        await reader.run_forever()

    read.__name__ = read.__qualname__ = f"read_{reader.topic}"
    return read
