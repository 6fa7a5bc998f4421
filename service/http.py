"""HTTP building blocks shared by every route: JSON responses and the error shape.

Every error leaves the service as ``{"error": message, "code": machine_code, "details": {...}}``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode
"""JSON bytes as every response renders them (msgspec: RFC 3339 datetimes, no NaN)."""


class JSONResponse(Response):
    """A JSON response rendered by msgspec (datetimes as RFC 3339, no NaN)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class ApiError(Exception):
    """Raise anywhere in a request to answer with the standard error body."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, "details": details or {}},
                        status_code=status, headers=headers)


async def handle_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def unavailable() -> ApiError:
    return ApiError(503, "unavailable", "the database is unavailable; retry later",
                    headers={"Retry-After": "5"})
