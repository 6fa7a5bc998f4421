"""Deterministic webhook payloads for the benchmarks, by name and seed.

Every generator draws from ``random.Random(f"{seed}:{name}")`` only, so the same name and seed
give the same bytes on any machine and Python version (string seeds are hashed with SHA-512).
Bodies are compact JSON, as the upstream sends them, with ``job_id`` as the first key: a
:class:`Template` is the body split around the job id, so a load driver makes a unique
delivery by joining three byte strings instead of re-encoding 22 MB.

Payloads (``python -m bench.payloads`` prints their sizes and row counts):

* ``small``: the reference example (``service/examples/video_finished.json``).
* ``image``: an image batch of 20 items (4 tags, 2 persons with 128-d embeddings and 1.5 KB
  thumbnails, 3 OCR lines each).
* ``typical``: a 60 s video: 20 scenes, 1,800 activity values (30 fps), 8 sections x 2
  segments, 40 OCR lines, 20 person scenes x 3 persons with 128-d embeddings and 1.5 KB
  thumbnails (about 330 KB).
* ``typical_x4``: ``typical`` with every count four times larger (a 4 min video), to show
  how ingest cost grows with rows.
* ``large``: a 60 min video: 200 scenes, 108,000 activity values, 100 sections x 2 segments,
  2,000 OCR lines, 300 person scenes x 5 persons with 512-d embeddings and 1.5 KB thumbnails
  (about 22 MB).

"1.5 KB thumbnail" means 1,536 random bytes, base64-encoded (a 2,048-character string).
Embedding and activity values are full-precision doubles (up to 17 significant digits): that
is what gives the stated sizes, and it is the worst case for parsing.

``seed_job(index, seed)`` gives the mixed corpus used to fill a database for the query
benchmark (mostly short videos, some image batches, failures and a few typical videos); the
rare word :data:`RARE_WORD` occurs in a few of its OCR lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

PAYLOAD_NAMES = ("small", "image", "typical", "typical_x4", "large")
RARE_WORD = "quokka"
_RARE_EVERY = 2000  # seed corpus: one short video in this many carries RARE_WORD
_PLACEHOLDER = "\x00JOB_ID\x00"

_WORDS = (
    "exit", "emergency", "door", "open", "close", "push", "pull", "stop", "go", "left", "right",
    "north", "south", "east", "west", "parking", "lot", "level", "floor", "entrance", "caution",
    "wet", "sale", "new", "price", "total", "euro", "dollar", "street", "road", "avenue",
    "station", "platform", "train", "bus", "tram", "ticket", "office", "hours", "monday",
    "friday", "weekend", "welcome", "hello", "thank", "you", "please", "no", "smoking", "dogs",
    "off", "leash", "keep", "clear", "fire", "alarm", "only", "staff", "private", "area",
    "danger", "high", "voltage", "water", "drink", "coffee", "tea", "menu", "special", "today",
    "open", "late", "pharmacy", "bank", "hotel", "room", "lobby", "reception", "elevator",
    "stairs", "toilet", "men", "women", "kids", "play", "school", "zone", "slow", "speed",
    "limit", "km", "mph", "city", "center", "museum", "park", "garden", "library",
)
_TAGS = ("person", "car", "dog", "cat", "tree", "building", "road", "sky", "indoor", "outdoor",
         "food", "text", "logo", "screen", "crowd", "bicycle")
_SECTION_TAGS = ("intro", "talk", "demo", "outro", "interview", "b-roll", "credits", "ad")
_LANGUAGES = ("en", "en", "en", "de", "fr", "es")
_GENDERS = ("female", "male", "unidentified")


@dataclass(frozen=True)
class VideoShape:
    seconds: float
    scenes: int
    activity: int
    sections: int
    segments_per_section: int
    ocr_lines: int
    person_scenes: int
    persons_per_scene: int
    embedding_dim: int
    thumbnail_bytes: int


TYPICAL = VideoShape(seconds=60, scenes=20, activity=1800, sections=8, segments_per_section=2,
                     ocr_lines=40, person_scenes=20, persons_per_scene=3, embedding_dim=128,
                     thumbnail_bytes=1536)
TYPICAL_X4 = VideoShape(seconds=240, scenes=80, activity=7200, sections=32,
                        segments_per_section=2, ocr_lines=160, person_scenes=80,
                        persons_per_scene=3, embedding_dim=128, thumbnail_bytes=1536)
LARGE = VideoShape(seconds=3600, scenes=200, activity=108_000, sections=100,
                   segments_per_section=2, ocr_lines=2000, person_scenes=300,
                   persons_per_scene=5, embedding_dim=512, thumbnail_bytes=1536)
SHORT = VideoShape(seconds=10, scenes=4, activity=30, sections=2, segments_per_section=1,
                   ocr_lines=3, person_scenes=2, persons_per_scene=2, embedding_dim=16,
                   thumbnail_bytes=0)


@dataclass(frozen=True)
class Template:
    """A body split around its job id: ``prefix + job_id + suffix``."""

    name: str
    job_prefix: str
    prefix: bytes
    suffix: bytes

    def body(self, job_id: str) -> bytes:
        return self.prefix + job_id.encode("ascii") + self.suffix

    @property
    def size(self) -> int:
        """Body size for a job id of the usual length (about 24 bytes)."""
        return len(self.prefix) + len(self.suffix) + 24


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _split(name: str, job_prefix: str, document: dict[str, Any]) -> Template:
    encoded = _encode({"job_id": _PLACEHOLDER, **document})
    marker = json.dumps(_PLACEHOLDER).encode("ascii")  # the escaped form, quotes included
    prefix, found, suffix = encoded.partition(marker)
    assert found, "the job id placeholder is missing"
    assert marker not in suffix, "the job id placeholder occurs twice"
    return Template(name=name, job_prefix=job_prefix, prefix=prefix + b'"', suffix=b'"' + suffix)


def _r(value: float, digits: int = 4) -> float:
    return round(value, digits)


def _text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _thumbnail(rng: random.Random, size: int) -> str | None:
    return base64.b64encode(rng.randbytes(size)).decode("ascii") if size else None


def _person(rng: random.Random, dim: int, thumbnail_bytes: int) -> dict[str, Any]:
    person: dict[str, Any] = {
        "age": rng.randint(4, 80),
        "gender": rng.choice(_GENDERS),
        "face_embedding": [rng.gauss(0.0, 0.09) for _ in range(dim)],
        "allowlisted": rng.random() < 0.1,
        "relative_prominence": _r(rng.random()),
    }
    thumbnail = _thumbnail(rng, thumbnail_bytes)
    if thumbnail is not None:
        person["face_thumbnail"] = thumbnail
    return person


def _segments(rng: random.Random, seconds: float, count: int) -> list[tuple[float, float]]:
    """``count`` ordered, non-overlapping (start, end) pairs inside [0, seconds]."""
    cuts = sorted(_r(rng.uniform(0, seconds), 3) for _ in range(count * 2))
    return [(cuts[2 * i], cuts[2 * i + 1]) for i in range(count)]


def _video_result(rng: random.Random, shape: VideoShape,
                  rare_word: str | None = None) -> dict[str, Any]:
    bounds = sorted(_r(rng.uniform(0, shape.seconds), 3) for _ in range(shape.scenes - 1))
    edges = [0.0, *bounds, float(shape.seconds)]
    scenes = [{"start_seconds": edges[i], "end_seconds": edges[i + 1]}
              for i in range(shape.scenes)]
    activity = [abs(rng.gauss(0.0, 0.1)) for _ in range(shape.activity)]
    sections = []
    for _ in range(shape.sections):
        segments = _segments(rng, shape.seconds, shape.segments_per_section)
        sections.append({
            "section_tag": rng.choice(_SECTION_TAGS),
            "time_segments": [{"start_seconds": s, "end_seconds": e} for s, e in segments],
            "thumbnail_timestamp": segments[0][0],
            "confidence": _r(rng.uniform(0.5, 1.0)),
            "is_critical": rng.random() < 0.05,
            "relative_activity": _r(rng.random()),
        })
    ocr = []
    for i in range(shape.ocr_lines):
        start, end = _segments(rng, shape.seconds, 1)[0]
        text = _text(rng, 2, 9)
        if rare_word is not None and i == 0:
            text = f"{text} {rare_word}"
        ocr.append({"language_code": rng.choice(_LANGUAGES), "full_text": text,
                    "time_segment": {"start_seconds": start, "end_seconds": end}})
    person_scenes = []
    for start, end in _segments(rng, shape.seconds, shape.person_scenes):
        person_scenes.append({
            "time_segment": {"start_seconds": start, "end_seconds": end},
            "person_ids": [_person(rng, shape.embedding_dim, shape.thumbnail_bytes)
                           for _ in range(shape.persons_per_scene)],
        })
    return {"raw_scenes": scenes, "frame_activity_diffs": activity, "sections": sections,
            "ocr_results": ocr, "person_constellation_scenes": person_scenes}


def _image_items(rng: random.Random, count: int, *, tags: int, persons: int, ocr_lines: int,
                 dim: int, thumbnail_bytes: int, rare_word: str | None = None
                 ) -> list[dict[str, Any]]:
    items = []
    for index in range(count):
        lines = [_text(rng, 1, 6) for _ in range(ocr_lines)]
        if rare_word is not None and index == 0 and lines:
            lines[0] = f"{lines[0]} {rare_word}"
        items.append({
            "external_id": f"img-{index:04d}",
            "result": {
                "tags": [{"tag": rng.choice(_TAGS), "probability": _r(rng.random()),
                          "is_critical": rng.random() < 0.05} for _ in range(tags)],
                "person_ids": [_person(rng, dim, thumbnail_bytes) for _ in range(persons)],
                "ocr_results": [{"language_code": rng.choice(_LANGUAGES), "full_text": line}
                                for line in lines],
            },
        })
    return items


def _small_document() -> dict[str, Any]:
    raw = resources.files("service.examples").joinpath("video_finished.json").read_bytes()
    document: dict[str, Any] = json.loads(raw)
    document.pop("job_id")
    return document


@lru_cache(maxsize=16)
def template(name: str, seed: int = 1) -> Template:
    """The payload ``name`` (one of :data:`PAYLOAD_NAMES`) for ``seed``, split at its job id."""
    rng = random.Random(f"{seed}:{name}")  # noqa: S311 (test data, not secrets)
    if name == "small":
        return _split(name, "video_", _small_document())
    if name == "image":
        items = _image_items(rng, 20, tags=4, persons=2, ocr_lines=3, dim=128,
                             thumbnail_bytes=1536)
        return _split(name, "image_batch_", {"status": "finished", "items": items})
    shapes = {"typical": TYPICAL, "typical_x4": TYPICAL_X4, "large": LARGE}
    if name not in shapes:
        raise ValueError(f"unknown payload {name!r}; one of {', '.join(PAYLOAD_NAMES)}")
    return _split(name, "video_",
                  {"status": "finished", "result": _video_result(rng, shapes[name])})


def build(name: str, job_id: str, seed: int = 1) -> bytes:
    """The body of payload ``name`` for ``job_id``."""
    return template(name, seed).body(job_id)


def small(job_id: str, seed: int = 1) -> bytes:
    return build("small", job_id, seed)


def typical(job_id: str, seed: int = 1) -> bytes:
    return build("typical", job_id, seed)


def image_batch(job_id: str, seed: int = 1) -> bytes:
    return build("image", job_id, seed)


def large(job_id: str, seed: int = 1) -> bytes:
    return build("large", job_id, seed)


# --- the query benchmark's corpus ---------------------------------------------------------------

def seed_job_id(index: int) -> str:
    kind = seed_kind(index)
    prefix = "image_batch" if kind == "image" else "video"
    return f"{prefix}_seed_{index:07d}"


def seed_kind(index: int) -> str:
    """``typical`` (1 in 1,000), ``failed`` (1 in 20), ``image`` (2 in 10) or ``short``."""
    if index % 1000 == 500:
        return "typical"
    if index % 20 == 19:
        return "failed"
    if index % 10 in (3, 7):
        return "image"
    return "short"


def seed_job(index: int, seed: int = 1) -> bytes:
    """Job ``index`` of the query benchmark's corpus (deterministic by index and seed)."""
    job_id = seed_job_id(index)
    kind = seed_kind(index)
    if kind == "typical":
        return build("typical", job_id, seed)
    rng = random.Random(f"{seed}:seed:{index}")  # noqa: S311
    rare = RARE_WORD if index % _RARE_EVERY == 1 else None
    document: dict[str, Any]
    if kind == "failed":
        document = {"status": "failed",
                    "error": {"code": "decode_error", "message": _text(rng, 3, 8)}}
    elif kind == "image":
        document = {"status": "finished",
                    "items": _image_items(rng, 3, tags=3, persons=1, ocr_lines=2, dim=16,
                                          thumbnail_bytes=0, rare_word=rare)}
    else:
        document = {"status": "finished", "result": _video_result(rng, SHORT, rare)}
    return _encode({"job_id": job_id, **document})


def _main() -> None:
    parser = argparse.ArgumentParser(description="print the benchmark payloads' sizes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", metavar="DIR", help="also write each payload to DIR/NAME.json")
    args = parser.parse_args()
    from service import ingest, payloads

    for name in PAYLOAD_NAMES:
        tpl = template(name, args.seed)
        body = tpl.body(f"{tpl.job_prefix}example_0000001")
        prepared = ingest.prepare(payloads.parse(body))
        print(f"{name:<11} {len(body):>11,} bytes  {len(body) / 1e6:8.3f} MB  "
              f"{prepared.row_count + 1:>8,} rows (job row included)  "
              + " ".join(f"{k}={len(v)}" for k, v in prepared.rows.items()))
        if args.write:
            from pathlib import Path

            out = Path(args.write)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.json").write_bytes(body)


if __name__ == "__main__":
    _main()
