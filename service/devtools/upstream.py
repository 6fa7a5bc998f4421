"""An upstream simulator: the analysis API's endpoints as the reference describes them, as a
real HTTP server (Starlette under uvicorn), for demos (``results-receiver dev upstream``) and
for the reconciliation tests.

* ``POST /video`` (the WebM file as the body; ``webhook.url``/``webhook.secret`` query
  parameters) and ``POST /image`` (JSON ``{"images": [{"external_id", "data_base64"}],
  "webhook": {"url", "secret"}}``), both with an optional ``Max-Processing-Time`` header:
  202, a ``Location`` and ``{"job_id"}``. A video must be WebM, at most 100 MB and 60 s; an
  image's data raw base64 (no data-URI prefix).
* ``GET /video/{job_id}``, ``GET /image/{job_id}``: ``{"job_id", "status": "processing"}``
  until the job is done, then its result, byte for byte the body of its webhook.
* ``GET /latency?media_type=video|image``: the latency per media unit it processes at.

A job takes units x latency x a random 0.5-1.0 to process; then its result is POSTed to the
registered webhook URL, signed (``X-Webhook-Signature``: HMAC-SHA256 hex of the raw body),
retried with exponential backoff while the receiver does not answer 2xx, a bounded number of
times. Faults, as fractions of jobs or of polls (options, or ``PATCH /_sim/faults`` at run
time): ``drop`` a job's webhook, ``duplicate`` it, ``corrupt`` its signature, ``delay`` every
webhook, ``reorder`` (a random extra delay, so webhooks leave in another order than jobs
finish), ``expire`` jobs (they never finish), answer polls with a 5xx (``poll_errors``) or a
429 with ``Retry-After`` (``poll_throttle``). ``POST /_sim/unreachable {"seconds"}`` closes
the listening port for a while (connections refused, open ones cut), ``POST
/_sim/jobs/{job_id}/answers {"answers": [...]}`` makes the next polls of a job answer
``html``, ``malformed_json``, ``other_job`` or ``pending``. ``GET /_sim/stats`` tells what
happened (every poll's time included), ``GET /_sim/jobs/{job_id}/result`` a job's result.

The port is served by a small TCP front that forwards to uvicorn on an internal port: that is
what lets the simulator really be unreachable and come back with every job it holds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import random
import secrets
import socket
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import quote

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.reconcile import webm

log = structlog.get_logger("service.devtools.upstream")

MAX_VIDEO_BYTES = 100 * 1024 * 1024
MAX_VIDEO_SECONDS = 60.0
BAD_ANSWERS = ("html", "malformed_json", "other_job", "pending")


@dataclass
class Faults:
    """What goes wrong, as fractions (0..1) of jobs or polls, and seconds."""

    drop: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    expire: float = 0.0
    delay: float = 0.0  # seconds added to every webhook
    reorder: float = 0.0  # up to this many seconds more, at random, per webhook
    poll_errors: float = 0.0
    poll_throttle: float = 0.0
    retry_after: float = 1.0  # seconds, in the 429s' Retry-After

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(names))}")
            if (not isinstance(value, int | float) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a number of at least 0")
            if name not in ("delay", "reorder", "retry_after") and value > 1:
                raise ValueError(f"{name} is a fraction from 0 to 1")
            setattr(self, name, float(value))


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 8100
    token: str | None = None  # required as Bearer when set
    video_latency_ms: float = 500.0  # per second of video
    image_latency_ms: float = 120.0  # per image
    webhook_attempts: int = 5
    webhook_backoff: float = 0.5  # seconds before the first retry, doubling
    seed: int | None = None
    faults: Faults = field(default_factory=Faults)


@dataclass
class Job:
    job_id: str
    kind: str  # video | image_batch
    units: float
    ready_at: float  # monotonic
    deadline: float | None  # monotonic; None: no limit
    result: bytes
    webhook_url: str | None
    webhook_secret: str | None
    expire: bool = False
    answers: deque[str] = field(default_factory=deque)

    def done(self, now: float) -> bool:
        return not self.expire and now >= self.ready_at


@dataclass
class Stats:
    submissions: int = 0
    polls: list[float] = field(default_factory=list)  # wall-clock time of every status request
    poll_answers: Counter[str] = field(default_factory=Counter)
    webhooks: Counter[str] = field(default_factory=Counter)
    latency_requests: int = 0


def _unit_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _person(rng: random.Random) -> dict[str, Any]:
    return {"age": round(rng.uniform(3, 80), 1),
            "gender": rng.choice(["female", "male", "unidentified"]),
            "face_embedding": [round(rng.uniform(-1, 1), 6) for _ in range(8)],
            "face_thumbnail": base64.b64encode(rng.randbytes(24)).decode("ascii"),
            "allowlisted": rng.random() < 0.2,
            "relative_prominence": round(rng.random(), 4)}


def _segment(start: float, end: float) -> dict[str, float]:
    return {"start_seconds": start, "end_seconds": end}


def video_result(job_id: str, seconds: float, rng: random.Random) -> dict[str, Any]:
    """A finished video result in the reference's shape (no nulls, no unknown fields)."""
    cuts = sorted({round(rng.uniform(0, seconds), 3) for _ in range(rng.randint(1, 4))})
    bounds = [0.0, *[c for c in cuts if 0 < c < seconds], round(seconds, 3)]
    scenes = [_segment(a, b) for a, b in itertools.pairwise(bounds)]
    return {"job_id": job_id, "status": "finished", "result": {
        "raw_scenes": scenes,
        "frame_activity_diffs": [round(rng.random(), 5) for _ in range(rng.randint(3, 30))],
        "sections": [{"section_tag": rng.choice(["intro", "demo", "outro", "talk"]),
                      "time_segments": [scene], "thumbnail_timestamp": scene["start_seconds"],
                      "confidence": round(rng.random(), 3), "is_critical": rng.random() < 0.1,
                      "relative_activity": round(rng.random(), 3)} for scene in scenes],
        "ocr_results": [{"language_code": "en", "full_text": f"Sign {rng.randint(1, 999)}",
                         "time_segment": scenes[0]}],
        "person_constellation_scenes": [{"time_segment": scene,
                                         "person_ids": [_person(rng)
                                                        for _ in range(rng.randint(0, 2))]}
                                        for scene in scenes],
    }}


