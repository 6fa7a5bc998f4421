"""Query-string parameters, validated: a bad one is a 422 whose details name it."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request

from service.http import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def invalid(name: str, message: str, **details: Any) -> ApiError:
    return ApiError(422, "invalid_parameter", f"{name}: {message}",
                    {"parameter": name, **details})


def _raw(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(name, "given more than once")
    return values[0] if values else None


def limit(request: Request) -> int:
    raw = _raw(request, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}", value=raw)
    return int(raw)


def choice(request: Request, name: str, allowed: Collection[str]) -> str | None:
    raw = _raw(request, name)
    if raw is not None and raw not in allowed:
        raise invalid(name, f"must be one of {', '.join(sorted(allowed))}", value=raw,
                      allowed=sorted(allowed))
    return raw


def boolean(request: Request, name: str) -> bool | None:
    raw = _raw(request, name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid(name, "must be true or false", value=raw)


def number(request: Request, name: str) -> float | None:
    raw = _raw(request, name)
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
    raw = _raw(request, name)
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
    raw = _raw(request, name)
    if raw is None:
        if required:
            raise invalid(name, "is required")
        return None
    if not min_length <= len(raw) <= max_length or "\x00" in raw:
        raise invalid(name, f"must be {min_length} to {max_length} characters, without NUL",
                      length=len(raw))
    return raw


# --- cursors ---------------------------------------------------------------------------------

_cursor_encoder = msgspec.json.Encoder()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def encode_cursor(kind: str, position: list[Any]) -> str:
    """An opaque cursor: which listing it belongs to and where the last page ended."""
    raw = _cursor_encoder.encode([kind, *position])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def cursor(request: Request, kind: str, types: tuple[type, ...]) -> list[Any] | None:
    """The position in a cursor from this listing, or None for the first page."""
    raw = _raw(request, "cursor")
    if raw is None:
        return None
    try:
        if len(raw) > 512 or not raw.isascii():
            raise ValueError
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(decoded, list) or not decoded or decoded[0] != kind:
            raise ValueError
        position = decoded[1:]
        if len(position) != len(types) or not all(
                isinstance(v, t) and not isinstance(v, bool) for v, t in zip(
                    position, types, strict=True)):
            raise ValueError
        # Positions are 64-bit database integers; anything else is forged.
        if any(isinstance(v, int) and not _INT64_MIN <= v <= _INT64_MAX for v in position):
            raise ValueError
    except (ValueError, binascii.Error, msgspec.DecodeError, UnicodeDecodeError):
        raise invalid("cursor", "is not a cursor from this listing; start without one") from None
    return position
