"""Dense vectors (a face embedding, a video's frame activity series) as packed bytes.

A vector is stored as little-endian IEEE doubles: exact (every JSON number the payload carried
comes back bit for bit) and compact (8 bytes a value, no text). Reads decode only the slice
they need. A parsed payload already holds its vectors this way (:class:`Doubles`).
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


class Doubles:
    """A JSON array of numbers held as it is stored: packed by :func:`pack_doubles`.

    A parsed payload keeps its face embeddings and activity series this way, 8 bytes a value,
    where a list of floats takes 32 (a float object and a list slot): the 1,500 512-d
    embeddings of a 60 min video are 6 MB instead of 25 MB. ``len()`` is the number of values.
    """

    __slots__ = ("packed",)

    def __init__(self, packed: bytes) -> None:
        if len(packed) % _DOUBLE_BYTES:
            raise ValueError("packed doubles are a multiple of 8 bytes")
        self.packed = packed

    @classmethod
    def of(cls, values: Sequence[float]) -> Doubles:
        return cls(pack_doubles(values))

    def tolist(self) -> list[float]:
        return unpack_doubles(self.packed)

    def __len__(self) -> int:
        return len(self.packed) // _DOUBLE_BYTES

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Doubles) and other.packed == self.packed

    def __hash__(self) -> int:
        return hash(self.packed)

    def __repr__(self) -> str:
        return f"Doubles(<{len(self)} values>)"
