"""The upstream's result payloads: parsed and validated in one pass with msgspec.

Shapes follow the analysis API's reference: a video result (``result``), an image batch
(``items``) or a failure (``status: failed`` with an optional ``error`` string or object).
Optional fields may be absent or null; unknown fields are ignored here (the raw delivery keeps
them). Numbers are finite doubles: msgspec refuses NaN/Infinity literals and out-of-range values.
Arrays of numbers (a face embedding, the frame activity series) are packed as they are decoded
(:class:`service.vectors.Doubles`), one array at a time: the parsed document never holds a
float object per value.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Annotated, Any, Literal

import msgspec

from service.vectors import Doubles
from service.vocabulary import JobKind, JobStatus

# Text columns must hold any string a database can store: PostgreSQL refuses U+0000.
Text = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*$")]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=r"^[^\x00]*$")]
# A plain str: msgspec 0.19-0.22 crash at exit on a union of a pattern-constrained str and
# a dict. The error is stored JSON-encoded, so a NUL in it is escaped and harmless.
Error = str | dict[str, Any]


class _Model(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """Base: fields left at None are omitted when re-encoded, like the upstream's nulls."""


class TimeSegment(_Model):
    start_seconds: float | None = None
    end_seconds: float | None = None


class Scene(_Model):
    start_seconds: float | None = None
    end_seconds: float | None = None


class Section(_Model):
    section_tag: Text | None = None
    time_segments: list[TimeSegment] | None = None
    thumbnail_timestamp: float | None = None
    confidence: float | None = None
    is_critical: bool | None = None
    relative_activity: float | None = None


class OcrResult(_Model):
    language_code: Text | None = None
    full_text: Text | None = None
    time_segment: TimeSegment | None = None


class Person(_Model):
    age: float | None = None
    gender: Text | None = None
    face_embedding: Doubles | None = None
    face_thumbnail: Text | None = None
    allowlisted: bool | None = None
    relative_prominence: float | None = None


class PersonScene(_Model):
    time_segment: TimeSegment | None = None
    person_ids: list[Person] | None = None


class VideoResult(_Model):
    raw_scenes: list[Scene] | None = None
    frame_activity_diffs: Doubles | None = None
    sections: list[Section] | None = None
    ocr_results: list[OcrResult] | None = None
    person_constellation_scenes: list[PersonScene] | None = None


class Tag(_Model):
    tag: Text | None = None
    probability: float | None = None
    is_critical: bool | None = None


class ImageResult(_Model):
    tags: list[Tag] | None = None
    person_ids: list[Person] | None = None
    ocr_results: list[OcrResult] | None = None


class ImageItem(_Model):
    external_id: Identifier
    result: ImageResult | None = None
    status: Text | None = None
    error: Error | None = None


class Payload(_Model):
    job_id: Identifier
    status: JobStatus
    result: VideoResult | None = None
    items: list[ImageItem] | None = None
    error: Error | None = None




