"""Dense vectors (a face embedding, a video's frame activity series) as packed bytes.

A vector is stored as little-endian IEEE doubles: exact (every JSON number the payload carried
comes back bit for bit) and compact (8 bytes a value, no text). Reads decode only the slice
they need.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

_DOUBLE_BYTES = array("d").itemsize


def pack_doubles(values: Sequence[float]) -> bytes:
    """``values`` as little-endian doubles."""
    packed = array("d", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_doubles(data: bytes, start: int = 0, stop: int | None = None) -> list[float]:
    """The values ``[start:stop]`` of a vector packed by :func:`pack_doubles` (only that slice
    is decoded)."""
    packed = array("d")
    end = None if stop is None else stop * _DOUBLE_BYTES
    packed.frombytes(data[start * _DOUBLE_BYTES:end] if start or end is not None else data)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tolist()
