"""Signature schemes for incoming deliveries, verified over the raw body in constant time.

Two schemes are understood:

* ``X-Webhook-Signature``: HMAC-SHA256(key = the secret's UTF-8 bytes, message = raw body),
  as hex (any case, optionally prefixed ``sha256=``) or standard base64. The header may carry
  several candidates separated by commas or whitespace; one match is enough.
* Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
  (``v1,<base64>`` entries) over ``{id}.{timestamp}.{body}``. A ``whsec_`` secret's key is the
  base64 after the prefix; any other secret's key is its UTF-8 bytes.

Every malformed input ends in :class:`SignatureError`, never in a generic exception.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.hazmat.primitives import constant_time, hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

Scheme = Literal["hmac-sha256", "standard-webhooks", "unsigned"]
Reason = Literal["missing", "malformed", "mismatch", "timestamp"]

SIGNATURE_HEADER: Final = "x-webhook-signature"
STANDARD_ID_HEADER: Final = "webhook-id"
STANDARD_TIMESTAMP_HEADER: Final = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER: Final = "webhook-signature"

_MAX_HEADER_LENGTH: Final = 4096
_MAX_CANDIDATES: Final = 16
_DIGEST_SIZE: Final = 32
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_HMAC_SEPARATORS = re.compile(r"[,\s]+")
_STANDARD_SEPARATORS = re.compile(r"\s+")
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]{1,256}")


class SignatureError(Exception):
    """The delivery is not authenticated. ``reason`` says why, for logs and the error body."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True)
class _Key:
    hmac_key: bytes
    standard_key: bytes


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    for part in parts:
        mac.update(part)
    return mac.finalize()


def sign(secret: str, body: bytes) -> str:
    """The lowercase hex ``X-Webhook-Signature`` value the upstream sends for ``body``."""
    return hmac_sha256(secret.encode("utf-8"), body).hex()


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value (``v1,<base64>``)."""
    digest = hmac_sha256(_standard_key(secret), f"{message_id}.{timestamp}.".encode(), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def _standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode("utf-8")


class SignatureVerifier:
    """Checks a delivery against every configured secret (several allow rotation)."""

    def __init__(self, secrets: Sequence[str], *, allow_unsigned: bool,
                 tolerance_seconds: int) -> None:
        self._keys = tuple(_Key(s.encode("utf-8"), _standard_key(s)) for s in secrets)
        self._allow_unsigned = allow_unsigned
        self._tolerance = tolerance_seconds

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Scheme:
        """Return the scheme that authenticated ``body``, or raise :class:`SignatureError`."""
        signature = headers.get(SIGNATURE_HEADER)
        if signature is not None:
            self._verify_hmac(signature, body)
            return "hmac-sha256"
        if any(h in headers for h in (STANDARD_SIGNATURE_HEADER, STANDARD_ID_HEADER,
                                      STANDARD_TIMESTAMP_HEADER)):
            self._verify_standard(headers, body, now)
            return "standard-webhooks"
        if self._allow_unsigned:
            return "unsigned"
        raise SignatureError("missing", "the delivery carries no X-Webhook-Signature header")

    def _verify_hmac(self, header: str, body: bytes) -> None:
        candidates = _hmac_candidates(header)
        expected = [hmac_sha256(key.hmac_key, body) for key in self._keys]
        if not _any_equal(candidates, expected):
            raise SignatureError("mismatch", "X-Webhook-Signature does not match the body")

    def _verify_standard(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        message_id = headers.get(STANDARD_ID_HEADER)
        timestamp_raw = headers.get(STANDARD_TIMESTAMP_HEADER)
        signature = headers.get(STANDARD_SIGNATURE_HEADER)
        if message_id is None or timestamp_raw is None or signature is None:
            raise SignatureError(
                "malformed",
                "Standard Webhooks needs webhook-id, webhook-timestamp and webhook-signature",
            )
        if not _PRINTABLE_ID.fullmatch(message_id):
            raise SignatureError("malformed", "webhook-id is empty, too long or not printable")
        if not timestamp_raw.isascii() or not timestamp_raw.isdigit() or len(timestamp_raw) > 12:
            raise SignatureError("malformed", "webhook-timestamp is not a Unix time in seconds")
        timestamp = int(timestamp_raw)
        if abs(now - timestamp) > self._tolerance:
            raise SignatureError(
                "timestamp",
                f"webhook-timestamp is more than {self._tolerance} s away from the server's clock",
            )
        candidates = _standard_candidates(signature)
        prefix = f"{message_id}.{timestamp_raw}.".encode("ascii")
        expected = [hmac_sha256(key.standard_key, prefix, body) for key in self._keys]
        if not _any_equal(candidates, expected):
            raise SignatureError("mismatch", "webhook-signature does not match the body")


def _any_equal(candidates: Sequence[bytes], expected: Sequence[bytes]) -> bool:
    matched = False
    for digest in expected:
        for candidate in candidates:
            matched |= constant_time.bytes_eq(candidate, digest)
    return matched


def _split(header: str, name: str, separators: re.Pattern[str]) -> list[str]:
    if len(header) > _MAX_HEADER_LENGTH:
        raise SignatureError("malformed", f"{name} is longer than {_MAX_HEADER_LENGTH} characters")
    parts = [p for p in separators.split(header.strip()) if p]
    if not parts:
        raise SignatureError("malformed", f"{name} is empty")
    if len(parts) > _MAX_CANDIDATES:
        raise SignatureError("malformed", f"{name} carries more than {_MAX_CANDIDATES} candidates")
    return parts


def _hmac_candidates(header: str) -> list[bytes]:
    decoded: list[bytes] = []
    for part in _split(header, "X-Webhook-Signature", _HMAC_SEPARATORS):
        if part[:7].lower() == "sha256=":
            part = part[7:]
        digest = _decode_digest(part)
        if digest is not None:
            decoded.append(digest)
    if not decoded:
        raise SignatureError(
            "malformed",
            "X-Webhook-Signature holds no HMAC-SHA256 digest in hex or base64",
        )
    return decoded


def _standard_candidates(header: str) -> list[bytes]:
    decoded: list[bytes] = []
    for part in _split(header, "webhook-signature", _STANDARD_SEPARATORS):
        version, _, value = part.partition(",")
        if version != "v1":
            continue
        digest = _decode_base64(value)
        if digest is not None:
            decoded.append(digest)
    if not decoded:
        raise SignatureError("malformed", "webhook-signature holds no v1,<base64> signature")
    return decoded


def _decode_digest(text: str) -> bytes | None:
    if _HEX_DIGEST.fullmatch(text):
        return bytes.fromhex(text)
    return _decode_base64(text)


def _decode_base64(text: str) -> bytes | None:
    if not text.isascii() or len(text) > 64:
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _DIGEST_SIZE else None
