"""Plain stand-ins for the Kafka records Faust hands the agents, for tests without a broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Message:
    """The fields of a Faust message the agents read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = 1_800_000_000.0


@dataclass
class Event:
    """A Faust event: here only its message."""

    message: Message
