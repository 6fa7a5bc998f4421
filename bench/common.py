"""What the benchmark's own servers share with ``results-receiver serve``.

:func:`run_like_service` starts an ASGI app factory under uvicorn with exactly the keyword
arguments ``serve`` uses (:func:`service.server.uvicorn_options`: uvloop and httptools with
the same head guard, no log config, no access log, no server header), so the ceiling and the
naive peer differ from the service only in the application.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os

SECRET_ENV = "BENCH_WEBHOOK_SECRET"  # noqa: S105 (the name of a variable)
DATABASE_ENV = "BENCH_DATABASE_URL"


def secret_from_env() -> bytes:
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise SystemExit(f"{SECRET_ENV} is not set")
    return secret.encode("utf-8")


def verify_hex_signature(key: bytes, body: bytes, header: str | None) -> bool:
    """``X-Webhook-Signature: [sha256=]<hex>`` over the raw body, compared in constant time."""
    if not header:
        return False
    candidate = header.strip()
    if candidate[:7].lower() == "sha256=":
        candidate = candidate[7:]
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, candidate.lower())


def serve_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    return parser


def run_like_service(factory: str, *, host: str, port: int, workers: int) -> None:
    import uvicorn

    from service.server import uvicorn_options

    uvicorn.run(factory, factory=True, **uvicorn_options(
        host=host, port=port, workers=workers, forwarded_allow_ips="127.0.0.1", root_path=""))
