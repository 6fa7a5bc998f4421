"""The application factory: routes, middleware, error handlers and a lifespan, all explicit.

``create_app(settings)`` builds an app; nothing is created at import time. The database engine
lives in the lifespan and reaches requests through the lifespan state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service import allocator, garbage
from service.api.openapi import openapi
from service.api.routes import api_routes
from service.config import Settings, redact_credentials, redact_url
from service.db import Database, describe_error
from service.faces.remote import RemoteFaces
from service.faces.searching import Faces
from service.health import healthz, readyz
from service.http import ApiError, error_response, handle_api_error, unavailable
from service.logging import configure_logging
from service.metrics import Metrics, metrics_endpoint
from service.middleware import KeepJobIdWhole, RequestObserver
from service.migrations import head_revision
from service.privacy.protect import Protector
from service.privacy.retention import Retention
from service.privacy.reveal import KeyUnavailable
from service.privacy.scheduler import RetentionScheduler
from service.privacy.startup import check_at_start
from service.reconcile.reconciler import Reconciler
from service.reconcile.upstream import Upstream
from service.signatures import SignatureVerifier
from service.ui.render import Renderer
from service.ui.routes import explorer_routes
from service.ui.security import ExplorerHeaders, is_explorer_path
from service.webhooks import AnalysisWebhook

if TYPE_CHECKING:
    from service.faces.runtime import FaceRuntime

log = structlog.get_logger("service.app")


def routes(explorer: Renderer) -> list[BaseRoute]:
    return [
        Route("/webhooks/analysis", AnalysisWebhook(), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *api_routes(),
        *explorer_routes(explorer),
    ]


def _http_error(explorer: Renderer) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and is_explorer_path(request.scope):
            return explorer.error(request, 404, "Not found", "There is no such page.")
        return _http_error_json(exc)

    return handler


def _http_error_json(exc: HTTPException) -> Response:
    codes = {404: "not_found", 405: "method_not_allowed"}
    messages = {404: "no such route", 405: "method not allowed on this route"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                          messages.get(exc.status_code, str(exc.detail)),
                          headers=dict(exc.headers) if exc.headers else None)


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("database.unavailable", **describe_error(exc))
    metrics: Metrics | None = getattr(request.state, "metrics", None)
    if metrics is not None:
        metrics.database_errors.labels("query").inc()
    error = unavailable()
    return error_response(error.status, error.code, error.message, headers=error.headers)


async def _key_unavailable(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeyUnavailable)
    log.error("privacy.key_unavailable", key_id=exc.key_id)
    return error_response(409, "key_unavailable", exc.message, details={"key_id": exc.key_id})


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.error("http.internal_error", error_type=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the service log")


def create_app(settings: Settings, *, face_process: bool = False) -> Starlette:
    """The app. ``face_process``: its face index and people clustering live in ``serve``'s
    face process (:mod:`service.faces.process`), which it asks and hands its jobs to; else in
    this process."""
    settings.require_secret_or_unsigned()
    settings.require_encryption_key()
    metrics = Metrics()
    explorer = Renderer()
    protector = Protector(settings.biometric_policy, settings.encryption_keys)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        database = Database.from_settings(settings)
        try:
            await check_at_start(database, settings.biometric_policy, settings.encryption_keys)
        except BaseException:
            await database.dispose()
            raise
        log.info("service.started", database=redact_url(settings.database_url),
                 secret_count=len(settings.webhook_secrets), allow_unsigned=settings.allow_unsigned,
                 root_path=settings.root_path or None)
        retention = Retention.from_settings(settings)
        scheduler = None
        if retention.active:
            scheduler = RetentionScheduler(database.background, settings.encryption_keys,
                                           retention)
            scheduler.start()
        runtime: FaceRuntime | None = None
        faces: Faces | None = None
        remote: RemoteFaces | None = None
        if settings.face_index and face_process:
            faces = remote = RemoteFaces.for_settings(database.background, settings)
            await remote.start()
        elif settings.face_index:
            # The index's libraries (numpy, usearch) load only where the index lives.
            from service.faces.runtime import FaceRuntime

            runtime = FaceRuntime(database.background, settings)
            runtime.start()
            faces = runtime.sync
        upstream = Upstream.from_settings(settings) if settings.reconcile else None
        reconciler = None
        if upstream is not None:
            reconciler = Reconciler(database.background, settings, protector, metrics, upstream)
            reconciler.start()
            log.info("reconcile.started", upstream=redact_credentials(upstream.base_url),
                     interval_seconds=settings.reconcile_interval_seconds,
                     polls_per_second=settings.reconcile_polls_per_second)
        try:
            yield {
                "settings": settings,
                "database": database,
                "verifier": SignatureVerifier(
                    settings.webhook_secrets, allow_unsigned=settings.allow_unsigned,
                    tolerance_seconds=settings.signature_tolerance_seconds),
                "schema_head": head_revision(),
                "metrics": metrics,
                "protector": protector,
                "keyring": settings.encryption_keys,
                "faces": faces,
                "people_ready": None if runtime is None else runtime.people_ready,
                "upstream": upstream,
            }
        finally:
            if reconciler is not None:
                await reconciler.stop()
            if upstream is not None:
                await upstream.close()
            if runtime is not None:
                await runtime.stop()
            if remote is not None:
                await remote.stop()
            if scheduler is not None:
                await scheduler.stop()
            await database.dispose()
            metrics.process_exited()
            log.info("service.stopped")

    return Starlette(
        routes=routes(explorer),
        middleware=[Middleware(RequestObserver, metrics=metrics), Middleware(ExplorerHeaders),
                    Middleware(KeepJobIdWhole)],
        exception_handlers={
            ApiError: handle_api_error,
            KeyUnavailable: _key_unavailable,
            HTTPException: _http_error(explorer),
            SQLAlchemyError: _database_error,
            OSError: _database_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """The uvicorn factory: settings from the environment, logging, the app."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings, face_process=settings.face_process)
    garbage.tune_for_serving()
    allocator.return_large_blocks()
    return app
