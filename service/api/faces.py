"""Face search routes: ``POST /v1/faces/search``, ``GET .../persons/{i}/{p}/similar`` and
``GET .../persons/{i}/{p}/thumbnail`` (read scope).

Searches run on this process's in-memory index (:mod:`service.faces`); the hits' details are
then read from the database, so a face erased or deleted a moment ago is never shown even
before the index has caught up. Until the index has loaded, searches answer 503
``index_loading`` (with ``Retry-After``).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from service.api import params
from service.api.auth import authorized_read, require_token
from service.api.jobs import job_id_param
from service.api.persons import _index as person_index_param
from service.faces import source
from service.faces.records import FaceFilter, InvalidVector
from service.faces.searching import Faces
from service.http import ApiError, JSONResponse
from service.vocabulary import JOB_KINDS

DEFAULT_K = 10
MAX_K = 100
MAX_DIMENSION = 4096
MAX_BODY_BYTES = 256 * 1024
_SPARE_HITS = 5  # fetched beyond k, in case some were erased since the index saw them
_FIELDS = frozenset({"embedding", "person", "k", "min_similarity", "allowlisted", "kind",
                     "received_after", "received_before", "exact"})


@dataclass(frozen=True, slots=True)
class SearchRequest:
    embedding: list[float] | None
    person: tuple[str, int, int] | None
    k: int
    min_similarity: float | None
    where: FaceFilter
    exact: bool


def face_sync(request: Request) -> Faces:
    """The face index this process searches (its own, or the face process's), unless it is
    known to be loading; else the 503 that says why not."""
    faces: Faces | None = request.state.faces
    if faces is None:
        raise ApiError(503, "face_index_off", "this process keeps no face index "
                       "(RECEIVER_FACE_INDEX=false); ask a replica that does")
    if not faces.ready:
        raise _loading()
    return faces


def _loading() -> ApiError:
    return ApiError(503, "index_loading", "the face index is loading; retry shortly",
                    headers={"Retry-After": "2"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _index_value(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**9:
        raise params.invalid(name, "must be a whole number from 0 to 999999999")
    return value


def _time(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise params.invalid(name, "must be an ISO 8601 date-time, e.g. 2026-11-22T06:00:00Z")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise params.invalid(name, "must be an ISO 8601 date-time, e.g. "
                             "2026-11-22T06:00:00Z") from None


def _k(value: Any) -> int:
    if value is None:
        return DEFAULT_K
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_K:
        raise params.invalid("k", f"must be a whole number from 1 to {MAX_K}")
    return value


def _similarity(value: Any) -> float | None:
    if value is None:
        return None
    if not _number(value) or not math.isfinite(value) or not -1 <= value <= 1:
        raise params.invalid("min_similarity", "must be a number from -1 to 1")
    return float(value)


def parse_search(body: bytes) -> SearchRequest:
    """The search body, validated: 400 when not JSON, 422 naming the field otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large",
                       f"a search body is at most {MAX_BODY_BYTES} bytes")
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(422, "invalid_parameter", "the body is a JSON object",
                       {"parameter": "body"})
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise params.invalid(unknown[0][:64], "is not a search field",
                             allowed=sorted(_FIELDS))
    embedding, person = document.get("embedding"), document.get("person")
    if (embedding is None) == (person is None):
        raise params.invalid("embedding", "give either embedding or person, not both")
    vector = None
    if embedding is not None:
        if (not isinstance(embedding, list) or not 1 <= len(embedding) <= MAX_DIMENSION
                or not all(_number(v) for v in embedding)):
            raise params.invalid("embedding", f"must be a list of 1 to {MAX_DIMENSION} numbers")
        vector = [float(v) for v in embedding]
    key = None
    if person is not None:
        if not isinstance(person, dict) or set(person) != {"job_id", "item_index",
                                                          "person_index"}:
            raise params.invalid("person", "must be {job_id, item_index, person_index}")
        job_id = person["job_id"]
        if not isinstance(job_id, str) or not 1 <= len(job_id) <= 512 or "\x00" in job_id:
            raise params.invalid("person", "job_id must be 1 to 512 characters")
        key = (job_id, _index_value(person["item_index"], "person"),
               _index_value(person["person_index"], "person"))
    allowlisted, kind, exact = (document.get("allowlisted"), document.get("kind"),
                                document.get("exact", False))
    if allowlisted is not None and not isinstance(allowlisted, bool):
        raise params.invalid("allowlisted", "must be true or false")
    if kind is not None and kind not in JOB_KINDS:
        raise params.invalid("kind", f"must be one of {', '.join(JOB_KINDS)}")
    if not isinstance(exact, bool):
        raise params.invalid("exact", "must be true or false")
    where = FaceFilter(allowlisted=allowlisted, kind=kind,
                       received_after=_time(document.get("received_after"), "received_after"),
                       received_before=_time(document.get("received_before"),
                                             "received_before"))
    return SearchRequest(vector, key, _k(document.get("k")),
                         _similarity(document.get("min_similarity")), where, exact)


