"""POST /webhooks/analysis over HTTP, on SQLite and PostgreSQL: status codes, error bodies,
outcomes, precedence, rejected deliveries and the body limit."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from service import models
from tests.conftest import bearer
from tests.support.db import fetch_all, stored_bodies, table_counts
from tests.support.signing import SECRET, encode, example, signature, signed_headers

pytestmark = pytest.mark.anyio

URL = "/webhooks/analysis"


def video(job_id: str = "video_1", **changes: object) -> dict[str, object]:
    document = example("video_finished.json")
    document["job_id"] = job_id
    document.update(changes)
    return document


async def post(client, document: object | bytes, headers: dict[str, str] | None = None):
    body = document if isinstance(document, bytes) else encode(document)
    return await client.post(URL, content=body,
                             headers=signed_headers(body) if headers is None else headers)


def assert_error(response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["code"] == code
    assert isinstance(document["error"], str)
    assert document["error"]
    assert isinstance(document["details"], dict)
    return document


# --- authentication ------------------------------------------------------------------------

BODY = encode(video())
GOOD = signature(BODY)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"X-Webhook-Signature": ""}, "malformed"),
        ({"X-Webhook-Signature": "not-a-signature"}, "malformed"),
        ({"X-Webhook-Signature": GOOD[:-1]}, "malformed"),
        ({"X-Webhook-Signature": "0" * 64}, "mismatch"),
        ({"X-Webhook-Signature": signature(BODY, "another-secret")}, "mismatch"),
        ({"X-Webhook-Signature": signature(BODY + b" ")}, "mismatch"),
        ({"X-Webhook-Signature": "x" * 5000}, "malformed"),
        ({"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
         "timestamp"),
        ({"webhook-id": "msg_1", "webhook-signature": "v1,AAAA"}, "malformed"),
    ],
    ids=["missing", "empty", "garbage", "truncated", "zeros", "other-secret", "other-body",
         "oversized-header", "standard-stale", "standard-incomplete"],
)
async def test_every_failed_verification_is_401_and_writes_nothing(client, settings, headers,
                                                                    reason):
    response = await post(client, BODY, {"Content-Type": "application/json", **headers})
    document = assert_error(response, 401, "invalid_signature")
    assert document["details"] == {"reason": reason}
    counts = await table_counts(settings)
    assert counts["deliveries"] == counts["delivery_bodies"] == counts["jobs"] == 0


async def test_unparseable_body_with_bad_signature_is_401_not_400(client, settings):
    response = await post(client, b"{not json", {"X-Webhook-Signature": "0" * 64})
    assert_error(response, 401, "invalid_signature")
    assert (await table_counts(settings))["deliveries"] == 0


async def test_base64_sha256_prefixed_and_multi_candidate_signatures_are_accepted(client):
    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()
    for header in (base64.b64encode(digest).decode(), "sha256=" + digest.hex().upper(),
                   f"{'0' * 64}, sha256={digest.hex()}"):
        response = await post(client, BODY, {"X-Webhook-Signature": header})
        assert response.status_code == 200, (header, response.text)


async def test_standard_webhooks_signature_within_tolerance_is_accepted(client, settings):
    timestamp = str(int(time.time()))
    signed = f"msg_abc.{timestamp}.".encode() + BODY
    value = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()
    response = await post(client, BODY, {"webhook-id": "msg_abc", "webhook-timestamp": timestamp,
                                         "webhook-signature": f"v1,{value}"})
    assert response.status_code == 200, response.text
    rows = await fetch_all(settings, sa.select(models.deliveries.c.signature_scheme))
    assert [r.signature_scheme for r in rows] == ["standard-webhooks"]


async def test_any_configured_secret_verifies_during_rotation(make_client):
    async with make_client(webhook_secrets=("new-secret", SECRET)) as client:
        for secret in ("new-secret", SECRET):
            body = encode(video(f"video_{secret}"))
            response = await post(client, body, signed_headers(body, secret))
            assert response.status_code == 200, response.text


async def test_unsigned_delivery_is_accepted_only_when_allowed(make_client, settings):
    body = encode(video())
    async with make_client(allow_unsigned=True) as client:
        response = await post(client, body, {"Content-Type": "application/json"})
        assert response.status_code == 200
        assert response.json()["outcome"] == "stored"
        wrong = await post(client, body, {"X-Webhook-Signature": "0" * 64})
        assert_error(wrong, 401, "invalid_signature")
    rows = await fetch_all(settings, sa.select(models.deliveries.c.signature_scheme))
    assert [r.signature_scheme for r in rows] == ["unsigned"]


# --- outcomes and precedence -----------------------------------------------------------------

async def test_first_delivery_is_stored_and_identical_redelivery_is_duplicate(client, settings):
    first = await post(client, video())
    assert first.status_code == 200
    assert first.json()["job_id"] == "video_1"
    assert first.json()["outcome"] == "stored"
    before = await table_counts(settings)
    second = await post(client, video())
    assert second.json()["outcome"] == "duplicate"
    after = await table_counts(settings)
    assert after["deliveries"] == before["deliveries"] + 1
    assert {k: v for k, v in after.items() if k != "deliveries"} == {
        k: v for k, v in before.items() if k != "deliveries"}


async def test_same_content_with_other_key_order_and_unknown_fields_is_duplicate(client):
    await post(client, video())
    reordered = dict(reversed(list(video(extra_field={"x": 1}).items())))
    response = await post(client, reordered)
    assert response.json()["outcome"] == "duplicate"


async def test_failed_after_finished_is_ignored_and_keeps_the_result(client, settings,
                                                                     read_token):
    await post(client, video())
    failed = {"job_id": "video_1", "status": "failed", "error": "late failure"}
    response = await post(client, failed)
    assert response.json()["outcome"] == "ignored"
    payload = await client.get("/v1/jobs/video_1/payload", headers=bearer(read_token))
    assert payload.json() == video()
    summary = (await client.get("/v1/jobs/video_1", headers=bearer(read_token))).json()
    assert summary["status"] == "finished"
    assert summary["deliveries"] == 2


async def test_finished_after_failed_updates_the_job(client, read_token):
    await post(client, {"job_id": "video_1", "status": "failed", "error": {"code": "X"}})
    response = await post(client, video())
    assert response.json()["outcome"] == "updated"
    payload = await client.get("/v1/jobs/video_1/payload", headers=bearer(read_token))
    assert payload.json() == video()


async def test_finished_a_then_finished_b_leaves_exactly_b(client, settings, read_token):
    a = video()
    b = example("video_finished.json")
    b["job_id"] = "video_1"
    b["result"] = {"raw_scenes": [{"start_seconds": 1, "end_seconds": 2}],
                   "ocr_results": [{"full_text": "only B"}]}
    await post(client, a)
    response = await post(client, b)
    assert response.json()["outcome"] == "updated"
    payload = await client.get("/v1/jobs/video_1/payload", headers=bearer(read_token))
    assert payload.json() == b
    counts = await table_counts(settings)
    assert counts["scenes"] == 1
    assert counts["ocr_texts"] == 1
    for table in ("frame_activity", "sections", "section_segments", "person_scenes", "persons"):
        assert counts[table] == 0, table
    summary = (await client.get("/v1/jobs/video_1", headers=bearer(read_token))).json()
    assert summary["counts"]["scenes"] == 1
    assert summary["counts"]["activity"] == 0


async def test_different_failure_after_failure_updates_the_error(client, read_token):
    await post(client, {"job_id": "video_9", "status": "failed", "error": "first"})
    response = await post(client, {"job_id": "video_9", "status": "failed", "error": "second"})
    assert response.json()["outcome"] == "updated"
    summary = (await client.get("/v1/jobs/video_9", headers=bearer(read_token))).json()
    assert summary["error"] == "second"
    assert summary["kind"] == "video"


async def test_raw_bytes_of_each_delivery_are_kept_once_per_distinct_body(client, settings):
    body = encode(video())
    await post(client, body)
    await post(client, body)
    assert await stored_bodies(settings) == [body]
    deliveries = await fetch_all(settings, sa.select(models.deliveries).order_by(
        models.deliveries.c.id))
    assert [d.outcome for d in deliveries] == ["stored", "duplicate"]
    assert all(d.size == len(body) and d.body_sha256 == hashlib.sha256(body).hexdigest()
               for d in deliveries)
    assert all(d.client_ip == "203.0.113.7" and d.request_id for d in deliveries)


# --- malformed bodies --------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes, int, str, str | None]] = [
    ("nan", b'{"job_id": "v", "status": "finished", "result": {"frame_activity_diffs": [NaN]}}',
     400, "invalid_json", None),
    ("infinity", b'{"job_id": "v", "status": "finished", "result": {"raw_scenes": '
     b'[{"start_seconds": Infinity}]}}', 400, "invalid_json", None),
    ("bad-utf8", b'{"job_id": "v\xff", "status": "finished"}', 400, "invalid_json", None),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json", None),
    ("deep-nesting-inside", b'{"job_id": "v", "status": "finished", "x": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}", 400, "invalid_json", None),
    ("not-json", b"hello", 400, "invalid_json", None),
    ("empty", b"", 400, "invalid_json", None),
    ("array", b"[]", 422, "invalid_payload", "$"),
    ("string", b'"video_1"', 422, "invalid_payload", "$"),
    ("missing-job-id", b'{"status": "finished"}', 422, "invalid_payload", "$.job_id"),
    ("integer-job-id", b'{"job_id": 12345, "status": "finished"}', 422, "invalid_payload",
     "$.job_id"),
    ("unknown-status", b'{"job_id": "v", "status": "done"}', 422, "invalid_payload", "$.status"),
    ("string-for-number", b'{"job_id": "v", "status": "finished", "result": {"raw_scenes": '
     b'[{"start_seconds": 0, "end_seconds": "5.2"}]}}', 422, "invalid_payload",
     "$.result.raw_scenes[0].end_seconds"),
    ("nul-in-text", b'{"job_id": "v", "status": "finished", "result": {"ocr_results": '
     b'[{"full_text": "a\\u0000b"}]}}', 422, "invalid_payload",
     "$.result.ocr_results[0].full_text"),
]


@pytest.mark.parametrize(("name", "body", "status", "code", "path"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
async def test_malformed_signed_body_gets_4xx_and_is_kept_as_rejected(client, settings, name,
                                                                      body, status, code, path):
    response = await post(client, body)
    document = assert_error(response, status, code)
    if path is not None:
        assert document["details"]["path"] == path
    deliveries = await fetch_all(settings, sa.select(models.deliveries))
    assert len(deliveries) == 1
    assert deliveries[0].outcome == "rejected"
    assert deliveries[0].error_code == code
    assert deliveries[0].id == document["details"]["delivery_id"]
    assert await stored_bodies(settings) == [body]
    assert (await table_counts(settings))["jobs"] == 0


@pytest.mark.parametrize(("body", "message"), [
    (b"", "the body is empty"),
    (b"hello", "not JSON: unexpected character at byte 0"),
    (b'{"job_id": "v"', "not JSON: the document ends early at byte 14"),
])
async def test_invalid_json_answer_says_what_is_wrong_with_the_body(client, body, message):
    document = assert_error(await post(client, body), 400, "invalid_json")
    assert document["error"] == message


async def test_rejected_delivery_records_the_job_id_when_readable(client, settings):
    response = await post(client, {"job_id": "video_7", "status": "finished",
                                   "result": {"raw_scenes": "nope"}})
    assert_error(response, 422, "invalid_payload")
    rows = await fetch_all(settings, sa.select(models.deliveries.c.job_id))
    assert [r.job_id for r in rows] == ["video_7"]


# --- body limit -------------------------------------------------------------------------------

async def test_declared_body_over_the_limit_is_413_before_reading(make_client, settings):
    async with make_client(max_body_bytes=1000) as client:
        body = encode(video(padding="x" * 2000))
        response = await post(client, body)
    document = assert_error(response, 413, "payload_too_large")
    assert document["details"] == {"max_body_bytes": 1000}
    assert (await table_counts(settings))["deliveries"] == 0


async def test_chunked_body_over_the_limit_is_413_while_streaming(make_client, settings):
    body = encode(video(padding="x" * 5000))
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for start in range(0, len(body), 500):
            sent += 1
            yield body[start:start + 500]

    async with make_client(max_body_bytes=1000) as client:
        response = await client.post(URL, content=chunks(), headers=signed_headers(body))
    assert_error(response, 413, "payload_too_large")
    assert (await table_counts(settings))["deliveries"] == 0


async def test_body_exactly_at_the_limit_is_accepted(make_client):
    body = encode(video())
    async with make_client(max_body_bytes=len(body)) as client:
        response = await post(client, body)
    assert response.status_code == 200


# --- other routes and methods --------------------------------------------------------------------

async def test_get_on_the_webhook_route_is_405_json(client):
    assert_error(await client.get(URL), 405, "method_not_allowed")


async def test_unknown_route_is_404_json(client):
    assert_error(await client.get("/nope"), 404, "not_found")


async def test_responses_carry_a_request_id(client):
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32
