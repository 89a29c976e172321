"""What a worker waits for before it starts, alive but not ready: the brokers, the encoder.

A worker needs the Kafka brokers (to create its topics and join its group) and,
with ``DRIFTREC_ENCODER_BACKEND=remote``, the encoder service (the client asks
it for its model and vector size). Either may be away when a pod starts — a
rollout that starts workers before the encoder Deployment is up, a broker
restarting. Exiting then turns a passing outage into a CrashLoopBackOff whose
back-off outlives the outage; instead the worker waits with backoff and serves
its web port meanwhile: ``/healthz`` answers 200 (the process is fine: the
liveness probe must not kill it) and ``/readyz`` 503 with what it waits for.
The gate keeps answering while the worker then loads its model and builds its
topology, and closes its port just before the Faust worker, which serves the
same views in full, opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streams.retry import retry_with_backoff
from streams.settings import WorkerSettings

__all__ = ["StartupGate", "wait_for_dependencies"]

logger = logging.getLogger(__name__)


class StartupGate:
    """The worker's web port while it starts: ``/healthz`` 200, ``/readyz`` 503 and the reason.

    It serves from a thread of its own, so it keeps answering while the
    worker loads its model and builds its topology on the main thread.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.waiting_for = "starting"
        self.since = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None

    def open(self) -> StartupGate:
        """Start serving (no-op when the worker's web server is disabled)."""
        if not self.settings.web_enabled or self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="startup-gate", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(30)
        return self

    def close(self) -> None:
        """Stop serving and free the port for the Faust worker's web server."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(
            runner, self.settings.web_host, self.settings.web_port, reuse_address=True
        )
        await site.start()
        self._runner = runner

    async def _cleanup(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _body(self) -> dict[str, Any]:
        return {
            "worker_id": self.settings.resolved_worker_id,
            "starting": True,
            "waiting_for": self.waiting_for,
            "waiting_s": round(time.time() - self.since, 1),
        }

    async def _healthz(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"alive": True, **self._body()})

    async def _readyz(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"ready": False, **self._body()}, status=503)


async def _until_ok(
    gate: StartupGate,
    what: str,
    attempt: Callable[[], Awaitable[Any]],
    *,
    retry_on: tuple[type[Exception], ...],
    first_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
) -> Any:
    """``await attempt()`` until it succeeds, waiting with backoff; the gate says why meanwhile.

    Only ``retry_on`` errors (something unreachable) are waited out; anything
    else — a wrong setting, a refused request — propagates, and the worker
    exits with it.
    """

    def waiting(error: Exception, delay_s: float) -> None:
        gate.waiting_for = f"{what}: {error}"
        logger.warning("waiting for %s (next try in %.0f s): %s", what, delay_s, error)

    return await retry_with_backoff(
        attempt,
        retry_on=retry_on,
        first_delay_s=first_delay_s,
        max_delay_s=max_delay_s,
        on_retry=waiting,
    )


async def wait_for_dependencies(
    settings: WorkerSettings,
    gate: StartupGate,
    *,
    ensure_topics: Callable[[WorkerSettings], Awaitable[dict[str, int]]],
    first_delay_s: float = 1.0,
) -> dict[str, int]:
    """Create the topics and reach the encoder service, retrying with backoff until both are done.

    ``gate`` (open meanwhile) tells probes what the worker waits for. Returns
    the partition count of every topic by role (from ``ensure_topics``).
    """
    from aiokafka.errors import KafkaError

    from models.remote_encoder import EncoderUnavailableError

    partitions = await _until_ok(
        gate,
        f"the Kafka brokers at {settings.kafka_bootstrap}",
        lambda: ensure_topics(settings),
        retry_on=(KafkaError, OSError, TimeoutError),
        first_delay_s=first_delay_s,
    )
    if settings.encoder_backend == "remote":
        await _until_ok(
            gate,
            f"the encoder service at {settings.encoder_url}",
            lambda: asyncio.to_thread(_probe_encoder, settings),
            retry_on=(EncoderUnavailableError, OSError),
            first_delay_s=first_delay_s,
        )
    gate.waiting_for = "loading the model and building the topology"
    return partitions


def _probe_encoder(settings: WorkerSettings) -> None:
    """Build (and close) the remote encoder client: it asks the service for model and size."""
    from models.encoder_factory import make_encoder

    encoder = make_encoder(settings)
    close = getattr(encoder, "close", None)
    if close is not None:
        close()
