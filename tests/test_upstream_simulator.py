"""The upstream simulator (``results-receiver dev upstream``, service/devtools/upstream.py): the
analysis API's endpoints as the reference describes them, signed webhooks with retries, and
each fault it can be told to cause. A tiny HTTP sink in the test process stands in for the
receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from service.devtools.media import webm_bytes
from tests.support.upstream import TOKEN, simulator

pytestmark = pytest.mark.slow
SECRET = "sink-secret-0123456789abcdef"


class Sink:
    """Records every POST; answers the statuses queued in ``answers`` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with sink.lock:
                    sink.requests.append((time.monotonic(), dict(self.headers), body))
                    status = sink.answers.pop(0) if sink.answers else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/analysis"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} webhooks"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    receiver = Sink()
    yield receiver
    receiver.close()


def _hmac(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _poll_until_done(sim, path: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = sim.http.get(path)
        if response.json().get("status") != "processing":
            return response
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_video_submission_answers_202_with_location_then_the_status_and_a_signed_webhook(
        tmp_path, sink):
    with simulator(tmp_path, "--video-latency-ms", "100", "--seed", "1") as sim:
        response = sim.http.post("/video", content=webm_bytes(3.0),
                                 params={"webhook.url": sink.url, "webhook.secret": SECRET},
                                 headers={"Content-Type": "video/webm",
                                          "Max-Processing-Time": "60"})
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        assert job_id.startswith("video_")
        assert response.headers["location"] == f"/video/{job_id}"
        first = sim.http.get(response.headers["location"]).json()
        assert first == {"job_id": job_id, "status": "processing"}
        done = _poll_until_done(sim, response.headers["location"])
        result = done.json()
        assert result["job_id"] == job_id
        assert result["status"] == "finished"
        assert result["result"]["raw_scenes"][-1]["end_seconds"] == 3.0
        sink.wait_for(1)
        _at, headers, body = sink.requests[0]
        assert body == done.content == sim.result(job_id)
        assert headers["X-Webhook-Signature"] == _hmac(body)
        latency = sim.http.get("/latency", params={"media_type": "video"}).json()
        assert latency == {"media_type": "video", "unit": "second", "latency_ms_per_unit": 100}


def test_image_batch_keeps_external_ids_and_refuses_a_data_uri(tmp_path, sink):
    with simulator(tmp_path, "--image-latency-ms", "10") as sim:
        job_id = sim.submit_images(2, webhook_url=sink.url, secret=SECRET)
        assert job_id.startswith("image_batch_")
        result = _poll_until_done(sim, f"/image/{job_id}").json()
        assert [item["external_id"] for item in result["items"]] == ["img-0", "img-1"]
        refused = sim.http.post("/image", json={"images": [
            {"external_id": "a", "data_base64": "data:image/png;base64,aGVsbG8="}]})
        assert refused.status_code == 422
        assert "data URI" in refused.json()["error"]


def test_submission_limits_of_the_reference_are_enforced(tmp_path):
    with simulator(tmp_path) as sim:
        def video(body: bytes, **headers: str) -> httpx.Response:
            return sim.http.post("/video", content=body,
                                 headers={"Content-Type": "video/webm", **headers})

        assert video(b"not a video at all").status_code == 415
        assert video(webm_bytes(61)).status_code == 422
        assert video(webm_bytes(2), **{"Max-Processing-Time": "-3"}).status_code == 400
        assert video(webm_bytes(60)).status_code == 202
        anonymous = httpx.post(sim.url + "/video", content=webm_bytes(1))
        assert anonymous.status_code == 401


def test_webhook_is_retried_with_backoff_until_a_2xx(tmp_path, sink):
    sink.answers = [500, 503]
    with simulator(tmp_path, "--image-latency-ms", "10", "--webhook-backoff", "0.2") as sim:
        sim.submit_images(webhook_url=sink.url, secret=SECRET)
        sink.wait_for(3)
        times = [at for at, _h, _b in sink.requests]
        assert times[1] - times[0] >= 0.1  # 0.2 s x jitter 0.5..1
        assert times[2] - times[1] >= 0.2  # doubled
        time.sleep(0.5)
        assert len(sink.requests) == 3
        assert sim.stats()["webhooks"] == {"http_500": 1, "http_503": 1, "delivered": 1}


def test_dropped_duplicated_and_corrupted_webhooks(tmp_path, sink):
    with simulator(tmp_path, "--image-latency-ms", "10", "--webhook-attempts", "2",
                   "--webhook-backoff", "0.05") as sim:
        sim.faults(drop=1.0)
        dropped = sim.submit_images(webhook_url=sink.url, secret=SECRET)
        sim.faults(drop=0.0, duplicate=1.0)
        doubled = sim.submit_images(webhook_url=sink.url, secret=SECRET)
        sink.wait_for(2)
        sim.faults(duplicate=0.0, corrupt=1.0)
        sink.answers = [401, 401]
        corrupted = sim.submit_images(webhook_url=sink.url, secret=SECRET)
        sink.wait_for(4)
        time.sleep(0.3)
        job_ids = [json.loads(body)["job_id"] for _at, _h, body in sink.requests]
        assert dropped not in job_ids
        assert job_ids.count(doubled) == 2
        assert job_ids.count(corrupted) == 2  # tried twice, then given up
        for _at, headers, body in sink.requests:
            valid = headers["X-Webhook-Signature"] == _hmac(body)
            assert valid == (json.loads(body)["job_id"] != corrupted)
        stats = sim.stats()["webhooks"]
        assert stats["dropped"] == 1
        assert stats["gave_up"] == 1


def test_reorder_sends_webhooks_in_another_order_than_jobs_finish(tmp_path, sink):
    with simulator(tmp_path, "--image-latency-ms", "1", "--reorder", "1.0",
                   "--seed", "7") as sim:
        submitted = [sim.submit_images(webhook_url=sink.url, secret=SECRET) for _ in range(12)]
        sink.wait_for(12)
        arrived = [json.loads(body)["job_id"] for _at, _h, body in sink.requests]
        assert sorted(arrived) == sorted(submitted)
        assert arrived != submitted


def test_polls_fail_with_5xx_or_429_with_retry_after_when_told(tmp_path):
    with simulator(tmp_path, "--image-latency-ms", "1") as sim:
        job_id = sim.submit_images()
        sim.faults(poll_errors=1.0)
        assert sim.http.get(f"/image/{job_id}").status_code in (500, 502, 503)
        sim.faults(poll_errors=0.0, poll_throttle=1.0, retry_after=7)
        throttled = sim.http.get(f"/image/{job_id}")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "7"
        sim.faults(poll_throttle=0.0)
        assert sim.http.get(f"/image/{job_id}").json()["status"] == "finished"
        assert len(sim.stats()["polls"]) == 3


def test_bad_answers_and_expiry_on_demand(tmp_path):
    with simulator(tmp_path, "--image-latency-ms", "1") as sim:
        job_id = sim.submit_images()
        time.sleep(0.1)
        sim.answers(job_id, "html", "malformed_json", "other_job", "pending")
        html = sim.http.get(f"/image/{job_id}")
        assert html.headers["content-type"].startswith("text/html")
        with pytest.raises(json.JSONDecodeError):
            json.loads(sim.http.get(f"/image/{job_id}").content)
        assert sim.http.get(f"/image/{job_id}").json()["job_id"] != job_id
        assert sim.http.get(f"/image/{job_id}").json()["status"] == "pending"
        assert sim.http.get(f"/image/{job_id}").json()["status"] == "finished"
        sim.expire(job_id)
        assert sim.http.get(f"/image/{job_id}").json()["status"] == "processing"
        assert sim.stats()["expired"] == [job_id]


def test_unreachable_refuses_connections_for_a_while_then_serves_every_job_again(tmp_path):
    with simulator(tmp_path, "--image-latency-ms", "1") as sim:
        job_id = sim.submit_images()
        sim.unreachable(1.5)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sim.url}/image/{job_id}", timeout=2,
                      headers={"Authorization": f"Bearer {TOKEN}"})
        time.sleep(1.6)
        back = httpx.get(f"{sim.url}/image/{job_id}", timeout=5,
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert back.json()["status"] == "finished"
