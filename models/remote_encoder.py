"""A text encoder that calls an embedding service over HTTP instead of running a model.

Where the model is large, or one GPU should serve many workers, the encoder
runs as its own service — Hugging Face text-embeddings-inference (TEI), or
anything that speaks OpenAI's ``/v1/embeddings`` — and the workers call it.
:class:`RemoteEncoder` offers the same ``encode`` / ``dim`` / ``model_version``
/ ``resolve_max_tokens`` as :class:`~models.encoder.TextEncoder`, so the
vector cache and the engine take either. ``driftrec serve-encoder`` exposes a
local model with TEI's API (and OpenAI's) for tests and small deployments.

The client is synchronous (``encode`` is), uses the standard library only and
keeps one HTTP/1.1 connection alive between requests. Not thread-safe.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:
    from models.settings import EngineSettings

__all__ = ["EncoderUnavailableError", "RemoteEncoder", "RemoteEncoderError"]

Api = Literal["tei", "openai"]

#: Longest first-retry-to-last delay: a service that is down for longer is reported.
BACKOFF_MAX_S = 8.0


class EncoderUnavailableError(RuntimeError):
    """The encoder service could not be reached (or kept failing) after every retry.

    Nothing is wrong with the texts: the same call may succeed later, so a
    caller keeps the input (retries it later or dead-letters it with this reason).
    """


class RemoteEncoderError(ValueError):
    """The encoder service answered, but with an error about the request or a malformed reply.

    Retrying the same request will not help (a 4xx other than 429, a reply of
    the wrong shape or dimension).
    """


class RemoteEncoder:
    """Encode texts into L2-normalised float32 vectors with a remote embedding service.

    Texts are sent in batches of ``batch_size`` (capped at the service's
    ``max_client_batch_size`` when TEI reports one). Each request has a
    ``timeout_s``; connection errors, timeouts, HTTP 5xx and 429 are retried
    ``retries`` times with exponential backoff (``backoff_s``, doubling, at most
    8 s, or the server's ``Retry-After`` when longer), after which
    :class:`EncoderUnavailableError` says which service failed and how. Other
    HTTP errors and malformed replies raise :class:`RemoteEncoderError` at once.
    Every reply is checked (one finite vector per text, of the service's
    dimension) and normalised here, whatever the service did.

    ``model_version`` — what vector caches and ``item-vectors`` records key on —
    must not change with the URL (a Service renamed, a port moved) but must
    change with the model. It is, in order of preference:

    * ``model_version`` as given (``DRIFTREC_ENCODER_MODEL_VERSION``);
    * for TEI, ``tei:<model_id>@<model_sha>:<pooling>`` from the service's
      ``GET /info`` (the model and revision it loaded, and its pooling);
    * for OpenAI-compatible services, ``openai:<model_name>``.

    It never equals a local :class:`~models.encoder.TextEncoder`'s version: a
    service may run another revision, dtype or truncation than a local copy,
    so workers do not mix the two sets of vectors (a vector from the other
    kind is re-encoded, see ``WorkerCatalogue.apply_item_vector``).

    Parameters
    ----------
    url
        Base URL of the service: ``http://host:port`` (a path prefix is kept).
    api
        ``tei`` (``POST /embed``, ``GET /info``) or ``openai`` (``POST /v1/embeddings``).
    model_name
        Model named in OpenAI requests (required there unless ``model_version`` is given).
    model_version
        Explicit model version (see above).
    batch_size
        Most texts per request.
    max_tokens
        The token limit reported to caches by :meth:`resolve_max_tokens`.
        Truncation itself is the service's (TEI truncates to its model's
        limit with ``truncate: true``).
    timeout_s, retries, backoff_s
        Per-request timeout, retries after the first attempt, first retry delay.
    api_key
        Sent as ``Authorization: Bearer …`` when given.
    dim
        The vector length, if known; otherwise one probe text is encoded at
        construction (so a service that is down fails construction clearly).
    sleep
        How to wait between retries (tests pass a recorder).

    Attributes
    ----------
    dim, model_version, batch_size, max_tokens
        As for :class:`~models.encoder.TextEncoder`.
    info : dict
        TEI's ``/info`` reply (empty for OpenAI-compatible services).
    texts_encoded, batches_encoded, requests_failed : int
        Counters since construction (``requests_failed`` counts failed attempts).
    seconds_encoding : float
        Time spent inside :meth:`encode`, waits included.
    """

    def __init__(
        self,
        url: str,
        *,
        api: Api = "tei",
        model_name: str | None = None,
        model_version: str | None = None,
        batch_size: int = 32,
        max_tokens: int = 128,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        api_key: str | None = None,
        dim: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if api not in ("tei", "openai"):
            raise ValueError(f"unknown encoder api {api!r}; expected 'tei' or 'openai'")
        if batch_size < 1 or max_tokens < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                "expected batch_size >= 1, max_tokens >= 1, retries >= 0, timeout_s > 0 and "
                f"backoff_s >= 0; got {batch_size}, {max_tokens}, {retries}, {timeout_s}, "
                f"{backoff_s}"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"encoder url {url!r} must look like http://host:port or https://…")
        self.url = url.rstrip("/")
        self.api: Api = api
        self.model_name = model_name
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._connection: http.client.HTTPConnection | None = None

        self.texts_encoded = 0
        self.batches_encoded = 0
        self.requests_failed = 0
        self.seconds_encoding = 0.0

        self.info: dict[str, Any] = {}
        if api == "tei":
            info = self._request("GET", "/info", None)
            if not isinstance(info, dict):
                raise RemoteEncoderError(f"{self.url}/info: expected a JSON object, got {info!r}")
            self.info = info
            limit = info.get("max_client_batch_size")
            if isinstance(limit, int) and limit > 0:
                batch_size = min(batch_size, limit)
        self.batch_size = batch_size
        self.model_version = model_version or self._derived_model_version()
        self.dim = 0
        self.dim = int(dim) if dim is not None else int(self._embed(["dim"]).shape[1])

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> RemoteEncoder:
        """Build the client from the engine's ``encoder_*`` settings."""
        if not settings.encoder_url:
            raise ValueError(
                "encoder_backend is 'remote' but no encoder_url is set; set DRIFTREC_ENCODER_URL "
                "to the service's base URL, e.g. http://driftrec-encoder:8080"
            )
        return cls(
            settings.encoder_url,
            api=settings.encoder_api,
            model_name=settings.encoder_model_name,
            model_version=settings.encoder_model_version,
            batch_size=settings.encode_batch_size,
            max_tokens=settings.max_tokens,
            timeout_s=settings.encoder_timeout_s,
            retries=settings.encoder_retries,
            backoff_s=settings.encoder_backoff_s,
            api_key=(
                settings.encoder_api_key.get_secret_value() if settings.encoder_api_key else None
            ),
        )

    def __repr__(self) -> str:
        return (
            f"RemoteEncoder({self.model_version!r}, url={self.url!r}, api={self.api!r}, "
            f"dim={self.dim}, batch_size={self.batch_size})"
        )

    def _derived_model_version(self) -> str:
        if self.api == "openai":
            if not self.model_name:
                raise ValueError(
                    "an OpenAI-compatible encoder needs a model name (DRIFTREC_ENCODER_MODEL_NAME) "
                    "or an explicit model version (DRIFTREC_ENCODER_MODEL_VERSION)"
                )
            return f"openai:{self.model_name}"
        model_id = self.info.get("model_id") or self.model_name
        if not model_id:
            raise RemoteEncoderError(
                f"{self.url}/info names no model_id; set DRIFTREC_ENCODER_MODEL_VERSION"
            )
        revision = self.info.get("model_sha") or "main"
        model_type = self.info.get("model_type")
        pooling = "default"
        if isinstance(model_type, dict) and isinstance(model_type.get("embedding"), dict):
            pooling = str(model_type["embedding"].get("pooling", "default"))
        return f"tei:{model_id}@{revision}:{pooling}"

    def resolve_max_tokens(self, max_tokens: int | None = None) -> int:
        """The token limit a call is made under (caches key on it); the service truncates."""
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit < 1:
            raise ValueError(f"max_tokens must be >= 1, got {limit}")
        return limit

    def encode(self, texts: Sequence[str], *, max_tokens: int | None = None) -> np.ndarray:
        """Encode texts: ``n`` strings -> float32 ``[n, dim]`` of unit rows, in input order."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, got a single str")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{position}] is a {type(text).__name__}; expected str")
        self.resolve_max_tokens(max_tokens)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        started = time.perf_counter()
        try:
            vectors = np.empty((len(texts), self.dim), dtype=np.float32)
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                vectors[start : start + len(batch)] = self._embed(batch)
        finally:
            self.seconds_encoding += time.perf_counter() - started
        self.texts_encoded += len(texts)
        return vectors

    def close(self) -> None:
        """Close the kept-alive connection (a later call opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ------------------------------------------------------------------ one batch
    def _embed(self, texts: list[str]) -> np.ndarray:
        """One request for ``texts`` -> checked, normalised ``[len(texts), dim]``."""
        if self.api == "tei":
            reply = self._request(
                "POST", "/embed", {"inputs": texts, "normalize": True, "truncate": True}
            )
            rows = reply
        else:
            body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
            if self.model_name:
                body["model"] = self.model_name
            reply = self._request("POST", "/v1/embeddings", body)
            data = reply.get("data") if isinstance(reply, dict) else None
            if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
                raise RemoteEncoderError(
                    f"{self.url}/v1/embeddings: expected {{'data': [{{'embedding': [...], "
                    f"'index': i}}, ...]}}, got {str(reply)[:200]}"
                )
            rows = [d.get("embedding") for d in sorted(data, key=lambda d: d.get("index", 0))]
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise RemoteEncoderError(
                f"{self.url}: expected one list of numbers per text, got {str(rows)[:200]}"
            ) from None
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise RemoteEncoderError(
                f"{self.url}: asked for {len(texts)} vectors, got an array of shape {vectors.shape}"
            )
        if self.dim and vectors.shape[1] != self.dim:
            raise RemoteEncoderError(
                f"{self.url}: vectors of dimension {vectors.shape[1]}, expected {self.dim} "
                f"(model {self.model_version}); was the service's model changed? Set a new "
                "model version and restart the workers"
            )
        if not np.isfinite(vectors).all():
            raise RemoteEncoderError(f"{self.url}: the service returned NaN or infinite values")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.batches_encoded += 1
        return vectors / np.where(norms > 0, norms, 1.0)

    # ------------------------------------------------------------------ HTTP
    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = kind(self._host, self._port, timeout=self.timeout_s)
        return self._connection

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, str | None]:
        connection = self._connect()
        connection.request(method, self._prefix + path, body=body, headers=self._headers)
        response = connection.getresponse()
        payload = response.read()
        if response.will_close:
            self.close()
        return response.status, payload, response.getheader("Retry-After")

    def _request(self, method: str, path: str, body: Any) -> Any:
        """Send a request with retries; the decoded JSON reply, or a clear error."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        attempts = self.retries + 1
        started = time.monotonic()
        last_error = ""
        for attempt in range(attempts):
            retry_after = 0.0
            try:
                status, payload, retry_header = self._send(method, path, data)
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
                self.close()
                last_error = f"{type(error).__name__}: {error}" if str(error) else repr(error)
            else:
                if status < 300:
                    try:
                        return json.loads(payload)
                    except ValueError:
                        raise RemoteEncoderError(
                            f"{method} {self.url}{path}: the reply is not JSON: {payload[:200]!r}"
                        ) from None
                text = payload[:300].decode("utf-8", "replace")
                if status != 429 and status < 500:
                    raise RemoteEncoderError(
                        f"{method} {self.url}{path} was refused with HTTP {status}: {text}"
                    )
                last_error = f"HTTP {status}: {text}"
                if retry_header and retry_header.strip().isdigit():
                    retry_after = float(retry_header.strip())
            self.requests_failed += 1
            if attempt + 1 < attempts:
                delay = min(self.backoff_s * 2**attempt, BACKOFF_MAX_S)
                self.sleep(min(max(delay, retry_after), 60.0))
        raise EncoderUnavailableError(
            f"the encoder service at {self.url} is unavailable: {method} {path} failed "
            f"{attempts} time(s) in {time.monotonic() - started:.1f} s (timeout {self.timeout_s} s "
            f"per attempt), the last with {last_error}. Check that the service is running and "
            "reachable at DRIFTREC_ENCODER_URL"
        )
