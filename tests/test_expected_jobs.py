"""``POST /v1/jobs/expected`` and the statuses of awaited jobs (pending, overdue, expired) in
``GET /v1/jobs?status=`` and the job summary, on SQLite and PostgreSQL; reconciliation off
(no upstream), so the latency per unit is the documented default of one second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.reconcile.expected import DEFAULT_LATENCY_MS_PER_UNIT
from tests.conftest import bearer
from tests.support.signing import EXAMPLES, signed_headers

pytestmark = pytest.mark.anyio


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ago(**delta: float) -> str:
    return _iso(datetime.now(UTC) - timedelta(**delta))


async def _expect(client, token, **fields):
    body = {"job_id": "video_1", "kind": "video", "media_seconds": 10, **fields}
    return await client.post("/v1/jobs/expected", json=body, headers=bearer(token))


async def _listed(client, token, status, **params):
    response = await client.get("/v1/jobs", params={"status": status, **params},
                                headers=bearer(token))
    assert response.status_code == 200, response.text
    return [row["job_id"] for row in response.json()["data"]]


async def test_recording_an_expected_job_answers_201_then_200_and_keeps_the_first(
        client, admin_token, read_token):
    submitted = datetime.now(UTC).replace(microsecond=0)
    first = await _expect(client, admin_token, submitted_at=_iso(submitted),
                          max_processing_time=3600)
    assert first.status_code == 201, first.text
    summary = first.json()
    assert summary["status"] == "pending"
    assert summary["kind"] == "video"
    assert summary["received_at"] is None
    assert summary["deliveries"] == 0
    assert summary["reconciled"] is None
    assert summary["poll_attempts"] == 0
    expected_at = submitted + timedelta(
        seconds=10 * DEFAULT_LATENCY_MS_PER_UNIT / 1000 * 2 + 300)
    assert datetime.fromisoformat(summary["expected_at"]) == expected_at
    assert datetime.fromisoformat(summary["expires_at"]) == submitted + timedelta(hours=1)
    assert summary["links"]["self"] == "/v1/jobs/video_1"

    again = await _expect(client, admin_token, media_seconds=59, max_processing_time=5)
    assert again.status_code == 200
    assert again.json()["expected_at"] == summary["expected_at"]
    assert again.json()["expires_at"] == summary["expires_at"]
    read = await client.get("/v1/jobs/video_1", headers=bearer(read_token))
    assert read.json() == {**summary}
    # Still awaited: no payload, no rows.
    assert (await client.get("/v1/jobs/video_1/payload",
                             headers=bearer(read_token))).status_code == 404
    assert (await client.get("/v1/jobs/video_1/scenes",
                             headers=bearer(read_token))).status_code == 404


async def test_awaited_jobs_are_pending_then_overdue_then_expired_and_listed_by_status(
        client, admin_token, read_token):
    await _expect(client, admin_token, job_id="video_pending")
    await _expect(client, admin_token, job_id="video_overdue", submitted_at=_ago(hours=1))
    await _expect(client, admin_token, job_id="image_batch_expired", kind="image_batch",
                  media_seconds=None, image_count=3, submitted_at=_ago(hours=2),
                  max_processing_time=600)
    assert await _listed(client, read_token, "pending") == ["video_pending"]
    assert await _listed(client, read_token, "overdue") == ["video_overdue"]
    assert await _listed(client, read_token, "expired") == ["image_batch_expired"]
    assert await _listed(client, read_token, "overdue", kind="image_batch") == []
    # Jobs without a result are listed by their status only.
    everything = await client.get("/v1/jobs", headers=bearer(read_token))
    assert everything.json()["data"] == []
    expired = (await client.get("/v1/jobs/image_batch_expired",
                                headers=bearer(read_token))).json()
    assert expired["status"] == "expired"
    assert expired["kind"] == "image_batch"


async def test_awaited_listing_pages_newest_submission_first_with_its_own_cursor(
        client, admin_token, read_token):
    for minutes in range(5):
        await _expect(client, admin_token, job_id=f"video_{minutes}",
                      submitted_at=_ago(hours=1, minutes=minutes))
    seen, cursor = [], None
    while True:
        params = {"status": "overdue", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/jobs", params=params, headers=bearer(read_token))).json()
        seen += [row["job_id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        wrong = await client.get("/v1/jobs", params={"cursor": cursor},
                                 headers=bearer(read_token))
        assert wrong.status_code == 422
        assert wrong.json()["details"]["parameter"] == "cursor"
    assert seen == [f"video_{m}" for m in range(5)]
    after = await _listed(client, read_token, "overdue", received_after=_ago(hours=1,
                                                                             minutes=2.5))
    assert after == ["video_0", "video_1", "video_2"]


async def test_a_stored_job_is_never_downgraded_by_an_expectation(client, admin_token,
                                                                   read_token):
    body = (EXAMPLES / "video_finished.json").read_bytes()
    stored = await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    assert stored.json()["outcome"] == "stored"
    response = await _expect(client, admin_token, job_id="video_12345",
                             submitted_at=_ago(hours=3), max_processing_time=60)
    assert response.status_code == 201
    summary = response.json()
    assert summary["status"] == "finished"
    assert summary["reconciled"] == "webhook"
    assert summary["deliveries"] == 1
    assert summary["expected_at"] is not None
    for status in ("pending", "overdue", "expired"):
        assert await _listed(client, read_token, status) == []
    listed = (await client.get("/v1/jobs", headers=bearer(read_token))).json()["data"]
    assert [(row["job_id"], row["status"], row["reconciled"]) for row in listed] == [
        ("video_12345", "finished", "webhook")]
    assert listed[0]["expected_at"] == summary["expected_at"]


async def test_an_overdue_job_whose_webhook_arrives_is_stored_as_arrived_by_webhook(
        client, admin_token, read_token):
    await _expect(client, admin_token, job_id="video_12345", submitted_at=_ago(hours=1))
    assert await _listed(client, read_token, "overdue") == ["video_12345"]
    body = (EXAMPLES / "video_finished.json").read_bytes()
    await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    assert await _listed(client, read_token, "overdue") == []
    summary = (await client.get("/v1/jobs/video_12345", headers=bearer(read_token))).json()
    assert (summary["status"], summary["reconciled"], summary["poll_attempts"]) == (
        "finished", "webhook", 0)


@pytest.mark.parametrize(("fields", "parameter"), [
    ({"job_id": ""}, "job_id"),
    ({"job_id": None}, "job_id"),
    ({"job_id": "x" * 513}, "job_id"),
    ({"kind": "audio"}, "kind"),
    ({"media_seconds": 0}, "media_seconds"),
    ({"media_seconds": "10"}, "media_seconds"),
    ({"image_count": 2}, "image_count"),
    ({"kind": "image_batch"}, "media_seconds"),
    ({"kind": "image_batch", "media_seconds": None, "image_count": 0}, "image_count"),
    ({"max_processing_time": -1}, "max_processing_time"),
    ({"max_processing_time": 1.5}, "max_processing_time"),
    ({"submitted_at": "yesterday"}, "submitted_at"),
    ({"webhook": {}}, "webhook"),
])
async def test_a_bad_field_is_a_422_naming_it(client, admin_token, fields, parameter):
    response = await _expect(client, admin_token, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_parameter"
    assert response.json()["details"]["parameter"] == parameter


async def test_recording_needs_json_and_an_admin_token(client, admin_token, read_token):
    not_json = await client.post("/v1/jobs/expected", content=b"{job_id",
                                 headers=bearer(admin_token))
    assert not_json.status_code == 400
    assert not_json.json()["code"] == "invalid_json"
    assert (await _expect(client, read_token)).status_code == 403
    anonymous = await client.post("/v1/jobs/expected", json={"job_id": "x"})
    assert anonymous.status_code == 401
    too_big = await client.post("/v1/jobs/expected", content=b" " * 20_000,
                                headers=bearer(admin_token))
    assert too_big.status_code == 413


async def test_deleting_a_job_removes_its_expectation(client, admin_token, read_token):
    await _expect(client, admin_token, job_id="video_gone", submitted_at=_ago(hours=1))
    deleted = await client.delete("/v1/jobs/video_gone", headers=bearer(admin_token))
    assert deleted.status_code == 204
    assert (await client.get("/v1/jobs/video_gone",
                             headers=bearer(read_token))).status_code == 404
    assert await _listed(client, read_token, "overdue") == []
    again = await client.delete("/v1/jobs/video_gone", headers=bearer(admin_token))
    assert again.status_code == 404
