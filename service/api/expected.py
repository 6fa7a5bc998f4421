"""``POST /v1/jobs/expected`` (admin): a program that submits to the upstream on its own
records the job as expected, so that its result is fetched if its webhook never comes.

The body is ``{"job_id", "kind", "submitted_at", "media_seconds" | "image_count",
"max_processing_time"}``: ``media_seconds`` for a video, ``image_count`` for an image batch;
``submitted_at`` defaults to now, ``max_processing_time`` (seconds, 0 = no limit) to 0. A bad
field is a 422 naming it. Idempotent per job id: the first expectation stays (201 when it was
recorded now, 200 when it already was), and a job whose result is already stored keeps it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from service.api import jobs, params
from service.api.auth import require_token
from service.config import Settings
from service.db import UNAVAILABLE_ERRORS, Database
from service.http import ApiError, JSONResponse, unavailable
from service.models import utcnow
from service.reconcile import expected
from service.reconcile.upstream import Upstream, media_type_of
from service.vocabulary import JOB_KINDS, JobKind
from service.webhooks import read_body

MAX_BODY_BYTES = 16 * 1024
MAX_MEDIA_SECONDS = 7 * 24 * 3600
MAX_IMAGE_COUNT = 1_000_000
MAX_PROCESSING_TIME = 2**31 - 1
FIELDS = ("job_id", "kind", "submitted_at", "media_seconds", "image_count",
          "max_processing_time")


def parse_expectation(body: bytes, now: datetime) -> expected.Expectation:
    """The body, validated: 400 when it is not JSON, 422 naming the field otherwise."""
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(422, "invalid_parameter", "the body is a JSON object",
                       {"parameter": "body"})
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise params.invalid(str(unknown[0])[:64], "is not a field of an expected job",
                             allowed=list(FIELDS))
    job_id = document.get("job_id")
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= 512 or "\x00" in job_id:
        raise params.invalid("job_id", "is required: the upstream's job id, 1 to 512 "
                             "characters without NUL")
    kind = document.get("kind")
    if kind not in JOB_KINDS:
        raise params.invalid("kind", f"is required, one of {', '.join(JOB_KINDS)}",
                             allowed=list(JOB_KINDS))
    job_kind: JobKind = "video" if kind == "video" else "image_batch"
    units = _units(document, job_kind)
    mpt = document.get("max_processing_time", 0)
    if mpt is None:
        mpt = 0
    if not isinstance(mpt, int) or isinstance(mpt, bool) or not 0 <= mpt <= MAX_PROCESSING_TIME:
        raise params.invalid("max_processing_time", "must be a whole number of seconds, at "
                             "least 0 (0: no limit)")
    return expected.Expectation(job_id=job_id, kind=job_kind,
                                submitted_at=_submitted_at(document.get("submitted_at"), now),
                                media_units=units, max_processing_time=mpt)


def _units(document: dict[str, Any], kind: JobKind) -> float:
    seconds, count = document.get("media_seconds"), document.get("image_count")
    if kind == "video":
        if count is not None:
            raise params.invalid("image_count", "is for an image_batch; a video has "
                                 "media_seconds")
        if (not isinstance(seconds, int | float) or isinstance(seconds, bool)
                or not math.isfinite(seconds) or not 0 < seconds <= MAX_MEDIA_SECONDS):
            raise params.invalid("media_seconds", "is required for a video: its duration in "
                                 f"seconds, above 0 and at most {MAX_MEDIA_SECONDS}")
        return float(seconds)
    if seconds is not None:
        raise params.invalid("media_seconds", "is for a video; an image_batch has image_count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_IMAGE_COUNT:
        raise params.invalid("image_count", "is required for an image_batch: a whole number "
                             f"from 1 to {MAX_IMAGE_COUNT}")
    return float(count)


def _submitted_at(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    message = "must be an ISO 8601 date-time, e.g. 2026-11-22T06:00:00Z"
    if not isinstance(value, str) or len(value) > 64:
        raise params.invalid("submitted_at", message)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise params.invalid("submitted_at", message) from None


async def record_expected(request: Request) -> Response:
    await require_token(request, "admin")
    body = await read_body(request, MAX_BODY_BYTES)
    now = utcnow()
    expectation = parse_expectation(body, now)
    settings: Settings = request.state.settings
    upstream: Upstream | None = request.state.upstream
    latency = (None if upstream is None
               else await upstream.latency.get(media_type_of(expectation.kind)))
    timing = expected.Timing(settings.expected_factor, settings.expected_margin_seconds)
    database: Database = request.state.database
    try:
        async with database.write() as conn:
            created = await conn.run_sync(expected.record, expectation, timing=timing,
                                          latency_ms_per_unit=latency, now=now)
    except UNAVAILABLE_ERRORS:
        raise unavailable() from None
    summary = await database.run_read(expected.job_summary, expectation.job_id, utcnow())
    if summary is None:  # deleted in between
        raise jobs.not_found(expectation.job_id)
    summary["links"] = jobs.job_links(request, expectation.job_id)
    return JSONResponse(summary, status_code=201 if created else 200)


async def jobs_expected(request: Request) -> Response:
    """``/v1/jobs/expected``: POST records an expected job. The path is also
    ``/v1/jobs/{job_id}`` of the job whose id is ``expected``: GET and DELETE are that job's,
    so that a 405 here lists every method the path serves."""
    if request.method == "POST":
        return await record_expected(request)
    request.scope["path_params"] = {**request.path_params, "job_id": "expected"}
    return await jobs.job(request)
