"""Sample media for demos and tests: a small but well-formed WebM file of a given duration
(EBML header, Segment with Info, one video track and a Cluster per second of SimpleBlocks).
Its frames are placeholder bytes, not decodable video: enough for every check that reads the
container, as the ``submit`` command's local checks and the simulator do."""

from __future__ import annotations

import struct

from service.reconcile import webm


def _id(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _size(length: int | None) -> bytes:
    if length is None:  # unknown size (a live stream)
        return b"\x01\xff\xff\xff\xff\xff\xff\xff"
    return (length | (1 << 56)).to_bytes(8, "big")


def _element(element_id: int, payload: bytes, *, unknown_size: bool = False) -> bytes:
    return _id(element_id) + _size(None if unknown_size else len(payload)) + payload


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def webm_bytes(duration_seconds: float, *, with_duration: bool = True, live: bool = False,
               frame_bytes: int = 16) -> bytes:
    """A WebM file lasting ``duration_seconds``. ``with_duration=False`` leaves out
    ``Info/Duration``; ``live=True`` also writes the Segment and Clusters with unknown sizes,
    as a browser's MediaRecorder does."""
    header = _element(webm.EBML, b"".join([
        _uint(0x4286, 1), _uint(0x42F7, 1), _uint(0x42F2, 4), _uint(0x42F3, 8),
        _element(webm.DOC_TYPE, b"webm"), _uint(0x4287, 4), _uint(0x4285, 2)]))
    info = [_uint(webm.TIMESTAMP_SCALE, 1_000_000), _element(0x4D80, b"results-receiver"),
            _element(0x5741, b"results-receiver")]
    milliseconds = round(duration_seconds * 1000)
    if with_duration and not live:
        info.append(_element(webm.DURATION, struct.pack(">d", float(milliseconds))))
    tracks = _element(0x1654AE6B, _element(0xAE, b"".join([
        _uint(0xD7, 1), _uint(0x73C5, 1), _uint(0x83, 1), _element(0x86, b"V_VP8"),
        _element(0xE0, _uint(0xB0, 16) + _uint(0xBA, 16))])))
    clusters = []
    frame = b"\x00" * frame_bytes
    for start in range(0, max(milliseconds, 1), 1000):
        last = min(milliseconds, start + 1000) - start
        offsets = sorted({0, 500, last} & set(range(last + 1)))
        blocks = [_element(webm.SIMPLE_BLOCK, b"\x81" + struct.pack(">h", offset) + b"\x80"
                           + frame) for offset in offsets]
        clusters.append(_element(webm.CLUSTER, _uint(webm.TIMESTAMP, start) + b"".join(blocks),
                                 unknown_size=live))
    segment = _element(webm.SEGMENT, _element(webm.INFO, b"".join(info)) + tracks
                       + b"".join(clusters), unknown_size=live)
    return header + segment
