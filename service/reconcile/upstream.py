"""The analysis API's client: submissions, a job's status by id, and the latency per media unit
(cached). Paths come from the settings' templates (``RECEIVER_UPSTREAM_*_PATH``), relative to
``RECEIVER_UPSTREAM_URL``; every request carries ``Authorization: Bearer`` with
``RECEIVER_UPSTREAM_TOKEN`` when one is set.

What the upstream answers is returned as it is (:class:`Answer`); judging it is
:mod:`service.reconcile.validate`'s job. A request that gets no answer at all (refused,
timed out, reset) raises :class:`Unreachable`. Nothing here logs a token, a secret or a body.

Submissions, as the reference describes them: a video is the WebM file as the binary body
(``Content-Type: video/webm``) with the webhook as the query parameters ``webhook.url`` and
``webhook.secret``; images are JSON ``{"images": [{"external_id", "data_base64"}],
"webhook": {"url", "secret"}}``. Both take the ``Max-Processing-Time`` header and answer 202
with a ``Location`` and ``{"job_id"}``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

import msgspec
import structlog

from service.config import Settings, UpstreamPaths

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("service.reconcile.upstream")

MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""An answer larger than this is cut off and judged unusable."""
LATENCY_REFRESH_SECONDS = 300.0
"""How long a latency read from the upstream is used before it is asked again."""
LATENCY_RETRY_SECONDS = 30.0
"""After a failed latency request, how long the cached (or default) value is used before the
next try."""
LATENCY_TIMEOUT_SECONDS = 5.0


class Unreachable(Exception):
    """The upstream gave no answer (connection refused or reset, timeout)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamRefused(Exception):
    """The upstream answered a submission or a latency request with something unusable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer of the upstream: status, headers, and the body (at most
    :data:`MAX_ANSWER_BYTES`; ``truncated`` when it was longer)."""

    status: int
    headers: httpx.Headers
    body: bytes
    truncated: bool = False

    @property
    def content_type(self) -> str:
        value: str = self.headers.get("content-type", "")
        return value.split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Webhook:
    """The callback registered with a submission."""

    url: str
    secret: str | None

    def __repr__(self) -> str:  # never the secret
        return f"Webhook(url={self.url!r}, secret={'***' if self.secret else None})"


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    location: str | None


def media_type_of(kind: str) -> str:
    """The upstream's media type of a job kind (``video``, ``image_batch``)."""
    return "video" if kind == "video" else "image"


_REASONS = {
    "ConnectError": "connection_refused", "ConnectTimeout": "connect_timeout",
    "ReadTimeout": "read_timeout", "WriteTimeout": "write_timeout",
    "PoolTimeout": "pool_timeout", "RemoteProtocolError": "protocol_error",
    "ReadError": "read_error", "WriteError": "write_error"}
"""httpx's error classes (by name: httpx is imported only once an upstream is configured)."""


def _reason(exc: httpx.HTTPError) -> str:
    name = type(exc).__name__
    return _REASONS.get(name, name)


