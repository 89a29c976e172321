"""Prometheus metrics of a worker, and its web views: liveness, readiness, metrics, state.

:class:`WorkerMetrics` holds every metric in its own registry (so several
workers in one process never collide). :func:`register_web_views` adds to the
Faust app's web server:

==================  ==========================================================
``/healthz``        liveness: the event loop answers (200)
``/readyz``         readiness: catalogue, cluster model and counts caught up,
                    partitions assigned, not rebalancing (200, else 503)
``/metrics``        Prometheus text format
``/state``          JSON summary: model version, clusters, catalogue size …
``/state/counts``   collaborative counts by item id, decayed to ``?at=<ts>``
``/state/item``     what the catalogue holds for ``?id=<item id>``
``/console``        the live console page (streams/console.py), over ``/console/data``
                    and ``/console/user?id=<user id>``
==================  ==========================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from streams.console_page import PAGE

if TYPE_CHECKING:
    from streams.runtime import WorkerRuntime

__all__ = [
    "WorkerMetrics",
    "events_backlog",
    "events_lag",
    "observe_consumer_lag",
    "readiness",
    "register_web_views",
]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class WorkerMetrics:
    """Every metric a worker exports, in one registry.

    Parameters
    ----------
    registry
        Where the metrics are registered; a fresh registry by default.

    Examples
    --------
    >>> metrics = WorkerMetrics()
    >>> metrics.events_in.inc(3)
    >>> metrics.dead_letters.labels(source_topic="driftrec.events", field="ts").inc()
    >>> text = metrics.exposition().decode()
    >>> "driftrec_events_in_total 3.0" in text
    True
    >>> 'driftrec_dead_letters_total{field="ts",source_topic="driftrec.events"} 1.0' in text
    True
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.events_in = Counter(
            "driftrec_events_in", "Records read from the events topic.", registry=r
        )
        self.events_processed = Counter(
            "driftrec_events_processed", "Valid events learned by the engine.", registry=r
        )
        self.recommendations_out = Counter(
            "driftrec_recommendations_out", "Recommendation events published.", registry=r
        )
        self.dead_letters = Counter(
            "driftrec_dead_letters",
            "Records sent to the dead-letters topic, by source topic and offending field.",
            ["source_topic", "field"],
            registry=r,
        )
        self.dead_letters_failed = Counter(
            "driftrec_dead_letters_failed",
            "Dead letters that could not be published (logged at ERROR).",
            registry=r,
        )
        self.items_encoded = Counter(
            "driftrec_items_encoded", "Catalogue texts encoded by the items agent.", registry=r
        )
        self.item_vectors_applied = Counter(
            "driftrec_item_vectors_applied", "Item-vector records adopted.", registry=r
        )
        self.deltas_sent = Counter(
            "driftrec_deltas_sent", "Deltas shipped, by kind.", ["kind"], registry=r
        )
        self.delta_bytes = Counter(
            "driftrec_delta_bytes", "Bytes of deltas shipped, by kind.", ["kind"], registry=r
        )
        self.offsets_skipped = Counter(
            "driftrec_offsets_skipped",
            "Events-topic offsets the consumer moved past without handing them to the events "
            "agent (transaction markers, compaction, or a consumer defect: see the log).",
            registry=r,
        )
        self.deltas_applied = Counter(
            "driftrec_deltas_applied", "Deltas merged or applied, by kind.", ["kind"], registry=r
        )
        self.batch_size = Histogram(
            "driftrec_batch_size",
            "Valid events per engine call.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "driftrec_batch_seconds",
            "Time of one engine call (learn + rank) for a batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.encoder_seconds = Histogram(
            "driftrec_encoder_seconds",
            "Encoder time per call that encoded anything.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "driftrec_event_to_recommendation_seconds",
            "From an event's Kafka timestamp to its recommendation being handed to the producer.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.clusters = Gauge("driftrec_clusters", "Live interest clusters.", registry=r)
        self.model_version = Gauge(
            "driftrec_model_version", "Version of the adopted cluster model.", registry=r
        )
        self.catalog_items = Gauge(
            "driftrec_catalog_items", "Recommendable items in the catalogue.", registry=r
        )
        self.encoder_available = Gauge(
            "driftrec_encoder_available",
            "0 while the encoder service is down and batches wait for it, else 1.",
            registry=r,
        )
        self.encoder_available.set(1)
        self.consumer_lag = Gauge(
            "driftrec_consumer_lag",
            "Events not yet processed, per assigned events partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge("driftrec_ready", "1 when the worker is ready.", registry=r)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def readiness(app: Any, runtime: WorkerRuntime) -> dict[str, Any]:
    """Readiness checks of a worker; ``ready`` is their conjunction."""
    try:
        assigned = len(app.consumer.assignment())
    except Exception:  # the consumer is not started yet
        assigned = 0
    checks = {
        "catalog_loaded": runtime.catalog_loaded.is_set(),
        "model_loaded": runtime.model_loaded.is_set(),
        "counts_loaded": runtime.counts_loaded.is_set(),
        "assigned_partitions": assigned,
        "rebalancing": bool(getattr(app, "rebalancing", False)),
    }
    checks["ready"] = (
        checks["catalog_loaded"]
        and checks["model_loaded"]
        and checks["counts_loaded"]
        and assigned > 0
        and not checks["rebalancing"]
    )
    return checks


def events_lag(app: Any, runtime: WorkerRuntime) -> dict[Any, int]:
    """Events queued behind the last one processed, per assigned events partition.

    Partitions with nothing processed yet or no known high watermark are left out.
    """
    events_topic = runtime.settings.topic("events")
    try:
        assignment = app.consumer.assignment()
    except Exception:  # the consumer is not started yet
        return {}
    lag = {}
    for tp in assignment:
        if tp.topic != events_topic:
            continue
        highwater = app.consumer.highwater(tp)
        last = runtime.last_offsets.get(tp.partition)
        if highwater is not None and last is not None:
            lag[tp] = max(0, highwater - last - 1)
    return lag


def events_backlog(app: Any, runtime: WorkerRuntime) -> int:
    """Events queued on this worker's events partitions (the events agent's batching reads it)."""
    return sum(events_lag(app, runtime).values())


def observe_consumer_lag(app: Any, runtime: WorkerRuntime) -> None:
    """Set the lag gauge of each assigned events partition from its high watermark."""
    for tp, lag in events_lag(app, runtime).items():
        runtime.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)


def register_web_views(app: Any, runtime: WorkerRuntime) -> None:
    """Add the liveness, readiness, metrics and state views to a Faust app."""

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"alive": True, "worker_id": runtime.worker_id})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = readiness(app, runtime)
        runtime.metrics.ready.set(1 if checks["ready"] else 0)
        return web.json(checks, status=200 if checks["ready"] else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        observe_consumer_lag(app, runtime)
        runtime.metrics.ready.set(1 if readiness(app, runtime)["ready"] else 0)
        # aiohttp refuses a charset in content_type=; the header carries it whole.
        return web.bytes(
            runtime.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/state")
    async def state(web: Any, request: Any) -> Any:
        summary = runtime.describe()
        events_topic = runtime.settings.topic("events")
        try:
            assignment = app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            assignment = set()
        summary["events_partitions"] = sorted(
            tp.partition for tp in assignment if tp.topic == events_topic
        )
        return web.json(summary)

    @app.page("/state/counts")
    async def counts(web: Any, request: Any) -> Any:
        try:
            at = float(request.query["at"])
        except (KeyError, ValueError):
            return web.json({"error": "expected ?at=<event time, epoch seconds>"}, status=400)
        return web.json(runtime.engine.decayed_counts(at))

    @app.page("/console")
    async def console_page(web: Any, request: Any) -> Any:
        return web.html(PAGE)

    @app.page("/console/data")
    async def console_data(web: Any, request: Any) -> Any:
        return web.json(runtime.console.data())

    @app.page("/console/user")
    async def console_user(web: Any, request: Any) -> Any:
        user_id = request.query.get("id", "")
        found = runtime.console.user(user_id) if user_id else None
        return web.json(found or {"error": f"no user {user_id!r}"}, status=200 if found else 404)

    @app.page("/state/item")
    async def item(web: Any, request: Any) -> Any:
        item_id = request.query.get("id")
        if not item_id:
            return web.json({"error": "expected ?id=<item id>"}, status=400)
        info = runtime.engine.item_info(item_id)
        return web.json(info or {"error": f"unknown item {item_id!r}"}, status=200 if info else 404)
