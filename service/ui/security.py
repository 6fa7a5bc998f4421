"""What protects every explorer response: its security headers, and where a sign-in may send
the browser next.

:class:`ExplorerHeaders` is plain ASGI middleware: every response under ``/ui`` (pages,
redirects, errors, assets) gets a Content-Security-Policy without ``unsafe-inline`` (every
script and style is a file the service serves; the SVG drawn on the server positions with
attributes, never ``style=``), ``X-Content-Type-Options: nosniff``, a ``Referrer-Policy``,
``frame-ancestors 'none'`` (and ``X-Frame-Options`` for older browsers), and pages are never
stored by a cache (``no-store``: they show data behind a session).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/ui"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
_STATIC = PREFIX + "/static/"


def is_explorer_path(scope: Scope) -> bool:
    root = scope.get("root_path", "")
    path: str = scope.get("path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path == PREFIX or path.startswith(PREFIX + "/")


class ExplorerHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_explorer_path(scope):
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        static = scope.get("path", "").startswith(root + _STATIC)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def safe_next(raw: str | None, root_path: str) -> str | None:
    """``raw`` when it is a path of this explorer (``{root}/ui...``) on this host, else None:
    a sign-in never sends the browser to another site (``//evil``, ``https://evil``,
    ``/\\evil``, control characters) or outside the explorer."""
    if not raw or len(raw) > 2000 or not raw.isprintable() or "\\" in raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//"):
        return None
    base = root_path + PREFIX
    if parts.path != base and not parts.path.startswith(base + "/"):
        return None
    segments = unquote(parts.path).split("/")
    if ".." in segments or "." in segments:
        return None
    return raw