def image_result(job_id: str, external_ids: list[str], rng: random.Random) -> dict[str, Any]:
    return {"job_id": job_id, "status": "finished", "items": [
        {"external_id": external_id, "result": {
            "tags": [{"tag": rng.choice(["cat", "dog", "park", "indoor"]),
                      "probability": round(rng.random(), 3), "is_critical": False}],
            "person_ids": [_person(rng) for _ in range(rng.randint(0, 1))],
            "ocr_results": [{"language_code": "en", "full_text": f"Label {rng.randint(1, 99)}"}],
        }} for external_id in external_ids]}


class Simulator:
    """The simulator's state and its ASGI app; :meth:`serve` runs it (front + uvicorn)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.faults = options.faults
        self.rng = random.Random(options.seed)  # noqa: S311 (simulated faults, not secrets)
        self.jobs: dict[str, Job] = {}
        self.stats = Stats()
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self.front: Front | None = None
        self.app = Starlette(routes=[
            Route("/video", self.submit_video, methods=["POST"]),
            Route("/image", self.submit_images, methods=["POST"]),
            Route("/video/{job_id:path}", self.status, methods=["GET"]),
            Route("/image/{job_id:path}", self.status, methods=["GET"]),
            Route("/latency", self.latency, methods=["GET"]),
            Route("/_sim/faults", self.control_faults, methods=["GET", "PATCH"]),
            Route("/_sim/unreachable", self.control_unreachable, methods=["POST"]),
            Route("/_sim/stats", self.control_stats, methods=["GET"]),
            Route("/_sim/jobs/{job_id:path}/answers", self.control_answers, methods=["POST"]),
            Route("/_sim/jobs/{job_id:path}/expire", self.control_expire, methods=["POST"]),
            Route("/_sim/jobs/{job_id:path}/result", self.control_result, methods=["GET"]),
        ])

    # --- the analysis API ------------------------------------------------------------------

    def _refuse(self, request: Request) -> Response | None:
        if self.options.token is None:
            return None
        expected = f"Bearer {self.options.token}"
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return None

    def _admit(self, request: Request) -> int | Response:
        """The submission's Max-Processing-Time, or the answer refusing it (the token, then
        the header)."""
        refused = self._refuse(request)
        if refused is not None:
            return refused
        raw = request.headers.get("max-processing-time", "0").strip()
        if not raw.isdigit():
            return JSONResponse({"error": "Max-Processing-Time must be an integer >= 0"},
                                status_code=400)
        return int(raw)

    def _new_job(self, kind: str, units: float, mpt: int, result_of: Any,
                 webhook_url: str | None, webhook_secret: str | None) -> Job:
        job_id = f"{kind}_{next(self._numbers):06d}_{secrets.token_hex(3)}"
        rng = random.Random(f"{self.options.seed}:{job_id}")  # noqa: S311
        latency = (self.options.video_latency_ms if kind == "video"
                   else self.options.image_latency_ms)
        now = time.monotonic()
        job = Job(job_id=job_id, kind=kind, units=units,
                  ready_at=now + units * latency / 1000.0 * self.rng.uniform(0.5, 1.0),
                  deadline=now + mpt if mpt > 0 else None,
                  result=_unit_json(result_of(job_id, rng)), webhook_url=webhook_url,
                  webhook_secret=webhook_secret, expire=self.rng.random() < self.faults.expire)
        if job.deadline is not None and job.ready_at > job.deadline:
            job.expire = True  # the upstream cancels it: no result
        self.jobs[job_id] = job
        self.stats.submissions += 1
        if not job.expire and webhook_url:
            self._spawn(self._deliver(job))
        return job

    @staticmethod
    def _accepted(job: Job) -> Response:
        media = "video" if job.kind == "video" else "image"
        return JSONResponse({"job_id": job.job_id}, status_code=202,
                            headers={"Location": f"/{media}/{quote(job.job_id, safe='')}"})

    async def submit_video(self, request: Request) -> Response:
        mpt = self._admit(request)
        if isinstance(mpt, Response):
            return mpt
        body = await request.body()
        if len(body) > MAX_VIDEO_BYTES:
            return JSONResponse({"error": "the video is larger than 100 MB"}, status_code=413)
        try:
            seconds = webm.duration_seconds(body)
        except webm.WebmError as exc:
            return JSONResponse({"error": str(exc)}, status_code=415)
        if seconds > MAX_VIDEO_SECONDS:
            return JSONResponse({"error": "the video is longer than 60 seconds"},
                                status_code=422)
        job = self._new_job("video", seconds, mpt,
                            lambda job_id, rng: video_result(job_id, max(seconds, 0.1), rng),
                            request.query_params.get("webhook.url"),
                            request.query_params.get("webhook.secret"))
        return self._accepted(job)

    async def submit_images(self, request: Request) -> Response:
        mpt = self._admit(request)
        if isinstance(mpt, Response):
            return mpt
        try:
            document = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        images = document.get("images") if isinstance(document, dict) else None
        if not isinstance(images, list) or not images:
            return JSONResponse({"error": "images must be a non-empty array"}, status_code=422)
        external_ids = []
        for position, image in enumerate(images):
            data = image.get("data_base64") if isinstance(image, dict) else None
            if not isinstance(data, str) or data.startswith("data:"):
                return JSONResponse({"error": f"images[{position}].data_base64 must be raw "
                                              "base64 (no data URI prefix)"}, status_code=422)
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return JSONResponse({"error": f"images[{position}].data_base64 is not "
                                              "base64"}, status_code=422)
            external_ids.append(str(image.get("external_id", position)))
        webhook = document.get("webhook") or {}
        job = self._new_job("image_batch", len(images), mpt,
                            lambda job_id, rng: image_result(job_id, external_ids, rng),
                            webhook.get("url"), webhook.get("secret"))
        return self._accepted(job)

    async def status(self, request: Request) -> Response:
        self.stats.polls.append(time.time())
        refused = self._refuse(request)
        if refused is not None:
            return refused
        job = self.jobs.get(request.path_params["job_id"])
        roll = self.rng.random()
        if roll < self.faults.poll_errors:
            code = self.rng.choice([500, 502, 503])
            self.stats.poll_answers[str(code)] += 1
            return JSONResponse({"error": "internal error"}, status_code=code)
        if roll < self.faults.poll_errors + self.faults.poll_throttle:
            self.stats.poll_answers["429"] += 1
            return JSONResponse({"error": "too many requests"}, status_code=429,
                                headers={"Retry-After": f"{self.faults.retry_after:g}"})
        if job is None:
            self.stats.poll_answers["404"] += 1
            return JSONResponse({"error": "no such job"}, status_code=404)
        if job.answers:
            bad = job.answers.popleft()
            self.stats.poll_answers[bad] += 1
            return self._bad_answer(job, bad)
        if not job.done(time.monotonic()):
            self.stats.poll_answers["processing"] += 1
            return JSONResponse({"job_id": job.job_id, "status": "processing"})
        self.stats.poll_answers["result"] += 1
        return Response(job.result, media_type="application/json")

    def _bad_answer(self, job: Job, bad: str) -> Response:
        if bad == "html":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>",
                            media_type="text/html")
        if bad == "malformed_json":
            return Response(job.result[: len(job.result) // 2], media_type="application/json")
        if bad == "other_job":
            other = json.loads(job.result)
            other["job_id"] = job.job_id + "_other"
            return Response(_unit_json(other), media_type="application/json")
        return JSONResponse({"job_id": job.job_id, "status": "pending"})

    async def latency(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        self.stats.latency_requests += 1
        media_type = request.query_params.get("media_type")
        if media_type not in ("video", "image"):
            return JSONResponse({"error": "media_type must be video or image"},
                                status_code=422)
        value = (self.options.video_latency_ms if media_type == "video"
                 else self.options.image_latency_ms)
        return JSONResponse({"media_type": media_type,
                             "unit": "second" if media_type == "video" else "image",
                             "latency_ms_per_unit": value})

    # --- webhooks ------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job: Job) -> None:
        faults = self.faults
        drop, duplicate = self.rng.random() < faults.drop, self.rng.random() < faults.duplicate
        corrupt = self.rng.random() < faults.corrupt
        wait = job.ready_at - time.monotonic() + faults.delay + self.rng.uniform(
            0, faults.reorder)
        await asyncio.sleep(max(0.0, wait))
        if job.expire:
            return
        if drop:
            self.stats.webhooks["dropped"] += 1
            return
        copies = [self._post(job, corrupt)]
        if duplicate:
            self.stats.webhooks["duplicated"] += 1
            copies.append(self._post(job, corrupt))
        await asyncio.gather(*copies)

    async def _post(self, job: Job, corrupt: bool) -> None:
        assert self._client is not None
        assert job.webhook_url is not None
        headers = {"Content-Type": "application/json", "User-Agent": "upstream-simulator"}
        if job.webhook_secret:
            signature = sign(job.webhook_secret, job.result)
            if corrupt:
                signature = sign(job.webhook_secret + "-corrupted", job.result)
            headers["X-Webhook-Signature"] = signature
        for attempt in range(self.options.webhook_attempts):
            try:
                response = await self._client.post(job.webhook_url, content=job.result,
                                                   headers=headers)
                if response.is_success:
                    self.stats.webhooks["delivered"] += 1
                    return
                self.stats.webhooks[f"http_{response.status_code}"] += 1
            except httpx.HTTPError:
                self.stats.webhooks["unreachable"] += 1
            if attempt + 1 < self.options.webhook_attempts:
                backoff = self.options.webhook_backoff * 2 ** attempt
                await asyncio.sleep(backoff * self.rng.uniform(0.5, 1.0))
        self.stats.webhooks["gave_up"] += 1

    # --- control -------------------------------------------------------------------------------

    async def control_faults(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if request.method == "PATCH":
            try:
                changes = json.loads(await request.body())
                if not isinstance(changes, dict):
                    raise ValueError("the body is a JSON object of faults")
                self.faults.update(changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(asdict(self.faults))

    async def control_unreachable(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            seconds = float(json.loads(await request.body())["seconds"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'the body is {"seconds": S}'}, status_code=422)
        if self.front is None:
            return JSONResponse({"error": "no front to close"}, status_code=409)
        # Answer first; the port closes right after.
        self._spawn(self.front.close_for(seconds))
        return JSONResponse({"unreachable_seconds": seconds})

    async def control_stats(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        now = time.monotonic()
        return JSONResponse({
            "jobs": len(self.jobs), "done": sum(1 for j in self.jobs.values() if j.done(now)),
            "expired": sorted(j.job_id for j in self.jobs.values() if j.expire),
            "submissions": self.stats.submissions, "polls": self.stats.polls,
            "poll_answers": dict(self.stats.poll_answers),
            "webhooks": dict(self.stats.webhooks),
            "latency_requests": self.stats.latency_requests,
        })

    def _job(self, request: Request) -> Job | Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return job

    async def control_answers(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        try:
            answers = json.loads(await request.body())["answers"]
            if not isinstance(answers, list) or not set(answers) <= set(BAD_ANSWERS):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": f"the body is {{\"answers\": [...]}} of "
                                          f"{', '.join(BAD_ANSWERS)}"}, status_code=422)
        job.answers.extend(answers)
        return JSONResponse({"job_id": job.job_id, "answers": list(job.answers)})

    async def control_expire(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        job.expire = True
        return JSONResponse({"job_id": job.job_id, "expire": True})

    async def control_result(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        return Response(job.result, media_type="application/json")

    # --- running -------------------------------------------------------------------------------

    async def serve(self, *, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled: uvicorn on an internal port, the front on ``options.port``."""
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (else each
        # answer on a kept-alive connection waits out the client's delayed ACK, ~40 ms).
        backend_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        backend_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        backend_socket.bind(("127.0.0.1", 0))
        backend_port = backend_socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False,
                                lifespan="off", timeout_keep_alive=30)
        server = uvicorn.Server(config)
        self._client = httpx.AsyncClient(timeout=10.0)
        self.front = Front(self.options.host, self.options.port, backend_port)
        backend = asyncio.create_task(server.serve(sockets=[backend_socket]))
        try:
            while not server.started:
                if backend.done():
                    await backend
                    raise RuntimeError("the simulator's server did not start")
                await asyncio.sleep(0.01)
            await self.front.open()
            log.info("upstream.serving", url=f"http://{self.options.host}:{self.front.port}")
            if ready is not None:
                ready.set()
            await backend
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(backend, 5)
            await self.front.shut()
            for task in list(self._tasks):
                task.cancel()
            await self._client.aclose()


class Front:
    """A TCP front that forwards to the simulator's server and can stop listening for a
    while: connections are then refused and open ones cut, as a host that went away."""

    def __init__(self, host: str, port: int, backend_port: int) -> None:
        self.host = host
        self.port = port
        self._backend_port = backend_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed_until = 0.0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close_for(self, seconds: float) -> None:
        await asyncio.sleep(0.05)  # the answer to the control request goes out first
        self._closed_until = time.monotonic() + seconds
        await self.shut()
        log.warning("upstream.unreachable", seconds=seconds)
        await asyncio.sleep(seconds)
        if time.monotonic() >= self._closed_until:
            for _attempt in range(50):
                try:
                    await self.open()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            log.info("upstream.reachable")

    async def shut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            backend_reader, backend_writer = await asyncio.open_connection(
                "127.0.0.1", self._backend_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, backend_writer}
        try:
            await asyncio.gather(self._pipe(reader, backend_writer),
                                 self._pipe(backend_reader, writer))
        finally:
            self._writers -= {writer, backend_writer}
            for end in (writer, backend_writer):
                end.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()


def run(options: Options) -> None:
    """``results-receiver dev upstream``: serve until interrupted."""
    simulator = Simulator(options)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(simulator.serve())
