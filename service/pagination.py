"""Keyset pagination of every listing: pages, opaque cursors, and the page response.

A page ends at a position (the sort key of its last row) and the next page starts strictly
after it, so rows arriving meanwhile never shift a page. A cursor is that position plus the
name of its listing, as URL-safe base64 of JSON; a cursor from another listing, or a forged
one, is a 422 naming ``cursor``. An empty ``cursor`` is the same as none: the first page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from service.api.params import invalid, raw_param
from service.http import ApiError, JSONResponse, encode_json

Json = dict[str, Any]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_CURSOR_LENGTH = 512


@dataclass(frozen=True)
class Page:
    rows: list[Json]
    next_position: list[Any] | None


def cut(rows: list[Json], limit: int, position: Callable[[Json], list[Any]]) -> Page:
    """``rows`` holds up to limit + 1 rows: the extra one says whether a next page exists."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, position(rows[-1]))
    return Page(rows, None)


def encode_cursor(kind: str, position: list[Any]) -> str:
    """An opaque cursor: which listing it belongs to and where the last page ended."""
    raw = encode_json([kind, *position])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def bad_cursor(message: str = "is not a cursor from this listing; start without one") -> ApiError:
    return invalid("cursor", message)


def decode_cursor(raw: str, kind: str, types: tuple[type, ...]) -> list[Any]:
    """The position in a cursor of listing ``kind``; raises the 422 for anything else."""
    try:
        if len(raw) > _MAX_CURSOR_LENGTH or not raw.isascii():
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
        raise bad_cursor() from None
    return position


def cursor(request: Request, kind: str, types: tuple[type, ...]) -> list[Any] | None:
    """The request's position in listing ``kind``, or None for the first page (no cursor, or
    an empty one)."""
    raw = raw_param(request, "cursor")
    if not raw:
        return None
    return decode_cursor(raw, kind, types)


def page_response(kind: str, page: Page) -> Response:
    next_cursor = None if page.next_position is None else encode_cursor(kind, page.next_position)
    return JSONResponse({"data": page.rows, "next_cursor": next_cursor})
