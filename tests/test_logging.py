"""Structured logs: JSON lines with a request id, one line per delivery, no secrets or bodies."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from tests.conftest import bearer
from tests.support.logs import captured_json_logs
from tests.support.signing import SECRET, encode, example, signed_headers

pytestmark = pytest.mark.anyio

MARKER = "confidential-ocr-text-7f3a"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    with captured_json_logs("info") as stream:
        yield stream


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_delivery_logs_one_info_line_with_request_id_job_and_outcome(json_logs, client):
    body = encode(example("video_finished.json"))
    response = await client.post("/webhooks/analysis", content=body,
                                 headers={**signed_headers(body), "X-Request-ID": "req-42"})
    assert response.status_code == 200
    logged = [r for r in records(json_logs) if r.get("request_id") == "req-42"]
    info = [r for r in logged if r["level"] == "info"]
    assert len(info) == 1
    line = info[0]
    assert line["event"] == "webhook.stored"
    assert line["job_id"] == "video_12345"
    assert line["outcome"] == "stored"
    assert isinstance(line["duration_ms"], float)
    assert line["rows"] == 13  # item, 2 scenes, activity series, 2+2 sections, ocr, 2+2 persons
    assert "timestamp" in line


async def test_logs_never_contain_the_secret_the_token_or_the_body(json_logs, client,
                                                                   read_token):
    document = example("video_finished.json")
    document["result"]["ocr_results"][0]["full_text"] = MARKER
    body = encode(document)
    await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    await client.post("/webhooks/analysis", content=body,
                      headers={"X-Webhook-Signature": "sha256=" + "0" * 64})
    bad = encode({"job_id": "v", "status": "finished", "result": {"ocr_results": MARKER}})
    await client.post("/webhooks/analysis", content=bad, headers=signed_headers(bad))
    await client.get("/v1/jobs/video_12345/payload", headers=bearer(read_token))
    await client.get("/v1/jobs/video_12345", headers=bearer(read_token + "x"))
    text = json_logs.getvalue()
    assert text.strip()
    for needle in (SECRET, read_token, MARKER, signed_headers(body)["X-Webhook-Signature"]):
        assert needle not in text


async def test_rejections_are_warnings_with_the_reason(json_logs, client):
    body = encode({"job_id": "v", "status": "done"})
    await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    warnings = [r for r in records(json_logs) if r["level"] == "warning"]
    assert [w["event"] for w in warnings] == ["webhook.rejected"]
    assert warnings[0]["code"] == "invalid_payload"
    assert warnings[0]["path"] == "$.status"
