"""Random but reproducible result payloads, and the rows each must become.

Payloads have the upstream's shapes (video, image batch, failure) with varied sizes, full
precision doubles and no nulls or unknown fields, so ``/v1/jobs/{id}/payload`` must return
them exactly. :func:`expected_counts` counts the rows a payload must produce per entity,
independently of the service's code.
"""

from __future__ import annotations

import random
from typing import Any

Document = dict[str, Any]

# Entity name in the API's job summary ``counts`` -> the table holding its rows.
ENTITY_TABLES = {
    "items": "media_items",
    "scenes": "scenes",
    "activity": "frame_activity",
    "sections": "sections",
    "segments": "section_segments",
    "ocr": "ocr_texts",
    "person_scenes": "person_scenes",
    "persons": "persons",
    "tags": "tags",
}

_WORDS = ("dog", "cat", "park", "exit", "Kitchen", "No dogs off leash", "東京タワー", "Ausfahrt",
          "sale", "intro", "demo", "outro", "menu", "café", "ÑANDÚ", "speed 30")
_LANGUAGES = ("en", "de", "ja", "es", "fr")
_GENDERS = ("female", "male", "unidentified")


def _segment(rng: random.Random) -> Document:
    start = rng.uniform(0, 600)
    return {"start_seconds": start, "end_seconds": start + rng.uniform(0.01, 30)}


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))


def _ocr(rng: random.Random, *, timed: bool) -> Document:
    text: Document = {"language_code": rng.choice(_LANGUAGES), "full_text": _text(rng)}
    if timed:
        text["time_segment"] = _segment(rng)
    return text


def _person(rng: random.Random) -> Document:
    person: Document = {"age": rng.randint(1, 90), "gender": rng.choice(_GENDERS),
                        "face_embedding": [rng.uniform(-1, 1) for _ in range(8)]}
    if rng.random() < 0.5:
        person["relative_prominence"] = rng.random()
        person["allowlisted"] = rng.random() < 0.5
    return person


def video_result(rng: random.Random, *, size: int = 1) -> Document:
    """A video ``result``; ``size`` scales the number of rows."""
    n = max(1, size)
    return {
        "raw_scenes": [_segment(rng) for _ in range(rng.randint(0, 6 * n))],
        "frame_activity_diffs": [rng.random() for _ in range(rng.randint(0, 60 * n))],
        "sections": [{
            "section_tag": rng.choice(_WORDS),
            "time_segments": [_segment(rng) for _ in range(rng.randint(1, 3))],
            "thumbnail_timestamp": rng.uniform(0, 600),
            "confidence": rng.random(),
            "is_critical": rng.random() < 0.2,
            "relative_activity": rng.random(),
        } for _ in range(rng.randint(0, 4 * n))],
        "ocr_results": [_ocr(rng, timed=True) for _ in range(rng.randint(0, 5 * n))],
        "person_constellation_scenes": [{
            "time_segment": _segment(rng),
            "person_ids": [_person(rng) for _ in range(rng.randint(0, 3))],
        } for _ in range(rng.randint(0, 3 * n))],
    }


def image_items(rng: random.Random, *, size: int = 1) -> list[Document]:
    items: list[Document] = []
    for index in range(rng.randint(1, 6 * max(1, size))):
        external_id = f"img-{index}-{rng.randrange(10**6)}"
        if rng.random() < 0.1:
            items.append({"external_id": external_id, "status": "failed",
                          "error": "could not decode the image"})
            continue
        items.append({"external_id": external_id, "result": {
            "tags": [{"tag": rng.choice(_WORDS), "probability": rng.random(),
                      "is_critical": rng.random() < 0.1} for _ in range(rng.randint(0, 5))],
            "person_ids": [_person(rng) for _ in range(rng.randint(0, 2))],
            "ocr_results": [_ocr(rng, timed=False) for _ in range(rng.randint(0, 2))],
        }})
    return items


def failure(rng: random.Random, job_id: str) -> Document:
    error: Any = rng.choice((
        "cancelled",
        {"code": "MAX_PROCESSING_TIME_EXCEEDED",
         "message": "The job exceeded Max-Processing-Time and was cancelled."},
        {"code": "DECODER_ERROR", "message": f"corrupt stream at {rng.randrange(10**6)}"},
    ))
    return {"job_id": job_id, "status": "failed", "error": error}


def random_job(rng: random.Random, index: int, *, size: int = 1) -> Document:
    """Job ``index``: 60 % video, 30 % image batch, 10 % failed video."""
    draw = rng.random()
    if draw < 0.6:
        return {"job_id": f"video_r{index:06d}", "status": "finished",
                "result": video_result(rng, size=size)}
    if draw < 0.9:
        return {"job_id": f"image_batch_r{index:06d}", "status": "finished",
                "items": image_items(rng, size=size)}
    return failure(rng, f"video_r{index:06d}")


def expected_counts(document: Document) -> dict[str, int]:
    """Rows per entity (the summary's ``counts`` keys) that ``document`` must produce."""
    counts = dict.fromkeys(ENTITY_TABLES, 0)
    result = document.get("result")
    if result is not None:
        counts["items"] += 1
        counts["scenes"] += len(result.get("raw_scenes") or ())
        counts["activity"] += len(result.get("frame_activity_diffs") or ())
        for section in result.get("sections") or ():
            counts["sections"] += 1
            counts["segments"] += len(section.get("time_segments") or ())
        counts["ocr"] += len(result.get("ocr_results") or ())
        for scene in result.get("person_constellation_scenes") or ():
            counts["person_scenes"] += 1
            counts["persons"] += len(scene.get("person_ids") or ())
    for item in document.get("items") or ():
        counts["items"] += 1
        item_result = item.get("result")
        if item_result is not None:
            counts["tags"] += len(item_result.get("tags") or ())
            counts["persons"] += len(item_result.get("person_ids") or ())
            counts["ocr"] += len(item_result.get("ocr_results") or ())
    return counts