class Upstream:
    """One connection pool to the analysis API (close it with :meth:`close`)."""

    def __init__(self, base_url: str, *, token: str | None, paths: UpstreamPaths,
                 timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        import httpx

        headers = {"User-Agent": "results-receiver"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url
        self.paths = paths
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, follow_redirects=False,
            transport=transport, limits=httpx.Limits(max_connections=16,
                                                     max_keepalive_connections=8))
        self.latency = LatencyCache(self.fetch_latency)

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstream:
        if settings.upstream_url is None:
            raise ValueError("no upstream configured (RECEIVER_UPSTREAM_URL)")
        return cls(settings.upstream_url, token=settings.upstream_token,
                   paths=settings.upstream_paths, timeout=settings.upstream_timeout_seconds)

    async def close(self) -> None:
        await self._client.aclose()

    def status_path(self, kind: str, job_id: str) -> str:
        template = self.paths.video_status if kind == "video" else self.paths.image_status
        return template.format(job_id=quote(job_id, safe=""))

    def absolute(self, location: str) -> str:
        """A ``Location`` the upstream answered, as an absolute URL."""
        return urljoin(self.base_url + "/", location)

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        """One request; the answer whatever its status, or :class:`Unreachable`."""
        import httpx

        try:
            async with self._client.stream(method, path, **kwargs) as response:
                chunks: list[bytes] = []
                size = 0
                truncated = False
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        truncated = True
                        break
                    chunks.append(chunk)
                return Answer(response.status_code, response.headers, b"".join(chunks),
                              truncated)
        except httpx.HTTPError as exc:
            raise Unreachable(_reason(exc)) from None

    async def job_status(self, kind: str, job_id: str) -> Answer:
        return await self.request("GET", self.status_path(kind, job_id))

    async def fetch_latency(self, media_type: str) -> float:
        """The upstream's current latency per media unit in milliseconds."""
        answer = await self.request("GET", self.paths.latency.format(
            media_type=quote(media_type, safe="")))
        if answer.status != 200:
            raise UpstreamRefused(f"the latency endpoint answered HTTP {answer.status}",
                                  answer.status)
        try:
            document = msgspec.json.decode(answer.body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise UpstreamRefused("the latency endpoint did not answer JSON") from None
        value = document.get("latency_ms_per_unit") if isinstance(document, dict) else None
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not math.isfinite(value) or value < 0):
            raise UpstreamRefused("the latency endpoint's latency_ms_per_unit is not a "
                                  "number of at least 0")
        answered = document.get("media_type")
        if answered is not None and answered != media_type:
            raise UpstreamRefused(f"asked the latency of {media_type}, got {answered!r}")
        return float(value)

    async def submit_video(self, body: bytes, *, max_processing_time: int | None,
                           webhook: Webhook | None) -> Submitted:
        params: dict[str, str] = {}
        if webhook is not None:
            params["webhook.url"] = webhook.url
            if webhook.secret:
                params["webhook.secret"] = webhook.secret
        headers = {"Content-Type": "video/webm"}
        if max_processing_time is not None:
            headers["Max-Processing-Time"] = str(max_processing_time)
        answer = await self.request("POST", self.paths.video, content=body, params=params,
                                    headers=headers)
        return self._submitted(answer)

    async def submit_images(self, images: list[tuple[str, str]], *,
                            max_processing_time: int | None,
                            webhook: Webhook | None) -> Submitted:
        document: dict[str, Any] = {"images": [
            {"external_id": external_id, "data_base64": data} for external_id, data in images]}
        if webhook is not None:
            document["webhook"] = {"url": webhook.url}
            if webhook.secret:
                document["webhook"]["secret"] = webhook.secret
        headers = {"Content-Type": "application/json"}
        if max_processing_time is not None:
            headers["Max-Processing-Time"] = str(max_processing_time)
        answer = await self.request("POST", self.paths.image,
                                    content=msgspec.json.encode(document), headers=headers)
        return self._submitted(answer)

    def _submitted(self, answer: Answer) -> Submitted:
        if answer.status not in (200, 201, 202):
            detail = ""
            if answer.content_type == "application/json" and len(answer.body) < 4096:
                detail = ": " + answer.body.decode("utf-8", "replace")
            raise UpstreamRefused(f"the upstream refused the submission with HTTP "
                                  f"{answer.status}{detail}", answer.status)
        location = answer.headers.get("location")
        job_id: Any = None
        try:
            document = msgspec.json.decode(answer.body) if answer.body else None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            document = None
        if isinstance(document, dict):
            job_id = document.get("job_id")
        if not isinstance(job_id, str) and location:
            job_id = location.rstrip("/").rsplit("/", 1)[-1]
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 512 or "\x00" in job_id:
            raise UpstreamRefused("the upstream accepted the submission but named no job_id")
        return Submitted(job_id, self.absolute(location) if location else None)


class LatencyCache:
    """The upstream's latency per unit by media type, asked again every
    :data:`LATENCY_REFRESH_SECONDS`; while the upstream cannot tell, the last value it told
    (or None, never told) is used, and asked again after :data:`LATENCY_RETRY_SECONDS`."""

    def __init__(self, fetch: Callable[[str], Awaitable[float]], *,
                 refresh_seconds: float = LATENCY_REFRESH_SECONDS,
                 retry_seconds: float = LATENCY_RETRY_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._refresh = refresh_seconds
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._values: dict[str, float] = {}
        self._next_fetch: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def get(self, media_type: str) -> float | None:
        if self._monotonic() < self._next_fetch.get(media_type, -math.inf):
            return self._values.get(media_type)
        async with self._lock:
            now = self._monotonic()
            if now < self._next_fetch.get(media_type, -math.inf):  # fetched while we waited
                return self._values.get(media_type)
            try:
                value = await asyncio.wait_for(self._fetch(media_type), LATENCY_TIMEOUT_SECONDS)
            except (Unreachable, UpstreamRefused, TimeoutError) as exc:
                log.warning("reconcile.latency_unavailable", media_type=media_type,
                            reason=getattr(exc, "reason", None) or str(exc) or "timeout",
                            cached=self._values.get(media_type))
                self._next_fetch[media_type] = now + self._retry
                return self._values.get(media_type)
            self._values[media_type] = value
            self._next_fetch[media_type] = now + self._refresh
            return value
