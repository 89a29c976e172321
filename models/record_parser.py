"""The strict parser of driftrec's input records: bytes in, typed records or a RecordError out.

Every record that enters the engine passes through :class:`EventParser`, which
turns the bytes of a Kafka value (or an already decoded mapping) into a typed,
validated record of :mod:`models.contracts`, or raises
:class:`~models.contracts.RecordError` naming the field that was wrong and
what was expected. Nothing else ever escapes the parser, so a worker can send
any failure to the dead-letter topic and carry on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from models.contracts import DISMISS_EVENT, BehaviourEvent, CatalogItem, RecordError

if TYPE_CHECKING:
    from models.settings import EngineSettings

__all__ = ["EventParser"]


#: Largest accepted event time in epoch seconds (year 5138). Larger numbers are
#: almost always epoch *milliseconds* sent by mistake.
MAX_EPOCH_S = 1e11

#: Largest accepted effective event weight. It keeps every weight representable
#: in the float32 of the window's binary format, with a wide margin.
MAX_EFFECTIVE_WEIGHT = 1e12

#: Longest accepted ISO-8601 timestamp string.
MAX_ISO_CHARS = 64

_EVENT_FIELDS = frozenset(
    {"user_id", "item_id", "event", "ts", "event_id", "weight", "rating", "item_text"}
)
_ITEM_FIELDS = frozenset({"item_id", "title", "text", "tags", "ts", "available", "expires_at"})

_RECORD = "record"


def _type_name(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _preview(value: str | bytes | None, limit: int = 40) -> str:
    if not isinstance(value, str):
        return repr(value)
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class EventParser:
    """Strict parser of ``events`` and ``items`` records into typed records.

    Input may be the raw bytes of a Kafka value, a ``str``, or a mapping already
    decoded from JSON. Any problem — invalid UTF-8 or JSON, a value that is not
    an object, a missing field, a wrong type (ids must be JSON strings, numbers
    must not be booleans), an empty or too long id or text, a timestamp that is
    not a finite, non-negative epoch-seconds number or ISO-8601 string, an
    unknown event type, a ``rate`` event without a rating in (0, ``rating_max``],
    a weight that is not a positive finite number — raises :class:`RecordError`
    and nothing else.

    The effective weight of an event is

    .. code-block:: text

        w = event_weights[event] * (weight field, or 1 when absent)
                                 * (rating / rating_midpoint, for `rate` events only)

    Parameters
    ----------
    event_weights
        Weight of each accepted event type; custom types are added here.
    rating_midpoint
        The rating that leaves a ``rate`` event's weight unchanged.
    rating_max
        The largest accepted rating.
    max_text_chars
        Longest accepted ``item_text``, ``title``, ``text`` (and tags together).
    max_id_chars
        Longest accepted ``user_id``, ``item_id``, ``event_id``.

    Examples
    --------
    >>> parser = EventParser({"view": 1.0, "click": 2.0, "rate": 3.0})
    >>> event = parser.parse_event(
    ...     b'{"user_id": "u42", "item_id": "m1193", "event": "rate", "rating": 4.5,'
    ...     b' "ts": "2000-12-31T22:12:40Z", "source": "app"}')
    >>> event.ts, event.weight, event.extra
    (978300760.0, 4.5, {'source': 'app'})
    >>> parser.parse_event({"user_id": 42, "item_id": "m1", "event": "view", "ts": 0})
    Traceback (most recent call last):
    ...
    models.contracts.RecordError: user_id: expected a string, got number
    >>> parser.parse_item(None, key="m1") is None   # a tombstone deletes the item
    True

    """

    def __init__(
        self,
        event_weights: Mapping[str, float],
        *,
        rating_midpoint: float = 3.0,
        rating_max: float = 5.0,
        max_text_chars: int = 16_384,
        max_id_chars: int = 256,
    ) -> None:
        if not event_weights:
            raise ValueError("event_weights must name at least one event type")
        for name, weight in event_weights.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"event type names must be non-empty strings, got {name!r}")
            if not _is_number(weight) or not math.isfinite(weight) or weight <= 0:
                raise ValueError(
                    f"event weight of {name!r} must be a finite number > 0, got {weight!r}"
                )
        if not (math.isfinite(rating_midpoint) and rating_midpoint > 0):
            raise ValueError(
                f"rating_midpoint must be a finite number > 0, got {rating_midpoint!r}"
            )
        if not (math.isfinite(rating_max) and rating_max > 0):
            raise ValueError(f"rating_max must be a finite number > 0, got {rating_max!r}")
        if max_text_chars < 1 or max_id_chars < 1:
            raise ValueError(
                "max_text_chars and max_id_chars must be >= 1,"
                f" got {max_text_chars} and {max_id_chars}"
            )
        self.event_weights: dict[str, float] = {k: float(v) for k, v in event_weights.items()}
        self.rating_midpoint = float(rating_midpoint)
        self.rating_max = float(rating_max)
        self.max_text_chars = max_text_chars
        self.max_id_chars = max_id_chars

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> EventParser:
        """A parser configured by the engine's settings."""
        return cls(
            settings.event_weights,
            rating_midpoint=settings.rating_midpoint,
            rating_max=settings.rating_max,
            max_text_chars=settings.max_text_chars,
            max_id_chars=settings.max_id_chars,
        )

    # --- public ---------------------------------------------------------------

    def parse_event(
        self, raw: bytes | bytearray | memoryview | str | Mapping[str, Any]
    ) -> BehaviourEvent:
        """Parse one ``events`` value; raise :class:`RecordError` if it breaks the contract."""
        record = self._object(raw)
        if record is None:
            raise RecordError(_RECORD, "expected a JSON object, got null")
        user_id = self._id(record, "user_id")
        item_id = self._id(record, "item_id")
        event = self._event_type(record)
        ts = self._ts(record.get("ts"), "ts", required=True)
        assert ts is not None
        event_id = self._id(record, "event_id", required=False)
        raw_weight = self._weight(record.get("weight"))
        rating = self._rating(record.get("rating"), required=event == "rate")
        item_text = self._text(record, "item_text", required=False)

        if event == DISMISS_EVENT:  # a hide: no weight, nothing learned from it
            weight = 0.0
        else:
            weight = self.event_weights[event] * (1.0 if raw_weight is None else raw_weight)
        if event == "rate":
            assert rating is not None
            weight *= rating / self.rating_midpoint
        if not weight <= MAX_EFFECTIVE_WEIGHT:
            raise RecordError(
                "weight", f"effective weight {weight!r} is over the limit {MAX_EFFECTIVE_WEIGHT:g}"
            )
        extra = {name: value for name, value in record.items() if name not in _EVENT_FIELDS}
        return BehaviourEvent(
            user_id=user_id,
            item_id=item_id,
            event=event,
            ts=ts,
            event_id=event_id,
            weight=weight,
            raw_weight=raw_weight,
            rating=rating,
            item_text=item_text,
            extra=extra,
        )

    def parse_item(
        self,
        raw: bytes | bytearray | memoryview | str | Mapping[str, Any] | None,
        *,
        key: str | bytes | None = None,
    ) -> CatalogItem | None:
        """Parse one ``items`` value; None for a tombstone (a null value with a key).

        When ``key`` (the Kafka record key, str or UTF-8 bytes) is given, the
        record's ``item_id`` must equal it.

        """
        if isinstance(key, bytes | bytearray | memoryview):
            try:
                key = bytes(key).decode("utf-8")
            except UnicodeDecodeError:
                raise RecordError("key", "not valid UTF-8") from None
        if key is not None:
            key = self._check_id(key, "key")
        record = None if raw is None else self._object(raw)
        if record is None:
            if key is None:
                raise RecordError(_RECORD, "null value (a delete) needs the item's key")
            return None
        item_id = self._id(record, "item_id")
        if key is not None and item_id != key:
            raise RecordError(
                "item_id", f"{_preview(item_id)} differs from the record key {_preview(key)}"
            )
        title = self._text(record, "title", required=True)
        assert title is not None
        text = self._text(record, "text", required=False)
        tags = self._tags(record.get("tags"))
        ts = self._ts(record.get("ts"), "ts", required=False)
        available = record.get("available", True)
        if not isinstance(available, bool):
            raise RecordError("available", f"expected true or false, got {_type_name(available)}")
        expires_at = self._ts(record.get("expires_at"), "expires_at", required=False)
        extra = {name: value for name, value in record.items() if name not in _ITEM_FIELDS}
        return CatalogItem(
            item_id=item_id,
            title=title,
            text=text,
            tags=tags,
            ts=ts,
            available=available,
            expires_at=expires_at,
            extra=extra,
        )

    # --- fields ---------------------------------------------------------------

    @staticmethod
    def _object(raw: object) -> Mapping[str, Any] | None:
        """Decode bytes/str to a JSON object (None for JSON null); check a mapping's keys."""
        if isinstance(raw, bytes | bytearray | memoryview):
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as error:
                raise RecordError(
                    _RECORD,
                    f"not valid UTF-8 (byte 0x{error.object[error.start]:02x} at {error.start})",
                ) from None
        if isinstance(raw, str):
            try:
                value = json.loads(raw, parse_constant=_reject_constant)
            except RecursionError:
                raise RecordError(_RECORD, "invalid JSON: nested too deeply") from None
            except ValueError as error:
                raise RecordError(_RECORD, f"invalid JSON: {error}") from None
        else:
            value = raw
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise RecordError(_RECORD, f"expected a JSON object, got {_type_name(value)}")
        for name in value:
            if not isinstance(name, str):
                raise RecordError(_RECORD, f"field names must be strings, got {name!r}")
        return value

    def _check_id(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            raise RecordError(field, f"expected a string, got {_type_name(value)}")
        if not value.strip():
            raise RecordError(field, "must not be empty or blank")
        if len(value) > self.max_id_chars:
            raise RecordError(
                field, f"{len(value)} characters long, the limit is {self.max_id_chars}"
            )
        _check_encodable(value, field)
        return value

    def _id(self, record: Mapping[str, Any], field: str, *, required: bool = True) -> str | None:
        value = record.get(field)
        if value is None:
            if required:
                raise RecordError(field, "missing (expected a non-empty string)")
            return None
        return self._check_id(value, field)

    def _text(self, record: Mapping[str, Any], field: str, *, required: bool) -> str | None:
        value = record.get(field)
        if value is None:
            if required:
                raise RecordError(field, "missing (expected a string)")
            return None
        if not isinstance(value, str):
            raise RecordError(field, f"expected a string, got {_type_name(value)}")
        if len(value) > self.max_text_chars:
            raise RecordError(
                field, f"{len(value)} characters long, the limit is {self.max_text_chars}"
            )
        _check_encodable(value, field)
        return value

    def _tags(self, value: object) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise RecordError("tags", f"expected an array of strings, got {_type_name(value)}")
        total = 0
        for index, tag in enumerate(value):
            if not isinstance(tag, str):
                raise RecordError(f"tags[{index}]", f"expected a string, got {_type_name(tag)}")
            _check_encodable(tag, f"tags[{index}]")
            total += len(tag)
        if total > self.max_text_chars:
            raise RecordError(
                "tags", f"{total} characters in all, the limit is {self.max_text_chars}"
            )
        return list(value)

    def _event_type(self, record: Mapping[str, Any]) -> str:
        value = record.get("event")
        expected = ", ".join(sorted({*self.event_weights, DISMISS_EVENT}))
        if value is None:
            raise RecordError("event", f"missing (expected one of {expected})")
        if not isinstance(value, str):
            raise RecordError("event", f"expected a string, got {_type_name(value)}")
        if value not in self.event_weights and value != DISMISS_EVENT:
            raise RecordError(
                "event", f"unknown event type {_preview(value)}, expected one of {expected}"
            )
        return value

    @staticmethod
    def _ts(value: object, field: str, *, required: bool) -> float | None:
        if value is None:
            if required:
                raise RecordError(field, "missing (expected epoch seconds or an ISO-8601 string)")
            return None
        if _is_number(value):
            assert isinstance(value, int | float)
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordError(field, f"must be finite, got {value!r}")
            if value < 0:
                raise RecordError(field, f"must be >= 0 epoch seconds, got {value!r}")
            if value > MAX_EPOCH_S:
                shown = repr(value) if value < 1e30 else "a huge number"
                raise RecordError(
                    field,
                    f"{shown} looks like epoch milliseconds (or is after year 5138);"
                    f" expected epoch seconds (<= {MAX_EPOCH_S:g})",
                )
            return float(value)
        if isinstance(value, str):
            return _parse_iso(value, field)
        raise RecordError(
            field, f"expected epoch seconds (number) or ISO-8601 string, got {_type_name(value)}"
        )

    @staticmethod
    def _weight(value: object) -> float | None:
        if value is None:
            return None
        if not _is_number(value):
            raise RecordError("weight", f"expected a number, got {_type_name(value)}")
        assert isinstance(value, int | float)
        if not value > 0 or not value <= MAX_EFFECTIVE_WEIGHT:
            raise RecordError(
                "weight", f"expected a number in (0, {MAX_EFFECTIVE_WEIGHT:g}], got {value!r}"
            )
        return float(value)

    def _rating(self, value: object, *, required: bool) -> float | None:
        expected = f"a number in (0, {self.rating_max:g}]"
        if value is None:
            if required:
                raise RecordError("rating", f"missing, a 'rate' event needs {expected}")
            return None
        if not _is_number(value):
            raise RecordError("rating", f"expected {expected}, got {_type_name(value)}")
        assert isinstance(value, int | float)
        if not 0 < value <= self.rating_max:
            raise RecordError("rating", f"expected {expected}, got {value!r}")
        return float(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_encodable(value: str, field: str) -> None:
    """Reject strings that cannot be written back as UTF-8 (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(field, "contains an unpaired surrogate (not valid Unicode)") from None


def _parse_iso(value: str, field: str) -> float:
    text = value.strip()
    if len(text) > MAX_ISO_CHARS:
        raise RecordError(field, f"ISO-8601 string longer than {MAX_ISO_CHARS} characters")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(
            field,
            f"expected epoch seconds (number) or ISO-8601 string, got string {_preview(value)}",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        ts = moment.timestamp()
    except (OverflowError, ValueError):
        raise RecordError(field, f"{_preview(value)} is out of range") from None
    if not 0 <= ts <= MAX_EPOCH_S:
        raise RecordError(field, f"{_preview(value)} is before 1970 or after year 5138")
    return ts
