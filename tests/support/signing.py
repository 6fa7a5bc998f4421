"""Sign bodies the way the upstream does, for tests."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import msgspec

SECRET = "test-secret-0123456789abcdefghij"
EXAMPLES = Path(__file__).resolve().parents[2] / "service" / "examples"


def signature(body: bytes, secret: str = SECRET) -> str:
    # Computed with the standard library, independently of the service's own code.
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Webhook-Signature": signature(body, secret)}


def example(name: str) -> dict[str, object]:
    document: dict[str, object] = msgspec.json.decode((EXAMPLES / name).read_bytes())
    return document


def encode(document: object) -> bytes:
    return msgspec.json.encode(document)
