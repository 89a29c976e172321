"""The binary form of the clusterer's messages: a header, JSON scalars, little-endian arrays.

::

    4 bytes   magic (``DRCD`` a delta, ``DRCS`` a snapshot)
    u16       format version (:data:`FORMAT_VERSION`)
    u32       length of the JSON metadata that follows
    JSON      scalars, and each array's name, dtype and shape
    arrays    the raw little-endian float64 / int64 arrays, in the metadata's order

A reader refuses anything else — another magic, a newer version, a truncated
or oversized record, a dtype it does not know — with a ``ValueError`` that
says which.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

__all__ = ["DELTA_MAGIC", "FORMAT_VERSION", "SNAPSHOT_MAGIC", "decode", "encode"]

#: Version of the binary layout written by ``to_bytes`` (snapshots and deltas alike).
FORMAT_VERSION = 1


SNAPSHOT_MAGIC = b"DRCS"
DELTA_MAGIC = b"DRCD"
_HEADER = struct.Struct("<4sHI")  # magic, format version, length of the JSON metadata
_ALLOWED_DTYPES = {"<f8": np.float64, "<i8": np.int64}


def encode(magic: bytes, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Header, JSON metadata (scalars and array layouts), then the raw little-endian arrays."""
    specs, blobs = [], []
    for name, array in arrays.items():
        little = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
        if little.dtype.str not in _ALLOWED_DTYPES:
            raise TypeError(f"array {name!r} has dtype {little.dtype}; expected float64 or int64")
        specs.append([name, little.dtype.str, list(little.shape)])
        blobs.append(little.tobytes())
    meta_bytes = json.dumps({**meta, "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([_HEADER.pack(magic, FORMAT_VERSION, len(meta_bytes)), meta_bytes, *blobs])


def decode(data: bytes, magic: bytes, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise ValueError(f"not a driftrec {what}: {len(view)} bytes, shorter than the header")
    found_magic, version, meta_len = _HEADER.unpack_from(view)
    if found_magic != magic:
        raise ValueError(f"not a driftrec {what}: magic {found_magic!r}, expected {magic!r}")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"unsupported {what} format version {version}; this driftrec reads version "
            f"{FORMAT_VERSION} (upgrade the reader, or republish with a matching writer)"
        )
    offset = _HEADER.size + meta_len
    if len(view) < offset:
        raise ValueError(f"truncated driftrec {what}: metadata needs {offset} bytes")
    meta = json.loads(bytes(view[_HEADER.size : offset]))
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_str, shape in meta.pop("arrays"):
        if dtype_str not in _ALLOWED_DTYPES:
            raise ValueError(f"driftrec {what} array {name!r} has unsupported dtype {dtype_str}")
        dtype = np.dtype(dtype_str)
        n_bytes = dtype.itemsize * math.prod(shape)
        if len(view) < offset + n_bytes:
            raise ValueError(f"truncated driftrec {what}: array {name!r} runs past the end")
        flat = np.frombuffer(view[offset : offset + n_bytes], dtype=dtype)
        arrays[name] = flat.reshape(shape).astype(_ALLOWED_DTYPES[dtype_str])
        offset += n_bytes
    if offset != len(view):
        raise ValueError(f"driftrec {what} has {len(view) - offset} unexpected trailing bytes")
    return meta, arrays
