"""``POST /webhooks/analysis``: read within the limit, verify, parse, store, answer.

Order matters: the raw body is read (bounded) and verified before any parsing; only an
authenticated body is ever parsed or written. A 200 is sent only after the transaction that
holds the raw delivery and every normalized row has committed.
"""

from __future__ import annotations

import asyncio
import io
import time

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from service import ingest, payloads
from service.db import UNAVAILABLE_ERRORS, Database, describe_error
from service.faces.handoff import stored_faces
from service.faces.searching import Faces
from service.http import ApiError, encode_json, unavailable
from service.metrics import Metrics
from service.models import utcnow
from service.privacy.protect import Protector
from service.signatures import (
    SIGNATURE_HEADER,
    STANDARD_SIGNATURE_HEADER,
    SignatureError,
    SignatureVerifier,
)

log = structlog.get_logger("service.webhooks")

# A client that stops sending its body for this long is dropped (slow-client protection).
BODY_IDLE_TIMEOUT_SECONDS = 30.0


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    # Chunks are copied into one growing buffer as they arrive, and its value is taken without
    # a copy: a list joined at the end would hold a large body twice.
    buffer = io.BytesIO()
    size = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(BODY_IDLE_TIMEOUT_SECONDS) as idle:
            async for chunk in request.stream():
                idle.reschedule(loop.time() + BODY_IDLE_TIMEOUT_SECONDS)
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                buffer.write(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-body") from None
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"no body bytes arrived for "
                       f"{BODY_IDLE_TIMEOUT_SECONDS:.0f} s") from None
    return buffer.getvalue()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes",
                    {"max_body_bytes": limit})


def _signature_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    # A header repeated on several lines is one list of candidates.
    for name, separator in ((SIGNATURE_HEADER, ","), (STANDARD_SIGNATURE_HEADER, " ")):
        values = request.headers.getlist(name)
        if values:
            headers[name] = separator.join(values)
    for name in ("webhook-id", "webhook-timestamp"):
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


# Outcome label of a refused delivery, by error code.
_REFUSALS = {"invalid_json": "rejected", "invalid_payload": "rejected",
             "invalid_signature": "unauthenticated", "payload_too_large": "too_large",
             "unavailable": "unavailable", "request_timeout": "timed_out"}


class AnalysisWebhook:
    """``POST /webhooks/analysis`` as a bare ASGI endpoint: the hottest route of the service
    builds no response object and no exception-wrapping layer of its own. A refusal is an
    :class:`ApiError`, answered by the app's error handler like any other."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        metrics: Metrics = request.state.metrics
        try:
            stored = await _receive(request, metrics)
        except ApiError as exc:
            metrics.delivery(_REFUSALS.get(exc.code, exc.code), exc.status).inc()
            raise
        metrics.delivery(stored.outcome, 200).inc()
        if stored.rows:
            metrics.ingest_rows.inc(stored.rows)
            metrics.ingest_rows_per_delivery.observe(stored.rows)
        body = encode_json({"job_id": stored.job_id, "outcome": stored.outcome,
                                "delivery_id": stored.delivery_id})
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": body})


async def _receive(request: Request, metrics: Metrics) -> ingest.StoreResult:
    settings = request.state.settings
    verifier: SignatureVerifier = request.state.verifier
    database: Database = request.state.database
    started = time.perf_counter()

    try:
        body = await read_body(request, settings.max_body_bytes)
    except ApiError as exc:
        log.warning("webhook.refused", code=exc.code, max_body_bytes=settings.max_body_bytes)
        raise
    try:
        scheme = verifier.verify(_signature_headers(request), body, now=time.time())
    except SignatureError as exc:
        log.warning("webhook.unauthenticated", reason=exc.reason, size=len(body),
                    client_ip=request.client.host if request.client else None)
        raise ApiError(401, "invalid_signature", exc.message, {"reason": exc.reason}) from None
    metrics.delivery_bytes.inc(len(body))

    client = request.client
    delivery = ingest.IncomingDelivery(
        body=body, received_at=utcnow(), signature_scheme=scheme,
        request_id=request.state.request_id, client_ip=client.host if client else None,
    )
    del body  # the delivery holds it until the privacy layer has its compressed copy
    protector: Protector = request.state.protector
    try:
        prepared = await ingest.parse_and_prepare(delivery, protector)
    except payloads.PayloadError as exc:
        raise await _reject(database, delivery, protector, exc, started, metrics) from None

    try:
        stored = await ingest.store(database.writer(), prepared, delivery)
    except UNAVAILABLE_ERRORS as exc:
        metrics.database_errors.labels("ingest").inc()
        log.error("webhook.database_unavailable", job_id=prepared.job_id,
                  **describe_error(exc))
        raise unavailable() from None
    faces: Faces | None = request.state.faces
    if faces is not None and stored.job_pk is not None:
        faces.stored_here(stored.delivery_id,
                          stored_faces(prepared, stored.job_pk, delivery.received_at))

    log.info(
        f"webhook.{stored.outcome}", job_id=stored.job_id, outcome=stored.outcome,
        rows=stored.rows, delivery_id=stored.delivery_id, signature_scheme=scheme,
        size=delivery.size, client_ip=delivery.client_ip,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return stored


async def _reject(database: Database, delivery: ingest.IncomingDelivery, protector: Protector,
                  exc: payloads.PayloadError, started: float, metrics: Metrics) -> ApiError:
    """Keep the authenticated but unusable delivery; return the 400/422 to answer with."""
    job_id = payloads.job_id_hint(delivery.body) if exc.code == "invalid_payload" else None
    try:
        delivery_id = await ingest.store_rejected(
            database.writer(), delivery, protector.protect_rejected(delivery, job_id),
            job_id=job_id, error_code=exc.code, error=exc.message)
    except UNAVAILABLE_ERRORS as db_exc:
        metrics.database_errors.labels("ingest").inc()
        log.error("webhook.database_unavailable", job_id=job_id,
                  **describe_error(db_exc))
        raise unavailable() from None
    # The message can quote the body (e.g. an invalid enum value): it goes to the sender and
    # the delivery log, never to the service log.
    log.warning("webhook.rejected", code=exc.code, job_id=job_id, path=exc.path,
                delivery_id=delivery_id, size=delivery.size,
                client_ip=delivery.client_ip,
                duration_ms=round((time.perf_counter() - started) * 1000, 2))
    details: dict[str, object] = {"delivery_id": delivery_id}
    if exc.path is not None:
        details["path"] = exc.path
    status = 400 if exc.code == "invalid_json" else 422
    return ApiError(status, exc.code, exc.message, details)