class PayloadError(Exception):
    """The body is not JSON (``invalid_json``) or not a result payload (``invalid_payload``)."""

    def __init__(self, code: Literal["invalid_json", "invalid_payload"], message: str,
                 path: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


_NUMBERS = list[float]


def _decode_doubles(kind: type, value: Any) -> Any:
    """msgspec's hook for :class:`Doubles`: ``value`` is the JSON array just decoded; it is
    checked as ``list[float]`` would be and packed. A bad element's place inside the array
    goes into the message (" - at `[i]`"), which :func:`_split_path` joins to the path msgspec
    adds."""
    if kind is not Doubles:
        raise NotImplementedError(kind)
    try:
        return Doubles.of(msgspec.convert(value, _NUMBERS))
    except msgspec.ValidationError as exc:
        problem, path = _split_path(str(exc))
        raise ValueError(problem + (f" - at `{path[1:]}`" if path != "$" else "")) from None


def _encode_doubles(value: Any) -> Any:
    if isinstance(value, Doubles):
        return value.tolist()
    raise NotImplementedError(type(value))


_decoder = msgspec.json.Decoder(Payload, dec_hook=_decode_doubles)
_generic = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
# Canonical form for content hashes: object keys sorted, so key order never matters; packed
# arrays re-encoded as the numbers they hold.
_canonical_encoder = msgspec.json.Encoder(order="deterministic", enc_hook=_encode_doubles)


def parse(body: bytes) -> Payload:
    """Decode and validate ``body``; every failure is a :class:`PayloadError`.

    The typed decoder skips unknown fields without looking inside them and stops at the first
    shape error, so invalid UTF-8 is checked over the whole body first, and a shape error is
    reported only once the body is known to be JSON at all.
    """
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError("invalid_json", f"not valid UTF-8 at byte {exc.start}") from None
    try:
        payload = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        _require_json(body)
        message, path = _split_path(str(exc))
        raise PayloadError("invalid_payload", message, path) from None
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from None
    except UnicodeDecodeError:
        raise PayloadError("invalid_json", _NOT_UNICODE) from None
    except RecursionError:
        raise _too_deep() from None
    if payload.result is not None and payload.items is not None:
        raise PayloadError(
            "invalid_payload", "a payload carries either result (video) or items (image batch), "
            "not both", "$.items")
    return payload


def _require_json(body: bytes) -> None:
    try:
        _generic.decode(body)
    except msgspec.ValidationError:
        return  # valid JSON syntax holding a number no double can represent
    except msgspec.DecodeError as exc:
        raise _not_json(body, exc) from None
    except RecursionError:
        raise _too_deep() from None


# msgspec's "JSON is malformed: <problem> (byte N)", and its problems in plainer words.
_MALFORMED = re.compile(r"JSON is malformed: (?P<problem>.+) \(byte (?P<byte>\d+)\)")
_PROBLEMS = {
    "invalid character": "unexpected character",
    "trailing characters": "unexpected text after the end of the document",
}
_NOT_UNICODE = "not valid UTF-8 text"
_BOM = b"\xef\xbb\xbf"


def _not_json(body: bytes, exc: msgspec.DecodeError) -> PayloadError:
    """A decode error in the user's terms: what is wrong with the body, and where."""
    if not body:
        return PayloadError("invalid_json", "the body is empty")
    if not body.strip():
        return PayloadError("invalid_json", "the body holds only whitespace, no JSON document")
    if body.startswith(_BOM):
        return PayloadError("invalid_json", "not JSON: the body starts with a byte order mark "
                            "(send UTF-8 without a BOM)")
    text = str(exc)
    if "truncated" in text:
        return PayloadError("invalid_json",
                            f"not JSON: the document ends early at byte {len(body)}")
    found = _MALFORMED.fullmatch(text)
    if found is None:
        return PayloadError("invalid_json", f"not JSON: {text}")
    problem = _PROBLEMS.get(found["problem"], found["problem"])
    return PayloadError("invalid_json", f"not JSON: {problem} at byte {found['byte']}")


def _too_deep() -> PayloadError:
    """Nesting beyond what the decoder's recursion allows from where it was called."""
    depth = 0
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    levels = max(sys.getrecursionlimit() - depth, 1)
    return PayloadError("invalid_json", f"the JSON is nested deeper than {levels} levels")


def job_id_hint(body: bytes) -> str | None:
    """The ``job_id`` of a body that failed validation, when it can be read at all."""
    try:
        document = _generic.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(document, dict):
        job_id = document.get("job_id")
        if isinstance(job_id, str) and 0 < len(job_id) <= 512 and "\x00" not in job_id:
            return job_id
    return None


def kind_of(payload: Payload) -> JobKind | None:
    """``video`` or ``image_batch`` from the payload's shape, else from the job id's prefix.

    A failure may carry neither ``result`` nor ``items``; the upstream names its jobs
    ``video_...`` and ``image_batch_...``, which still tells the kind.
    """
    if payload.result is not None:
        return "video"
    if payload.items is not None:
        return "image_batch"
    if payload.job_id.startswith("video_"):
        return "video"
    if payload.job_id.startswith("image_batch_"):
        return "image_batch"
    return None


def canonical(payload: Payload) -> bytes:
    """The validated payload re-encoded: known fields only, nulls dropped, stable order."""
    return _canonical_encoder.encode(payload)


def content_hash(payload: Payload) -> str:
    """Two deliveries with the same content hash carry the same result: the SHA-256 of
    :func:`canonical`, fed in pieces (:func:`canonical_pieces`) so that a large payload's
    canonical form never exists whole beside its body."""
    hasher = hashlib.sha256()
    for piece in canonical_pieces(payload):
        hasher.update(piece)
    return hasher.hexdigest()


PIECE_ITEMS = 32
"""Elements of a long list encoded at once (32 scenes of five faces: about 2 MB)."""


def canonical_pieces(value: msgspec.Struct) -> Iterator[bytes | memoryview]:
    """:func:`canonical` of ``value`` in pieces whose concatenation is exactly it.

    A struct is encoded with each of its struct fields and long list fields stood in for by a
    random marker; the output is cut at the markers, and in their places come the struct's
    own pieces (recursively) and the list encoded :data:`PIECE_ITEMS` elements at a time
    (``[a,b]`` and ``[c]`` make ``[a,b,c]``: the encoding has no whitespace)."""
    parts: dict[str, Any] = {}
    for name in value.__struct_fields__:
        field = getattr(value, name)
        if isinstance(field, msgspec.Struct) or (
                isinstance(field, list) and len(field) > PIECE_ITEMS):
            parts[name] = field
    if not parts:
        yield _canonical_encoder.encode(value)
        return
    markers = {name: secrets.token_hex(16) for name in parts}
    outline = _canonical_encoder.encode(msgspec.structs.replace(value, **markers))
    view = memoryview(outline)
    places = sorted((outline.index(b'"%s"' % markers[name].encode("ascii")), name)
                    for name in parts)
    start = 0
    for at, name in places:
        yield view[start:at]
        field = parts[name]
        if isinstance(field, msgspec.Struct):
            yield from canonical_pieces(field)
        else:
            yield from _list_pieces(field)
        start = at + len(markers[name]) + 2
    yield view[start:]


def _list_pieces(values: list[Any]) -> Iterator[bytes | memoryview]:
    yield b"["
    for start in range(0, len(values), PIECE_ITEMS):
        if start:
            yield b","
        yield memoryview(_canonical_encoder.encode(values[start:start + PIECE_ITEMS]))[1:-1]
    yield b"]"


def encode_error(error: Error | None) -> str | None:
    return None if error is None else _encoder.encode(error).decode("utf-8")


def decode_error(stored: str | None) -> Error | None:
    if stored is None:
        return None
    value: Error = msgspec.json.decode(stored)
    return value


_MISSING = re.compile(r"^Object missing required field `([^`]*)`$")


def _split_path(message: str) -> tuple[str, str]:
    """msgspec's "<problem> - at `$.a[0].b`" as (problem, path); missing fields get their
    own name appended, so the path always names the offending field. A place inside a packed
    array (":func:`_decode_doubles`'s " - at `[i]`") is joined to the array's path."""
    head, separator, path = message.rpartition(" - at `")
    if separator and path.endswith("`"):
        message, path = head, path[:-1]
        inner, separator, place = message.rpartition(" - at `[")
        if separator and place.endswith("]`"):
            message, path = inner, f"{path}[{place[:-1]}"
    else:
        path = "$"
    missing = _MISSING.match(message)
    if missing:
        path = f"{path}.{missing.group(1)}"
    return message, path
