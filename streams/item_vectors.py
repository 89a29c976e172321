"""The ``item-vectors`` record: a catalogue item with its vector and the encoder that made it.

The items agent encodes each catalogue text once and publishes this record to
the compacted ``item-vectors`` topic; every worker reads the topic in full and
adopts the vectors (:meth:`streams.worker_catalogue.WorkerCatalogue.apply_item_vector`),
so no worker encodes a text another already encoded with the same model.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from models.contracts import CatalogItem, RecordError
from models.record_parser import EventParser

__all__ = ["decode_item_vector", "encode_item_vector"]


def encode_item_vector(item: CatalogItem, vector: np.ndarray, *, encoder: str) -> bytes:
    """The ``item-vectors`` value of an item: its record, its vector (base64 float32) and encoder.

    >>> item = CatalogItem(item_id="m1", title="Heat (1995)", tags=["Crime"])
    >>> value = encode_item_vector(item, np.array([0.6, 0.8]), encoder="minilm")
    >>> decoded, vector, encoder = decode_item_vector(value, EventParser({"view": 1.0}))
    >>> decoded == item, vector.tolist(), encoder
    (True, [0.6000000238418579, 0.800000011920929], 'minilm')
    """
    little = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
    record = {
        "item": json.loads(item.to_json_bytes()),
        "dim": int(little.shape[0]),
        "encoder": encoder,
        "vector": base64.b64encode(little.tobytes()).decode("ascii"),
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_item_vector(
    value: bytes, parser: EventParser, *, key: bytes | None = None
) -> tuple[CatalogItem, np.ndarray, str]:
    """``(item, vector, encoder)`` of an ``item-vectors`` value; ``RecordError`` if malformed."""
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, ValueError) as error:
        raise RecordError("record", f"invalid item-vectors JSON: {error}") from None
    if not isinstance(record, dict):
        raise RecordError("record", "expected an item-vectors JSON object")
    if not isinstance(record.get("item"), dict):
        raise RecordError("item", "missing (expected the catalogue record as an object)")
    item = parser.parse_item(record["item"], key=key)
    if item is None:  # pragma: no cover - parse_item returns None only for a null record
        raise RecordError("item", "expected the catalogue record, got null")
    encoder, dim, encoded = record.get("encoder"), record.get("dim"), record.get("vector")
    if not isinstance(encoder, str) or not isinstance(dim, int) or not isinstance(encoded, str):
        raise RecordError("vector", "expected string 'encoder', integer 'dim', base64 'vector'")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise RecordError("vector", "not valid base64") from None
    if len(raw) != 4 * dim:
        raise RecordError("vector", f"{len(raw)} bytes, expected {dim} float32 values")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise RecordError("vector", "holds NaN or infinite values")
    return item, vector, encoder
