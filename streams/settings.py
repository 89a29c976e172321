"""Settings of a driftrec worker: the engine's settings plus Kafka, topics and the web port.

:class:`WorkerSettings` extends :class:`~models.settings.EngineSettings` with
what only the Kafka side needs, read from the same ``DRIFTREC_*`` environment
variables (``DRIFTREC_KAFKA_BOOTSTRAP``, ``DRIFTREC_TOPIC_PREFIX``,
``DRIFTREC_PARTITIONS``, ``DRIFTREC_SASL_USERNAME`` …). Every default works
against the local broker of ``deploy/kafka`` (``make kafka-up``), so
``driftrec worker`` needs no argument there.

The client security settings (TLS, SASL) are turned into a Faust credentials
object for the worker's own clients and into aiokafka keyword arguments for
the auxiliary clients (admin, broadcast readers, ``produce``, ``tail``) in one
place, :meth:`WorkerSettings.aiokafka_security`.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from models.settings import EngineSettings

__all__ = ["TOPIC_NAMES", "WorkerSettings"]

#: Role of each topic → its name after the prefix (docs/contracts.md).
TOPIC_NAMES: dict[str, str] = {
    "events": "events",
    "items": "items",
    "recommendations": "recommendations",
    "item_vectors": "item-vectors",
    "cluster_deltas": "cluster-deltas",
    "cluster_model": "cluster-model",
    "collab_deltas": "collab-deltas",
    "dead_letters": "dead-letters",
    "interest_events": "interest-events",
}

_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]*$")
_MIB = 1 << 20


class WorkerSettings(EngineSettings):
    """Settings of a driftrec worker (``DRIFTREC_<NAME>`` in the environment).

    Parameters
    ----------
    kafka_bootstrap
        ``host:port[,host:port…]`` of the Kafka brokers.
    topic_prefix
        Prefix of every topic name (``driftrec.`` gives ``driftrec.events`` …).
    app_id
        Faust application id: the consumer group of the workers and the
        prefix of their changelog topics. Workers with the same id share work.
    partitions
        Partitions of the keyed topics (events, recommendations, items,
        item vectors) and of the window table's changelog, when driftrec
        creates them. An events topic that already exists keeps its count and
        the table follows it.

    Examples
    --------
    >>> settings = WorkerSettings(
    ...     kafka_bootstrap="kafka-0:9092,kafka-1:9092", topic_prefix="shop.",
    ...     security_protocol="PLAINTEXT")
    >>> settings.topic("events"), settings.topic("cluster_model")
    ('shop.events', 'shop.cluster-model')
    >>> settings.broker_urls()
    ['kafka://kafka-0:9092', 'kafka://kafka-1:9092']
    >>> settings.aiokafka_security()
    {'security_protocol': 'PLAINTEXT'}
    >>> WorkerSettings(topic_prefix="bad prefix")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for WorkerSettings
    ...
    """

    # --- Kafka ----------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "localhost:9092", description="host:port[,host:port...] of the Kafka brokers."
    )
    topic_prefix: str = Field("driftrec.", description="Prefix of every topic name.")
    app_id: str = Field(
        "driftrec", description="Consumer group of the workers; prefix of changelog topics."
    )
    partitions: int = Field(8, ge=1, description="Partitions of the keyed topics.")
    replication: int = Field(1, ge=1, description="Replication factor of created topics.")
    collab_delta_retention_s: float = Field(
        30 * 86_400.0,
        gt=0,
        description="Retention of the collaborative deltas topic: a restarted worker rebuilds "
        "its counts from it, so keep it at a few collab half-lives.",
    )
    max_message_bytes: int = Field(
        8 * _MIB,
        ge=_MIB,
        description="max.message.bytes of the dead-letters topic and the worker producer's "
        "largest request (a dead letter carries the original record in base64).",
    )
    dead_letter_payload_limit: int = Field(
        4 * _MIB,
        ge=1024,
        description="Original bytes kept in a dead letter; longer payloads are cut and flagged.",
    )

    # --- Kafka client security --------------------------------------------------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    # --- the worker -------------------------------------------------------------
    worker_id: str | None = Field(
        None, description="Name of this worker in logs, headers and metrics (default host-pid)."
    )
    batch_max: int = Field(256, ge=1, description="Most events per engine call.")
    batch_within_s: float = Field(
        0.01, gt=0, description="Longest wait for a batch to fill when caught up, seconds."
    )
    batch_backlog_within_s: float = Field(
        0.1,
        gt=0,
        description="Longest wait for a batch to fill while at least batch_max events are "
        "queued (fuller batches cost less per event; queued events are late anyway).",
    )
    item_batch_max: int = Field(64, ge=1, description="Most catalogue records per encoder call.")
    encoder_failure: Literal["retry", "dead-letter"] = Field(
        "retry",
        description="When the encoder service is unavailable (its own retries exhausted): retry "
        "the batch with backoff, its offsets uncommitted meanwhile, or dead-letter its records "
        "with the reason.",
    )
    encoder_retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between two tries of a batch (encoder_failure=retry)."
    )
    engine_thread: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Run the engine in a thread of its own, off the event loop: 'auto' does "
        "when its encoder may block for long (a remote service, or sequence mode, which "
        "encodes every batch); off the loop, heartbeats and /healthz never wait for an "
        "encoder, on it the engine's Python code does not contend for the GIL with Faust's.",
    )
    ack_after_deltas: bool = Field(
        False,
        description="Experimental: acknowledge events only once the deltas they caused are on "
        "the broker, so a SIGKILL'd worker loses none of its last counts and cluster updates. "
        "Off: with it, a graceful stop mid-stream left single events unanswered in the "
        "scale-out test (docs/reliability.md).",
    )
    delta_interval_s: float = Field(
        2.0, gt=0, description="How often a worker ships its clusterer and counts deltas."
    )
    session_timeout_s: float = Field(
        60.0,
        ge=6,
        description="Consumer group session timeout (Faust's default): how long the partitions "
        "of a worker that stopped answering (killed, partitioned away) wait before they move; "
        "a killed worker restarted sooner waits this long for its partitions.",
    )
    standby_replicas: int = Field(
        1, ge=0, description="Standby copies of each window-table partition on other workers."
    )
    commit_interval_s: float = Field(
        2.8, gt=0, description="Consumer offset commit interval (Faust's default)."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts reading the events topic."
    )
    web_enabled: bool = True
    web_host: str = Field("0.0.0.0", description="Interface of the liveness/metrics server.")
    web_port: int = Field(6066, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("topic_prefix", "app_id")
    @classmethod
    def _kafka_name(cls, value: str) -> str:
        if not _KAFKA_NAME.match(value):
            raise ValueError(
                f"{value!r} may only hold letters, digits, '.', '_' and '-' (Kafka topic names)"
            )
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",") if server.strip()]
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        if not servers:
            raise ValueError("expected host:port[,host:port...], got an empty string")
        return ",".join(servers)

    @model_validator(mode="after")
    def _security_complete(self) -> WorkerSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS)")
        return self

    # --- derived values ----------------------------------------------------------
    def topic(self, role: str) -> str:
        """Full name of the topic of ``role`` (a key of :data:`TOPIC_NAMES`)."""
        try:
            return self.topic_prefix + TOPIC_NAMES[role]
        except KeyError:
            raise KeyError(
                f"unknown topic role {role!r}, expected one of {sorted(TOPIC_NAMES)}"
            ) from None

    @property
    def resolved_worker_id(self) -> str:
        """The worker id, defaulting to ``<hostname>-<pid>``."""
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    def broker_urls(self) -> list[str]:
        """The bootstrap servers as Faust broker URLs."""
        return [f"kafka://{server}" for server in self.kafka_bootstrap.split(",")]

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for the brokers, or None for the plaintext protocols."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
        )
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            context.load_cert_chain(
                str(self.ssl_certfile),
                keyfile=str(self.ssl_keyfile),
                password=(
                    self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
                ),
            )
        return context

    def faust_credentials(self) -> Any:
        """Faust ``broker_credentials``: SASL or SSL credentials, or None for plaintext."""
        import faust

        context = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_username is not None and self.sasl_password is not None
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=context,
                mechanism=self.sasl_mechanism,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def aiokafka_security(self) -> dict[str, Any]:
        """Keyword arguments of aiokafka clients for the configured security protocol."""
        from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

        return dict(credentials_to_aiokafka_auth(self.faust_credentials()))
