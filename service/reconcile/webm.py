"""A WebM file's duration, read from its EBML structure, without ffmpeg.

WebM is Matroska (EBML) with the DocType ``webm``. The duration is the Segment's
``Info/Duration`` (a float, in ``TimestampScale`` units, nanoseconds each by default). Files
written live (a browser's MediaRecorder) often have no Duration and unknown-size Segments and
Clusters: then the duration is the last block's time (each Cluster's ``Timestamp`` plus the
block's relative timecode, plus a BlockGroup's ``BlockDuration``), found by walking every
Cluster. Anything else is a :class:`WebmError` that says what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

EBML = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT = 0x18538067
INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
DURATION = 0x4489
CLUSTER = 0x1F43B675
TIMESTAMP = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
BLOCK_DURATION = 0x9B
_LEVEL_1 = frozenset({0x114D9B74, INFO, 0x1654AE6B, CLUSTER, 0x1C53BB6B, 0x1043A770,
                      0x1254C367, 0x1941A469})
"""Children of a Segment: where an unknown-size Cluster ends."""
UNKNOWN = -1
DEFAULT_TIMESTAMP_SCALE = 1_000_000  # nanoseconds per timestamp unit


class WebmError(ValueError):
    """Not a WebM file whose duration can be read."""


def _vint(data: bytes | memoryview, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, length); a size whose bits are all
    ones is :data:`UNKNOWN`."""
    if pos >= len(data):
        raise WebmError("the file ends inside an element header (truncated?)")
    first = data[pos]
    if first == 0:
        raise WebmError(f"invalid EBML length marker at byte {pos}")
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        raise WebmError("the file ends inside an element header (truncated?)")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1:pos + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return UNKNOWN, length
    return value, length


def _elements(data: bytes | memoryview, start: int, end: int, *,
              stop_ids: frozenset[int] = frozenset()) -> Iterator[tuple[int, int, int]]:
    """(id, data start, data end) of each element in ``data[start:end]``; an unknown size
    runs to ``end``. Stops before an element whose id is in ``stop_ids``."""
    pos = start
    while pos < end:
        element_id, id_length = _vint(data, pos, keep_marker=True)
        if element_id in stop_ids:
            return
        size, size_length = _vint(data, pos + id_length, keep_marker=False)
        body = pos + id_length + size_length
        if size == UNKNOWN:  # to the parent's end; a live Cluster to the next Segment child
            stop = _cluster_end(data, body, end) if element_id == CLUSTER else end
        else:
            stop = body + size
        if stop > end:
            stop = end  # a truncated last element: read what is there
        yield element_id, body, stop
        pos = stop


def _uint(data: bytes | memoryview, start: int, end: int) -> int:
    return int.from_bytes(bytes(data[start:end]), "big") if end > start else 0


def _float(data: bytes | memoryview, start: int, end: int) -> float:
    if end - start == 4:
        return float(struct.unpack(">f", bytes(data[start:end]))[0])
    if end - start == 8:
        return float(struct.unpack(">d", bytes(data[start:end]))[0])
    if end == start:
        return 0.0
    raise WebmError("the Duration element is not a 4- or 8-byte float")


def duration_seconds(data: bytes | memoryview) -> float:
    """The duration of the WebM file ``data`` in seconds."""
    if len(data) < 4 or _uint(data, 0, 4) != EBML:
        raise WebmError("not a WebM file: it does not start with an EBML header")
    elements = _elements(data, 0, len(data))
    _header_id, header_start, header_end = next(elements)
    doc_type = next((bytes(data[s:e]).rstrip(b"\x00").decode("ascii", "replace")
                     for i, s, e in _elements(data, header_start, header_end) if i == DOC_TYPE),
                    "matroska")
    if doc_type != "webm":
        raise WebmError(f"not a WebM file: its EBML DocType is {doc_type!r}")
    segment = next(((s, e) for i, s, e in elements if i == SEGMENT), None)
    if segment is None:
        raise WebmError("the WebM file has no Segment")
    scale = DEFAULT_TIMESTAMP_SCALE
    duration: float | None = None
    last_block: int | None = None
    for element_id, start, end in _elements(data, *segment):
        if element_id == INFO:
            for child, child_start, child_end in _elements(data, start, end):
                if child == TIMESTAMP_SCALE:
                    scale = _uint(data, child_start, child_end) or DEFAULT_TIMESTAMP_SCALE
                elif child == DURATION:
                    duration = _float(data, child_start, child_end)
        elif element_id == CLUSTER and duration is None:
            block = _last_block(data, start, end)
            if block is not None:
                last_block = block if last_block is None else max(last_block, block)
    if duration is not None:
        if not duration >= 0 or duration == float("inf"):
            raise WebmError("the WebM file's Duration is not a number of at least 0")
        return duration * scale / 1e9
    if last_block is None:
        raise WebmError("the WebM file states no duration and holds no frames to measure")
    return last_block * scale / 1e9


def _cluster_end(data: bytes | memoryview, start: int, end: int) -> int:
    """Where a Cluster really ends: an unknown-size one stops at the next Segment child."""
    stop = start
    for _id, _start, child_end in _elements(data, start, end, stop_ids=_LEVEL_1):
        stop = child_end
    return stop


def _last_block(data: bytes | memoryview, start: int, end: int) -> int | None:
    """The end time of a Cluster's last block, in timestamp units."""
    cluster_time = 0
    last: int | None = None
    for element_id, child_start, child_end in _elements(data, start, end, stop_ids=_LEVEL_1):
        if element_id == TIMESTAMP:
            cluster_time = _uint(data, child_start, child_end)
        elif element_id == SIMPLE_BLOCK:
            time = cluster_time + _relative_time(data, child_start, child_end)
            last = time if last is None else max(last, time)
        elif element_id == BLOCK_GROUP:
            time, length = None, 0
            for grand, grand_start, grand_end in _elements(data, child_start, child_end):
                if grand == BLOCK:
                    time = cluster_time + _relative_time(data, grand_start, grand_end)
                elif grand == BLOCK_DURATION:
                    length = _uint(data, grand_start, grand_end)
            if time is not None:
                last = time + length if last is None else max(last, time + length)
    return last


def _relative_time(data: bytes | memoryview, start: int, end: int) -> int:
    """A block's timecode relative to its Cluster (a signed 16-bit after the track number)."""
    _track, length = _vint(data, start, keep_marker=False)
    if start + length + 2 > end:
        raise WebmError("a block is too short to hold its timecode")
    value: int = struct.unpack(">h", bytes(data[start + length:start + length + 2]))[0]
    return value
