"""The live console: what an operator or a merchandiser wants to see, gathered as batches pass.

A worker (``/console``) and ``driftrec demo --serve`` serve one static page
(:data:`streams.console_page.PAGE`) that polls two JSON endpoints:

- ``/console/data``: the interest clusters (id, label, users now in it), their
  sizes over event time, the latest interest events, throughput, latency
  percentiles and consumer lag;
- ``/console/user?id=``: one user's window, facets, cluster and last
  recommendations with their reasons.

:class:`ConsoleFeed` keeps only bounded, recent state (deques and an LRU of
users), so it costs a few microseconds per event and never grows.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from models.contracts import InterestEvent, Recommendation
from models.engine import Engine
from models.facets import user_facets
from models.user_state import window_vectors
from streams.console_page import PAGE

__all__ = ["ConsoleFeed", "serve_console"]


class ConsoleFeed:
    """Recent clusters, interest events, speed and users, for the console page.

    Parameters
    ----------
    engine
        The engine whose clusters, labels and windows are shown.
    users
        Users whose cluster and last recommendation are remembered (LRU).
    history
        Points of the cluster-size history kept.
    clock
        Wall clock (throughput); event time comes from the events.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        users: int = 20_000,
        history: int = 240,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.capacity = users
        self.clock = clock
        self.lag = 0  #: events waiting behind the processed ones (Kafka mode)
        self._lock = threading.Lock()
        self._cluster_of: OrderedDict[str, int | None] = OrderedDict()
        self._last: OrderedDict[str, Recommendation] = OrderedDict()
        self._sizes: deque[tuple[float, dict[int, int]]] = deque(maxlen=history)
        self._interest: deque[InterestEvent] = deque(maxlen=50)
        self._latencies: deque[float] = deque(maxlen=2_000)
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=600)
        self._events = 0

    def observe(
        self,
        recommendations: Sequence[Recommendation],
        interest_events: Sequence[InterestEvent] = (),
        *,
        n_events: int | None = None,
    ) -> None:
        """Take one batch's recommendations and interest events (``n_events``: the events
        the batch held, when not one recommendation each)."""
        with self._lock:
            now = self.clock()
            n = len(recommendations) if n_events is None else n_events
            self._events += n
            self._arrivals.append((now, n))
            for rec in recommendations:
                self._remember(self._cluster_of, rec.user_id, rec.cluster.id)
                self._remember(self._last, rec.user_id, rec)
                self._latencies.append(rec.latency_ms)
            self._interest.extend(interest_events)
            if recommendations and (not self._sizes or len(self._arrivals) % 5 == 0):
                sizes: dict[int, int] = {}
                for cluster in self._cluster_of.values():
                    if cluster is not None:
                        sizes[cluster] = sizes.get(cluster, 0) + 1
                self._sizes.append((max(r.ts for r in recommendations), sizes))

    def _remember(self, table: OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)

    def data(self) -> dict[str, Any]:
        """The page's main view as JSON-ready data."""
        with self._lock:
            labels = dict(self.engine.labeller.labels)  # read only: the engine refreshes them
            sizes = self._sizes[-1][1] if self._sizes else {}
            clusters = [
                {"id": c, "label": labels.get(c), "users": sizes.get(c, 0)}
                for c in sorted(set(sizes) | set(labels), key=lambda c: -sizes.get(c, 0))
            ]
            now = self.clock()
            recent = [(t, n) for t, n in self._arrivals if now - t <= 10.0]
            span = max(1.0, now - recent[0][0]) if recent else 1.0
            latencies = np.array(self._latencies) if self._latencies else np.zeros(1)
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99]).round(2).tolist()
            return {
                "clusters": clusters,
                "history": [
                    {"ts": ts, "sizes": {str(c): n for c, n in s.items()}} for ts, s in self._sizes
                ],
                "labels": {str(c): label for c, label in labels.items()},
                "interest_events": [
                    json.loads(e.to_json_bytes()) for e in reversed(self._interest)
                ],
                "events": self._events,
                "events_per_s": round(sum(n for _, n in recent) / span, 1),
                "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
                "lag": self.lag,
                "model_version": self.engine.model_version,
            }

    def user(self, user_id: str) -> dict[str, Any] | None:
        """One user's window, facets, cluster and last recommendations (None: unknown)."""
        with self._lock:
            last = self._last.get(user_id)
        window = self.engine.windows.get_windows([user_id])[0]
        if last is None and not len(window):
            return None
        labels = self.engine.labeller.labels
        facets = 0
        if len(window):  # derived as the engine derives them: the same vectors and weights
            engine = self.engine
            vectors, weights = window_vectors(window, engine.catalog, engine.settings)
            facets = len(
                user_facets(
                    vectors,
                    weights,
                    max_facets=engine.settings.facets,
                    threshold=engine.settings.facet_threshold,
                )[1]
            )
        cluster = None if last is None else last.cluster.id
        return {
            "user_id": user_id,
            "window": [
                {"item_id": e.item_id, "event": e.event, "ts": e.ts}
                for e in reversed(window.entries)
            ],
            "facets": facets,
            "cluster": cluster,
            "label": None if cluster is None else labels.get(cluster),
            "recommendations": []
            if last is None
            else [json.loads(i.model_dump_json()) for i in last.items],
        }


def serve_console(feed: ConsoleFeed, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve the console page and its JSON on ``host:port`` in a daemon thread (port 0: any
    free port; the server's ``server_address`` says which)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet: the console polls every second
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path in ("/", "/console"):
                self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif url.path == "/console/data":
                self._json(200, feed.data())
            elif url.path == "/console/user":
                user_id = parse_qs(url.query).get("id", [""])[0]
                found = feed.user(user_id) if user_id else None
                self._json(200 if found else 404, found or {"error": f"no user {user_id!r}"})
            else:
                self._json(404, {"error": "not found"})

        def _json(self, status: int, body: Any) -> None:
            self._send(status, json.dumps(body).encode("utf-8"), "application/json")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="console", daemon=True).start()
    return server
