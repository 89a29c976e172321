"""Dead letters: every record a worker could not process, with its bytes and the reason.

A record that cannot be parsed (bad UTF-8 or JSON, a missing or mistyped
field, an unknown event type, an oversized text, a key that is not its user
id) or that the engine fails on goes to ``driftrec.dead-letters`` as a
:class:`DeadLetter`: the original key and value in base64, where it came from
(topic, partition, offset, record timestamp) and the error. The worker then
goes on with the next record. A dead letter that cannot itself be published is
logged at ERROR level with the same coordinates and counted, so nothing is ever
dropped silently.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from models.contracts import RecordError

__all__ = ["DeadLetter", "DeadLetterSink"]

logger = logging.getLogger(__name__)


class DeadLetter(BaseModel):
    """One value of the ``dead-letters`` topic.

    Attributes
    ----------
    source_topic, partition, offset
        Where the record was read.
    timestamp
        The record's Kafka timestamp, epoch seconds (None if it had none).
    key_b64, payload_b64
        The record's key and value, base64 (None for a null key or value).
    payload_bytes
        Length of the original value.
    payload_truncated
        Whether ``payload_b64`` holds only the first ``payload_limit`` bytes.
    error
        What was wrong, e.g. ``"ts: expected epoch seconds … got list"``.
    error_type
        ``RecordError`` for contract violations, else the exception's class.
    field
        The offending field, for contract violations.
    worker_id
        The worker that gave up on the record.
    failed_at
        Wall-clock time of the failure, epoch seconds.

    Examples
    --------
    >>> letter = DeadLetter.from_record(
    ...     topic="driftrec.events", partition=3, offset=42, timestamp=1700000000.0,
    ...     key=b"u1", value=b'{"user_id": "u1"',
    ...     error=RecordError("record", "invalid JSON"), worker_id="w1", failed_at=1700000001.0)
    >>> letter.error, letter.field, letter.payload()
    ('record: invalid JSON', 'record', b'{"user_id": "u1"')
    >>> DeadLetter.from_json_bytes(letter.to_json_bytes()) == letter
    True
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_topic: str
    partition: int
    offset: int
    timestamp: float | None
    key_b64: str | None
    payload_b64: str | None
    payload_bytes: int
    payload_truncated: bool
    error: str
    error_type: str
    field: str | None
    worker_id: str
    failed_at: float

    @classmethod
    def from_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp: float | None,
        key: bytes | None,
        value: bytes | None,
        error: BaseException,
        worker_id: str,
        failed_at: float,
        payload_limit: int = 4 << 20,
    ) -> DeadLetter:
        """The dead letter of one record that failed with ``error``."""
        kept = None if value is None else bytes(value[:payload_limit])
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            timestamp=timestamp,
            key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
            payload_b64=None if kept is None else base64.b64encode(kept).decode("ascii"),
            payload_bytes=0 if value is None else len(value),
            payload_truncated=value is not None and len(value) > payload_limit,
            error=str(error) or type(error).__name__,
            error_type=type(error).__name__,
            field=error.field if isinstance(error, RecordError) else None,
            worker_id=worker_id,
            failed_at=failed_at,
        )

    @classmethod
    def from_message(
        cls,
        message: Any,
        error: BaseException,
        *,
        worker_id: str,
        failed_at: float,
        payload_limit: int = 4 << 20,
    ) -> DeadLetter:
        """The dead letter of a Faust ``ConsumerMessage`` (or anything with its attributes)."""
        return cls.from_record(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp=message.timestamp,
            key=message.key,
            value=message.value,
            error=error,
            worker_id=worker_id,
            failed_at=failed_at,
            payload_limit=payload_limit,
        )

    @property
    def kafka_key(self) -> bytes:
        """Key of the dead letter record: its source coordinates."""
        return f"{self.source_topic}/{self.partition}/{self.offset}".encode()

    def payload(self) -> bytes | None:
        """The original value (or its first bytes, when truncated)."""
        return None if self.payload_b64 is None else base64.b64decode(self.payload_b64)

    def key(self) -> bytes | None:
        """The original key."""
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    def to_json_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> DeadLetter:
        return cls.model_validate(json.loads(data))


class DeadLetterSink:
    """Publishes dead letters to the dead-letters topic and accounts for every one.

    Parameters
    ----------
    topic
        The Faust topic of dead letters (raw key and value serializers).
    on_sent
        Called with each dead letter once it is handed to the producer (metrics).
    on_failed
        Called with each dead letter that could not be published.
    """

    def __init__(self, topic: Any, *, on_sent: Any = None, on_failed: Any = None) -> None:
        self.topic = topic
        self._on_sent = on_sent
        self._on_failed = on_failed

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            logger.warning(
                "dead letter: %s[%d]@%d %s",
                letter.source_topic,
                letter.partition,
                letter.offset,
                letter.error[:300],
            )
            try:
                await self.topic.send(key=letter.kafka_key, value=letter.to_json_bytes())
            except Exception:
                logger.exception(
                    "could not publish the dead letter of %s[%d]@%d (%s); the record is lost",
                    letter.source_topic,
                    letter.partition,
                    letter.offset,
                    letter.error[:300],
                )
                if self._on_failed is not None:
                    self._on_failed(letter)
                continue
            if self._on_sent is not None:
                self._on_sent(letter)
