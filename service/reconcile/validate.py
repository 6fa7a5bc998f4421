"""What the upstream answered to a poll of one job, judged before anything is stored.

Only a ``200`` whose body is a JSON object naming the polled job with a terminal status
(``finished`` or ``failed``) goes on to the ingest path (which validates the result's shape as
for a webhook). Anything else is a verdict without a result: not ready yet, unknown job,
throttled (429), a server error, or a bad answer (an HTML error page, malformed JSON, a result
for another job, an error status) with the reason, for the log and the poll's outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import msgspec

from service.reconcile.upstream import Answer
from service.vocabulary import JOB_STATUSES

Kind = Literal["terminal", "not_ready", "not_found", "throttled", "server_error", "bad_answer"]


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    reason: str | None = None  # why a bad answer is bad; the status of one not ready
    retry_after: float | None = None  # seconds, when the answer said (Retry-After)


_decoder = msgspec.json.Decoder()


def judge(answer: Answer, job_id: str, *, now: datetime | None = None) -> Verdict:
    """The verdict on ``answer`` to the status request of ``job_id``."""
    retry_after = parse_retry_after(answer.headers.get("retry-after"), now=now)
    if answer.status == 429:
        return Verdict("throttled", retry_after=retry_after)
    if answer.status >= 500:
        return Verdict("server_error", reason=f"http_{answer.status}", retry_after=retry_after)
    if answer.status == 404:
        return Verdict("not_found")
    if answer.status != 200:
        return Verdict("bad_answer", reason=f"http_{answer.status}")
    if answer.truncated:
        return Verdict("bad_answer", reason="too_large")
    try:
        document = _decoder.decode(answer.body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        looks_html = answer.content_type == "text/html" or answer.body.lstrip()[:1] == b"<"
        return Verdict("bad_answer", reason="html_page" if looks_html else "malformed_json")
    if not isinstance(document, dict):
        return Verdict("bad_answer", reason="not_an_object")
    if document.get("job_id") != job_id:
        return Verdict("bad_answer", reason="other_job")
    status = document.get("status")
    if not isinstance(status, str):
        return Verdict("bad_answer", reason="no_status")
    if status not in JOB_STATUSES:
        return Verdict("not_ready", reason=status[:32])
    return Verdict("terminal")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date; None when absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
