"""GET /metrics: deliveries by outcome and status, rows, latency per route, across workers."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bearer
from tests.support.server import serve
from tests.support.signing import encode, example, signed_headers


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.anyio
async def test_metrics_count_deliveries_rows_and_requests_by_route(client, read_token):
    body = encode(example("video_finished.json"))
    for _ in range(2):
        await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    await client.post("/webhooks/analysis", content=body, headers={"X-Webhook-Signature": "x"})
    bad = encode({"job_id": "v", "status": "nope"})
    await client.post("/webhooks/analysis", content=bad, headers=signed_headers(bad))
    await client.get("/v1/jobs/video_12345", headers=bearer(read_token))
    await client.get("/v1/jobs/other", headers=bearer(read_token))

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(text, "receiver_deliveries_total", outcome="stored", status="200") == 1
    assert value(text, "receiver_deliveries_total", outcome="duplicate", status="200") == 1
    assert value(text, "receiver_deliveries_total", outcome="unauthenticated", status="401") == 1
    assert value(text, "receiver_deliveries_total", outcome="rejected", status="422") == 1
    assert value(text, "receiver_ingest_rows_total") == 13
    route = "/v1/jobs/{job_id}"
    assert value(text, "receiver_http_requests_total", route=route, method="GET",
                 status="200") == 1
    assert value(text, "receiver_http_requests_total", route=route, method="GET",
                 status="404") == 1
    assert value(text, "receiver_http_request_duration_seconds_count", route=route,
                 method="GET") == 2
    assert "receiver_http_requests_in_flight" in text
    assert "receiver_database_errors_total" in text or "receiver_database_errors" in text
    assert "video_12345" not in text


@pytest.mark.slow
def test_metrics_sum_over_all_workers_of_one_instance(tmp_path):
    env = {"RECEIVER_WEBHOOK_SECRETS": "metrics-test-secret-0123"}
    with serve("--workers", "2", cwd=tmp_path, env=env) as server:
        url = server.url + "/webhooks/analysis"

        def send(index: int) -> str:
            document = example("video_failed.json")
            document["job_id"] = f"video_metrics_{index}"
            body = encode(document)
            response = httpx.post(url, content=body,
                                  headers=signed_headers(body, "metrics-test-secret-0123"))
            return str(response.json()["outcome"])

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(send, range(12)))
        assert outcomes == ["stored"] * 12
        # Whichever worker answers, it reports the sum over both workers.
        for _ in range(4):
            text = httpx.get(server.url + "/metrics").text
            assert value(text, "receiver_deliveries_total", outcome="stored",
                         status="200") == 12
