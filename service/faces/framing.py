"""Messages over the face features' local sockets (:mod:`service.faces.peers`,
:mod:`service.faces.remote`): each is its length (4 bytes, big-endian) and then its body."""

from __future__ import annotations

import asyncio

HEADER_BYTES = 4


class MessageTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a message of {size} bytes")
        self.size = size


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(HEADER_BYTES, "big") + body


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    """The next message's body; :class:`MessageTooLarge` (nothing more read) past
    ``max_bytes``, ``asyncio.IncompleteReadError`` when the connection ends first."""
    size = int.from_bytes(await reader.readexactly(HEADER_BYTES), "big")
    if size > max_bytes:
        raise MessageTooLarge(size)
    return await reader.readexactly(size)
