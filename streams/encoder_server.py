"""``driftrec serve-encoder``: the local encoder behind text-embeddings-inference's HTTP API.

Workers with ``DRIFTREC_ENCODER_BACKEND=remote`` call an embedding service.
In production that is Hugging Face text-embeddings-inference (TEI); this
server speaks the same API for the model driftrec already loads, so that the
remote client is tested against a real HTTP server, a GPU box can serve
several CPU-only workers without TEI, and a model TEI cannot load still works.

Endpoints (JSON in and out):

* ``POST /embed`` — TEI: ``{"inputs": str | [str], "normalize": bool,
  "truncate": bool}`` → ``[[float, …], …]``. Texts are always truncated to
  the encoder's ``max_tokens`` and vectors are always unit length.
* ``POST /v1/embeddings`` — OpenAI: ``{"input": str | [str], "model": …}`` →
  ``{"object": "list", "data": [{"object": "embedding", "embedding": […],
  "index": i}], "model": …, "usage": {…}}``.
* ``GET /info`` — TEI's model description (``model_id``, ``model_sha``,
  ``model_type.embedding.pooling``, ``max_client_batch_size``, …).
* ``GET /health`` — 200 once the model is loaded.

Requests are encoded one at a time on a worker thread, so the event loop
stays free to accept connections while the model runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

import typer
from aiohttp import web

if TYPE_CHECKING:
    from models.encoder import TextEncoder

__all__ = [
    "make_encoder_app",
    "model_info",
    "run_encoder_server",
    "serve_encoder",
    "serve_in_thread",
]


def _model_id(encoder: TextEncoder) -> str:
    """The model's directory name (the parent's for a package's generic ``model`` folder)."""
    path = encoder.model_path
    return path.parent.name if path.name in {"model", "models", "snapshot", ""} else path.name


def model_info(encoder: TextEncoder, *, max_batch: int) -> dict[str, Any]:
    """TEI's ``/info`` for a local encoder; ``model_sha`` is its content-derived model version."""
    return {
        "model_id": _model_id(encoder),
        "model_sha": encoder.model_version,
        "model_dtype": str(encoder.dtype).removeprefix("torch."),
        "model_type": {"embedding": {"pooling": encoder.pooling}},
        "max_input_length": encoder.max_tokens,
        "max_client_batch_size": max_batch,
        "max_batch_tokens": max_batch * encoder.max_tokens,
        "dim": encoder.dim,
        "version": "driftrec-serve-encoder",
    }


def _error(status: int, message: str, error_type: str = "Validation") -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


def _texts(value: Any, field: str, max_batch: int) -> list[str] | web.Response:
    """The texts of a request, or the error response TEI gives for bad ones."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return _error(422, f"'{field}' must be a string or a list of strings")
    if not texts:
        return _error(422, f"'{field}' cannot be empty")
    if len(texts) > max_batch:
        return _error(413, f"batch size {len(texts)} > maximum allowed batch size {max_batch}")
    return texts


def make_encoder_app(encoder: TextEncoder, *, max_batch: int = 64) -> web.Application:
    """The aiohttp application serving ``encoder`` with TEI's and OpenAI's embedding APIs."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
    info = model_info(encoder, max_batch=max_batch)

    async def encode(texts: list[str]) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(executor, encoder.encode, texts)
        return vectors.tolist()

    async def read_json(request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(422, "expected a JSON object")
        return body

    async def embed(request: web.Request) -> web.Response:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        texts = _texts(body.get("inputs"), "inputs", max_batch)
        if isinstance(texts, web.Response):
            return texts
        return web.json_response(await encode(texts))

    async def openai_embeddings(request: web.Request) -> web.Response:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        texts = _texts(body.get("input"), "input", max_batch)
        if isinstance(texts, web.Response):
            return texts
        if body.get("encoding_format", "float") != "float":
            return _error(422, "only encoding_format 'float' is supported")
        vectors = await encode(texts)
        tokens = sum(encoder.count_tokens(texts))
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": vector, "index": index}
                    for index, vector in enumerate(vectors)
                ],
                "model": body.get("model") or info["model_id"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def get_info(request: web.Request) -> web.Response:
        return web.json_response(info)

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def shutdown(app: web.Application) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.router.add_post("/embed", embed)
    app.router.add_post("/v1/embeddings", openai_embeddings)
    app.router.add_get("/info", get_info)
    app.router.add_get("/health", health)
    app.on_shutdown.append(shutdown)
    return app


@contextlib.contextmanager
def serve_in_thread(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields its base URL (``port=0``: a free port)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    address: list[str] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        address.append(f"http://{bound_host}:{bound_port}")
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="encoder-server", daemon=True)
    thread.start()
    if not started.wait(timeout=30):
        raise RuntimeError(f"the encoder server did not start on {host}:{port}")
    try:
        yield address[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def run_encoder_server(
    encoder: TextEncoder, *, host: str, port: int, max_batch: int, log: Any = print
) -> None:
    """Serve ``encoder`` until interrupted, announcing the bound address first."""

    async def main() -> None:
        runner = web.AppRunner(make_encoder_app(encoder, max_batch=max_batch))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        log(
            f"serving {encoder.model_version} (dim {encoder.dim}) on http://{bound_host}:{bound_port}"
        )
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def serve_encoder(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8080,
    max_batch: Annotated[int, typer.Option(min=1, help="Most texts per request.")] = 64,
) -> None:
    """Serve the configured local encoder with TEI's /embed and OpenAI's /v1/embeddings API."""
    from models.encoder import TextEncoder
    from models.settings import EngineSettings

    settings = EngineSettings()
    encoder = TextEncoder.from_settings(settings)
    run_encoder_server(
        encoder, host=host, port=port, max_batch=max_batch, log=lambda line: print(line, flush=True)
    )
