"""Query-string parameters, validated: a bad one is a 422 whose details name it."""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from service.http import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def invalid(name: str, message: str, **details: Any) -> ApiError:
    return ApiError(422, "invalid_parameter", f"{name}: {message}",
                    {"parameter": name, **details})


def raw_param(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(name, "given more than once")
    return values[0] if values else None


def limit(request: Request, *, default: int = DEFAULT_LIMIT) -> int:
    raw = raw_param(request, "limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}", value=raw)
    return int(raw)


def choice(request: Request, name: str, allowed: Collection[str]) -> str | None:
    raw = raw_param(request, name)
    if raw is not None and raw not in allowed:
        raise invalid(name, f"must be one of {', '.join(sorted(allowed))}", value=raw,
                      allowed=sorted(allowed))
    return raw


def boolean(request: Request, name: str) -> bool | None:
    raw = raw_param(request, name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid(name, "must be true or false", value=raw)


def number(request: Request, name: str) -> float | None:
    raw = raw_param(request, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise invalid(name, "must be a number", value=raw) from None
    if not math.isfinite(value):
        raise invalid(name, "must be a finite number", value=raw)
    return value


def timestamp(request: Request, name: str) -> datetime | None:
    """An ISO 8601 date-time; one without an offset is taken as UTC."""
    raw = raw_param(request, name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        # OverflowError: a valid date whose offset moves it out of datetime's range.
        raise invalid(name, "must be an ISO 8601 date-time, e.g. 2026-11-22T06:00:00Z",
                      value=raw) from None


def text(request: Request, name: str, *, required: bool = False, max_length: int = 200,
         min_length: int = 1) -> str | None:
    raw = raw_param(request, name)
    if raw is None:
        if required:
            raise invalid(name, "is required")
        return None
    if not min_length <= len(raw) <= max_length or "\x00" in raw:
        raise invalid(name, f"must be {min_length} to {max_length} characters, without NUL",
                      length=len(raw))
    return raw
