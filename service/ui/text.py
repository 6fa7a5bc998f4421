"""How values read on a page: times, sizes, dates, and search matches picked out of a text."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import msgspec

_MAX_NEEDLES = 32
DASH = "\u2013"
"""An en dash: ranges (3.0 s \u2013 5.2 s) and values that are not there."""


def seconds(value: float | None) -> str:
    """A video time: ``5.2 s`` under a minute, ``1:05.2`` under an hour, ``1:02:05`` above."""
    if value is None or not math.isfinite(value):
        return DASH
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)}:{rest:04.1f}"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{int(rest):02d}"


def span(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return "no time"
    if end is None or start == end:
        return seconds(start if start is not None else end)
    return f"{seconds(start)} {DASH} {seconds(end)}"


def size(count: int | None) -> str:
    if count is None:
        return DASH
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"  # pragma: no cover


def when(moment: datetime | None) -> str:
    if moment is None:
        return DASH
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value * 100:.0f}%"


def highlight(text: str | None, query: str) -> list[tuple[str, bool]]:
    """``text`` cut into pieces, each marked whether it matches the query (the whole query,
    or one of its words, case-insensitively): the template wraps matches in ``<mark>``.
    Plain text in, plain text out: escaping stays the template's."""
    if not text:
        return []
    needles = {query.strip(), *query.split()}
    needles = {n for n in needles if n}
    if not needles:
        return [(text, False)]
    ordered = sorted(needles, key=len, reverse=True)[:_MAX_NEEDLES]
    pattern = re.compile("|".join(re.escape(n) for n in ordered), re.IGNORECASE)
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            pieces.append((text[position:match.start()], False))
        pieces.append((match.group(0), True))
        position = match.end()
    if position < len(text):
        pieces.append((text[position:], False))
    return pieces


def error_parts(error: Any) -> tuple[str | None, str]:
    """A stored error (a string, or an object such as ``{"code", "message"}``) as its code
    and a message to show as is."""
    if error is None:
        return None, ""
    if isinstance(error, str):
        return None, error
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        rest = {k: v for k, v in error.items() if k not in ("code", "message")}
        text = message if isinstance(message, str) else ""
        if rest or (message is not None and not isinstance(message, str)):
            extra = msgspec.json.encode(rest if isinstance(message, str) or message is None
                                        else {"message": message, **rest}).decode()
            text = f"{text} {extra}".strip()
        return (str(code) if code is not None else None), text
    return None, msgspec.json.encode(error).decode()
