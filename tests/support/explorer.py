"""What the explorer's tests share: signing in over HTTP, reading a page's CSRF token and
marks, and the payloads the pages are checked with (the shipped examples, a video with face
thumbnails and a critical section, and payloads whose every stored string is a script)."""

from __future__ import annotations

import base64
import re
import struct
import zlib
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')

XSS_JOB_ID = 'xss_<script>window.__xss="job"</script>'
XSS_TEXT = '<script>window.__xss="ocr"</script><img src=x onerror="window.__xss=\'img\'">'
XSS_TAG = '<script>window.__xss="tag"</script>'
XSS_EXTERNAL_ID = '<script>window.__xss="external"</script>'
XSS_SECTION = '<svg onload="window.__xss=\'section\'">'
XSS_ERROR = '<script>window.__xss="error"</script>'
XSS_STRINGS = (XSS_JOB_ID, XSS_TEXT, XSS_TAG, XSS_EXTERNAL_ID, XSS_SECTION, XSS_ERROR)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, *, next_path: str | None = None,
                  prefix: str = "") -> httpx.Response:
    """The sign-in form, filled and sent as a browser would (its CSRF cookie included)."""
    form = await client.get(f"{prefix}/ui/login")
    assert form.status_code == 200, form.text
    data = {"csrf": csrf_of(form.text), "token": token}
    if next_path is not None:
        data["next"] = next_path
    return await client.post(f"{prefix}/ui/login", data=data)


def count_marks(html: str, kind: str) -> int:
    """Marks of one kind drawn on a timeline (``data-kind`` of the SVG links)."""
    return len(re.findall(rf'data-kind="{kind}"', html))


def png(red: int, green: int, blue: int, size: int = 16) -> bytes:
    """A small solid-colour PNG (a stand-in face thumbnail that a browser really decodes)."""
    row = b"\x00" + bytes((red, green, blue)) * size
    raw = zlib.compress(row * size)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


def thumbnail(red: int, green: int, blue: int) -> str:
    return base64.b64encode(png(red, green, blue)).decode("ascii")


def showcase_video(job_id: str = "video_showcase") -> dict[str, Any]:
    """A 40 s video: 4 scenes, 3 sections (one critical, one in two segments), 3 OCR lines,
    3 persons with thumbnails (two of them nearly the same face), 1,200 activity values."""
    activity = [round(0.05 + 0.04 * ((i * 7919) % 13) / 13, 4) for i in range(1200)]
    activity[700] = 0.9  # one spike: it must survive the downsampling
    return {"job_id": job_id, "status": "finished", "result": {
        "raw_scenes": [{"start_seconds": a, "end_seconds": b}
                       for a, b in ((0, 8.5), (8.5, 20), (20, 31.25), (31.25, 40))],
        "frame_activity_diffs": activity,
        "sections": [
            {"section_tag": "intro", "time_segments": [{"start_seconds": 0, "end_seconds": 8}],
             "thumbnail_timestamp": 2, "confidence": 0.93, "is_critical": False,
             "relative_activity": 0.2},
            {"section_tag": "weapon", "time_segments": [
                {"start_seconds": 12, "end_seconds": 16}, {"start_seconds": 33, "end_seconds": 36}],
             "thumbnail_timestamp": 13, "confidence": 0.71, "is_critical": True,
             "relative_activity": 0.8},
            {"section_tag": "crowd", "time_segments": [{"start_seconds": 14, "end_seconds": 25}],
             "thumbnail_timestamp": 15, "confidence": 0.55, "is_critical": False,
             "relative_activity": 0.5},
        ],
        "ocr_results": [
            {"language_code": "en", "full_text": "Harbour bridge closed tonight",
             "time_segment": {"start_seconds": 3, "end_seconds": 6.5}},
            {"language_code": "en", "full_text": "EXIT",
             "time_segment": {"start_seconds": 14, "end_seconds": 14}},
            {"language_code": "de", "full_text": "Brücke gesperrt",
             "time_segment": {"start_seconds": 22, "end_seconds": 27}},
        ],
        "person_constellation_scenes": [
            {"time_segment": {"start_seconds": 9, "end_seconds": 19}, "person_ids": [
                {"face_embedding": [0.9, 0.1, 0.05], "face_thumbnail": thumbnail(200, 120, 80),
                 "age": 33, "gender": "female"},
                {"face_embedding": [-0.2, 0.95, 0.1], "face_thumbnail": thumbnail(60, 110, 190)},
            ]},
            {"time_segment": {"start_seconds": 30, "end_seconds": 38}, "person_ids": [
                {"face_embedding": [0.89, 0.12, 0.06], "face_thumbnail": thumbnail(190, 125, 85)},
            ]},
        ],
    }}


def xss_payloads() -> list[dict[str, Any]]:
    """A video and an image batch whose job ids, OCR texts, tags, section tags, external ids
    and errors are all markup meant to run a script."""
    return [
        {"job_id": XSS_JOB_ID, "status": "finished", "result": {
            "raw_scenes": [{"start_seconds": 0, "end_seconds": 4}],
            "sections": [{"section_tag": XSS_SECTION, "confidence": 0.9, "is_critical": True,
                          "time_segments": [{"start_seconds": 0, "end_seconds": 2}]}],
            "ocr_results": [{"language_code": "en", "full_text": XSS_TEXT,
                             "time_segment": {"start_seconds": 1, "end_seconds": 2}}]}},
        {"job_id": "xss_batch", "status": "finished", "items": [
            {"external_id": XSS_EXTERNAL_ID, "result": {
                "tags": [{"tag": XSS_TAG, "probability": 0.9, "is_critical": True}],
                "ocr_results": [{"full_text": XSS_TEXT}]}},
            {"external_id": "broken", "status": "failed", "error": XSS_ERROR}]},
    ]
