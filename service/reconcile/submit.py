"""``results-receiver submit``: send a video or images to the analysis API, the way its
reference describes, and record the job as expected.

The upstream's documented limits are checked here first, each with a clear error: a video is
WebM (its EBML DocType, not its name), at most 100 MB and at most 60 s (read from the file
itself, see :mod:`service.reconcile.webm`); images go as raw base64 (never a data URI). The
webhook registered is ``RECEIVER_PUBLIC_URL`` + ``/webhooks/analysis`` with the first webhook
secret. With ``wait``, the job's summary is read from the database until its result is stored
(or it expires), each change printed.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from service.config import PREFIX, Settings
from service.db import UNAVAILABLE_ERRORS, Database
from service.models import utcnow
from service.reconcile import expected, webm
from service.reconcile.upstream import (
    Unreachable,
    Upstream,
    UpstreamRefused,
    Webhook,
    media_type_of,
)
from service.vocabulary import JOB_STATUSES, JobKind

MAX_VIDEO_BYTES = 100 * 1024 * 1024
MAX_VIDEO_SECONDS = 60.0
Say = Callable[[str], None]


class SubmitError(Exception):
    """A problem the user can fix (a file over a limit, a missing setting, a refusal)."""


@dataclass(frozen=True)
class Media:
    kind: JobKind
    units: float  # seconds of video, or images
    video: bytes | None = None
    images: tuple[tuple[str, str], ...] = ()  # (external_id, raw base64)


def load_video(path: Path) -> Media:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SubmitError(f"cannot read {path}: {exc.strerror}") from None
    if size > MAX_VIDEO_BYTES:
        raise SubmitError(f"{path} is {size / 1024 / 1024:.1f} MB; the upstream takes videos "
                          "of at most 100 MB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SubmitError(f"cannot read {path}: {exc.strerror}") from None
    try:
        seconds = webm.duration_seconds(data)
    except webm.WebmError as exc:
        raise SubmitError(f"{path}: {exc}; the upstream takes WebM videos only") from None
    if seconds > MAX_VIDEO_SECONDS:
        raise SubmitError(f"{path} lasts {seconds:.1f} s; the upstream takes videos of at most "
                          "60 s")
    if seconds <= 0:
        raise SubmitError(f"{path} lasts 0 s: there is nothing to analyse")
    return Media(kind="video", units=seconds, video=data)


def load_images(paths: list[Path]) -> Media:
    images: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SubmitError(f"cannot read {path}: {exc.strerror}") from None
        if not data:
            raise SubmitError(f"{path} is empty")
        if data[:5].lower() == b"data:":
            raise SubmitError(f"{path} holds a data URI, not an image: the upstream takes raw "
                              "base64 without a data-URI prefix; give the image file itself")
        external_id = path.name
        number = 2
        while external_id in seen:
            external_id = f"{path.name}#{number}"
            number += 1
        seen.add(external_id)
        # Standard base64 of the bytes, nothing before it: what the reference asks for.
        images.append((external_id, base64.b64encode(data).decode("ascii")))
    if not images:
        raise SubmitError("give a video file or --images with at least one image")
    return Media(kind="image_batch", units=float(len(images)), images=tuple(images))


def webhook_of(settings: Settings) -> Webhook:
    url = settings.webhook_url
    if url is None:
        raise SubmitError(f"{PREFIX}PUBLIC_URL is not set: the upstream would have nowhere to "
                          "send the result (set it to this service's external base URL, e.g. "
                          "https://results.example.com)")
    secret = settings.webhook_secrets[0] if settings.webhook_secrets else None
    return Webhook(url=url, secret=secret)


@dataclass(frozen=True)
class Submission:
    job_id: str
    kind: JobKind
    expected_at: datetime
    expires_at: datetime | None
    location: str | None


async def submit(settings: Settings, media: Media, *,
                 max_processing_time: int | None) -> Submission:
    """Upload ``media``, then record the job as expected; the job's id and times."""
    if settings.upstream_url is None:
        raise SubmitError(f"{PREFIX}UPSTREAM_URL is not set: where is the analysis API?")
    webhook = webhook_of(settings)
    upstream = Upstream.from_settings(settings)
    try:
        submitted_at = utcnow()
        try:
            if media.video is not None:
                answer = await upstream.submit_video(
                    media.video, max_processing_time=max_processing_time, webhook=webhook)
            else:
                answer = await upstream.submit_images(
                    list(media.images), max_processing_time=max_processing_time,
                    webhook=webhook)
        except Unreachable as exc:
            raise SubmitError(f"the analysis API at {upstream.base_url} did not answer "
                              f"({exc.reason})") from None
        except UpstreamRefused as exc:
            raise SubmitError(exc.message) from None
        latency = await upstream.latency.get(media_type_of(media.kind))
    finally:
        await upstream.close()
    expectation = expected.Expectation(
        job_id=answer.job_id, kind=media.kind, submitted_at=submitted_at,
        media_units=media.units, max_processing_time=max_processing_time or 0)
    timing = expected.Timing(settings.expected_factor, settings.expected_margin_seconds)
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            await conn.run_sync(expected.record, expectation, timing=timing,
                                latency_ms_per_unit=latency, now=utcnow())
    except UNAVAILABLE_ERRORS as exc:
        raise SubmitError(
            f"submitted {answer.job_id} upstream, but could not record it as expected "
            f"({type(exc).__name__}); record it with POST /v1/jobs/expected once the database "
            "is back") from None
    finally:
        await database.dispose()
    return Submission(job_id=answer.job_id, kind=media.kind,
                      expected_at=timing.expected_at(expectation, latency),
                      expires_at=expected.deadline(expectation), location=answer.location)


async def wait(settings: Settings, job_id: str, say: Say, *, every: float = 1.0,
               give_up_after: float | None = None) -> dict[str, Any]:
    """Read the job's summary every ``every`` seconds until its result is stored or it
    expires (or ``give_up_after`` seconds passed), saying each change; the last summary."""
    database = Database.from_settings(settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    last: tuple[Any, ...] | None = None
    try:
        while True:
            summary = await database.run_read(expected.job_summary, job_id, utcnow())
            if summary is None:
                raise SubmitError(f"job {job_id!r} is neither expected nor stored here")
            state = (summary["status"], summary["poll_attempts"])
            if state != last:
                say(describe(summary))
                last = state
            if summary["status"] in (*JOB_STATUSES, "expired"):
                return summary
            if give_up_after is not None and loop.time() - started > give_up_after:
                return summary
            await asyncio.sleep(every)
    finally:
        await database.dispose()


def describe(summary: dict[str, Any]) -> str:
    """One line on a job's progress."""
    status = summary["status"]
    job_id = summary["job_id"]
    if status in JOB_STATUSES:
        return (f"{job_id}: {status}, stored (via {summary['reconciled']}); "
                f"{summary['deliveries']} deliveries")
    expected_at = summary["expected_at"]
    when = expected_at.strftime("%H:%M:%S") if expected_at is not None else "?"
    polls = summary["poll_attempts"]
    tried = f", {polls} poll{'s' if polls != 1 else ''} of the upstream" if polls else ""
    if status == "pending":
        return f"{job_id}: pending, expected by {when} UTC{tried}"
    if status == "overdue":
        return f"{job_id}: overdue since {when} UTC, fetching it from the upstream{tried}"
    return f"{job_id}: expired (past Max-Processing-Time without a result){tried}"
