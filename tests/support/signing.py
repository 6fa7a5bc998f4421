"""Sign bodies the way the upstream does, for tests."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

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


async def deliver(client: Any, document: object) -> int:
    """Post ``document`` signed to the webhook of an in-process ``httpx.AsyncClient``; it must
    be stored (200). Returns its delivery id."""
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    assert response.status_code == 200, response.text
    delivery_id: int = response.json()["delivery_id"]
    return delivery_id