async def find_similar(faces: Faces, search: SearchRequest) -> list[dict[str, Any]]:
    """The faces nearest the search's embedding or person, best first, at most ``k``: each
    hit's details as the database has them now (``has_thumbnail`` among them) and its
    ``similarity``. Raises the 404 or 422 of a person that is not there or has no
    embedding. The query API's searches and the explorer's face page."""
    exclude = None
    vector = search.embedding
    if search.person is not None:
        job_id, item_index, person_index = search.person
        found = await faces.database.run_read(source.person, faces.keyring, job_id,
                                              item_index, person_index)
        if found is None:
            raise ApiError(404, "not_found",
                           f"job {job_id!r} has no person {item_index}/{person_index}",
                           {"job_id": job_id, "item_index": item_index,
                            "person_index": person_index})
        if found.embedding is None:
            raise params.invalid("person", "this person has no face embedding (erased, "
                                 "dropped or never sent)")
        exclude, vector = found.key, found.embedding
    assert vector is not None
    name = "embedding" if search.person is None else "person"
    # numpy comes with the first search: a worker that only stores faces never loads it.
    from service.faces.index import normalized

    try:
        query = normalized(vector)
    except InvalidVector as exc:
        raise params.invalid(name, str(exc)) from None
    answer = await faces.search(query, search.k + _SPARE_HITS, where=search.where,
                                min_similarity=search.min_similarity, exclude=exclude,
                                exact=search.exact, dimension_required=search.person is None)
    if answer.state == "loading":
        raise _loading()
    if answer.state == "no_dimension":
        raise params.invalid("embedding", f"no indexed face has {len(query)} dimensions",
                             dimensions=answer.dimensions)
    hits = answer.hits
    details = await faces.database.run_read(source.hit_details, faces.keyring,
                                            [hit.key for hit in hits])
    data = []
    for hit in hits:
        found_hit = details.get(hit.key)
        if found_hit is None:
            continue
        data.append({**found_hit, "similarity": hit.similarity})
        if len(data) == search.k:
            break
    return data


async def _run(request: Request, search: SearchRequest) -> Response:
    faces = face_sync(request)
    root = request.scope.get("root_path", "")
    return JSONResponse({"data": [_hit(found, root)
                                  for found in await find_similar(faces, search)]})


def _hit(details: dict[str, Any], root: str) -> dict[str, Any]:
    hit = dict(details)
    if hit.pop("has_thumbnail"):
        hit["thumbnail_url"] = (f"{root}/v1/jobs/{quote(details['job_id'], safe='')}/persons/"
                                f"{details['item_index']}/{details['person_index']}/thumbnail")
    return hit


async def search_faces(request: Request) -> Response:
    """``POST /v1/faces/search``."""
    await require_token(request, "read")
    return await _run(request, parse_search(await request.body()))


def _path_person(request: Request) -> tuple[str, int, int]:
    job_id = job_id_param(request)
    return (job_id, person_index_param(request, "item_index", job_id),
            person_index_param(request, "person_index", job_id))


async def similar_faces(request: Request) -> Response:
    """``GET /v1/jobs/{job_id}/persons/{item_index}/{person_index}/similar?k&min_similarity``."""
    await require_token(request, "read")
    person = _path_person(request)
    raw_k = params.raw_param(request, "k")
    if raw_k is not None and (not raw_k.isascii() or not raw_k.isdigit() or len(raw_k) > 3):
        raise params.invalid("k", f"must be a whole number from 1 to {MAX_K}", value=raw_k)
    similarity = params.number(request, "min_similarity")
    if similarity is not None and not -1 <= similarity <= 1:
        raise params.invalid("min_similarity", "must be a number from -1 to 1")
    search = SearchRequest(None, person, _k(None if raw_k is None else int(raw_k)),
                           similarity, FaceFilter(), False)
    return await _run(request, search)


_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def sniff(data: bytes) -> str:
    """The image type by its magic number; ``application/octet-stream`` when unknown."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def decode_thumbnail(text: str) -> bytes | None:
    """The bytes of a base64 thumbnail (a ``data:`` URL too); None when it is not base64."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


async def thumbnail(request: Request) -> Response:
    """``GET /v1/jobs/{job_id}/persons/{item_index}/{person_index}/thumbnail``."""
    keyring = request.state.keyring

    def read(conn: Any) -> tuple[bool, str | None]:
        job_id, item_index, person_index = _path_person(request)
        return source.thumbnail(conn, keyring, job_id, item_index, person_index)

    exists, text = await authorized_read(request, "read", read)
    job_id, item_index, person_index = _path_person(request)
    details = {"job_id": job_id, "item_index": item_index, "person_index": person_index}
    if not exists:
        raise ApiError(404, "not_found",
                       f"job {job_id!r} has no person {item_index}/{person_index}", details)
    data = None if text is None else decode_thumbnail(text)
    if data is None:
        raise ApiError(404, "not_found", f"no thumbnail is stored for person {item_index}/"
                       f"{person_index} of job {job_id!r}", details)
    return Response(data, media_type=sniff(data), headers={
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"})
