"""The audit log on SQLite and PostgreSQL: job erasures and raw reads are recorded in the
transaction of the action, with the token's name; ``GET /v1/audit`` lists them like every
other listing; no record ever holds a body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from service.privacy import audit
from service.vocabulary import AUDIT_ACTIONS
from tests.conftest import bearer
from tests.support.db import fetch_all
from tests.support.signing import deliver, example, signed_headers

pytestmark = pytest.mark.anyio

MARKER = "AUDIT-MARKER-q7Zx-never-in-a-record"
VIDEO_ROWS = 13  # entity rows of the video example: see test_deleting_a_job_leaves_nothing_behind



async def audit_page(client, token: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/audit", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def every_record(client, token: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = (await audit_page(client, token, limit=500))["data"]
    return records


async def execute(settings: Settings, *statements: str) -> None:
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await database.dispose()


async def refuse_audit_inserts(settings: Settings) -> None:
    """A database that refuses to write audit records (a real error, raised by a trigger)."""
    if settings.dialect == "sqlite":
        await execute(settings, "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log "
                                "BEGIN SELECT RAISE(ABORT, 'audit refused'); END")
        return
    await execute(
        settings,
        "CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
        "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_refused()",
    )


# --- job erasure -------------------------------------------------------------------------------

async def test_a_delete_records_one_job_erased_with_the_token_name_and_what_it_removed(
        client, admin_token):
    await deliver(client, example("video_finished.json"))
    await deliver(client, example("video_finished.json"))  # a duplicate: a second delivery
    before = datetime.now(UTC)
    response = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert response.status_code == 204

    records = await every_record(client, admin_token)
    assert len(records) == 1
    record = records[0]
    assert record["action"] == "job_erased"
    assert record["token_name"] == "admin"
    assert record["job_id"] == "video_12345"
    assert record["counts"] == {"jobs": 1, "deliveries": 2, "rows": VIDEO_ROWS}
    assert record["details"] == {}
    at = datetime.fromisoformat(record["at"])
    assert at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= at <= datetime.now(UTC) + timedelta(seconds=5)


async def test_a_second_delete_of_the_same_job_is_a_404_and_records_nothing(client, admin_token):
    await deliver(client, example("video_finished.json"))
    first = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert first.status_code == 204
    again = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert again.status_code == 404
    never = await client.delete("/v1/jobs/no_such_job", headers=bearer(admin_token))
    assert never.status_code == 404
    assert [r["action"] for r in await every_record(client, admin_token)] == ["job_erased"]


async def test_a_delete_whose_record_cannot_be_written_is_a_503_and_deletes_nothing(
        client, settings, admin_token, read_token):
    await deliver(client, example("video_finished.json"))
    await refuse_audit_inserts(settings)
    response = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
    still = await client.get("/v1/jobs/video_12345", headers=bearer(read_token))
    assert still.status_code == 200
    assert await every_record(client, admin_token) == []


# --- raw reads -----------------------------------------------------------------------------------

async def test_a_raw_read_returns_the_exact_bytes_and_records_raw_read_naming_the_delivery(
        client, admin_token):
    body = b'{"job_id": "video_raw", "status": "failed",  "error": "x"}\n'
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    delivery_id = response.json()["delivery_id"]
    raw = await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
    assert raw.status_code == 200
    assert raw.content == body

    [record] = await every_record(client, admin_token)
    assert record["action"] == "raw_read"
    assert record["token_name"] == "admin"
    assert record["job_id"] == "video_raw"
    assert record["details"] == {"delivery_id": str(delivery_id)}
    assert record["counts"] == {}


async def test_a_raw_read_of_an_unreadable_body_records_no_job(client, admin_token):
    body = b"\x00\xff not json at all"
    await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    [delivery] = (await client.get("/v1/deliveries", headers=bearer(admin_token))).json()["data"]
    raw = await client.get(f"/v1/deliveries/{delivery['id']}/raw", headers=bearer(admin_token))
    assert raw.content == body
    [record] = await every_record(client, admin_token)
    assert (record["job_id"], record["details"]) == (None, {"delivery_id": str(delivery["id"])})


async def test_raw_reads_that_are_refused_or_not_found_record_nothing(client, admin_token,
                                                                      read_token):
    delivery_id = await deliver(client, example("video_failed.json"))
    as_reader = await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(read_token))
    assert as_reader.status_code == 403
    anonymous = await client.get(f"/v1/deliveries/{delivery_id}/raw")
    assert anonymous.status_code == 401
    missing = await client.get("/v1/deliveries/999999/raw", headers=bearer(admin_token))
    assert missing.status_code == 404
    assert await every_record(client, admin_token) == []


async def test_a_raw_read_whose_record_cannot_be_written_is_a_503_without_the_bytes(
        client, settings, admin_token):
    delivery_id = await deliver(client, example("video_failed.json"))
    await refuse_audit_inserts(settings)
    raw = await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
    assert raw.status_code == 503, raw.text
    assert raw.json()["code"] == "unavailable"
    assert raw.headers["retry-after"] == "5"


async def test_no_record_holds_any_byte_of_a_delivered_body(client, settings, admin_token):
    document = example("video_finished.json")
    document["result"]["ocr_results"][0]["full_text"] = MARKER
    document["unknown_field"] = MARKER
    delivery_id = await deliver(client, document)
    raw = await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
    assert MARKER.encode() in raw.content
    deleted = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert deleted.status_code == 204

    listing = await client.get("/v1/audit", headers=bearer(admin_token))
    assert [r["action"] for r in listing.json()["data"]] == ["job_erased", "raw_read"]
    assert MARKER not in listing.text
    stored = await fetch_all(settings, sa.select(models.audit_log))
    assert len(stored) == 2
    assert all(MARKER not in str(value) for row in stored for value in row)


# --- the listing ---------------------------------------------------------------------------------

async def test_the_audit_log_filters_by_action(client, admin_token):
    delivery_id = await deliver(client, example("video_finished.json"))
    await deliver(client, example("image_batch_finished.json"))
    for _ in range(2):
        await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
    await client.delete("/v1/jobs/image_batch_123", headers=bearer(admin_token))

    erased = (await audit_page(client, admin_token, action="job_erased"))["data"]
    assert [(r["action"], r["job_id"]) for r in erased] == [("job_erased", "image_batch_123")]
    reads = (await audit_page(client, admin_token, action="raw_read"))["data"]
    assert [(r["action"], r["job_id"]) for r in reads] == [("raw_read", "video_12345")] * 2
    assert (await audit_page(client, admin_token, action="purge"))["data"] == []
    assert len(await every_record(client, admin_token)) == 3


async def test_cursor_pagination_returns_every_record_once_newest_first(client, admin_token):
    delivery_id = await deliver(client, example("video_failed.json"))
    for _ in range(5):
        raw = await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
        assert raw.status_code == 200
    seen: list[int] = []
    pages = 0
    cursor = ""  # an empty cursor is the first page
    while True:
        page = await audit_page(client, admin_token, limit=2, cursor=cursor)
        pages += 1
        seen += [r["id"] for r in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert len(seen) == 5
    assert seen == sorted(set(seen), reverse=True)


async def test_the_audit_log_needs_an_admin_token(client, read_token):
    anonymous = await client.get("/v1/audit")
    assert anonymous.status_code == 401
    as_reader = await client.get("/v1/audit", headers=bearer(read_token))
    assert as_reader.status_code == 403
    assert as_reader.json()["code"] == "forbidden"


@pytest.mark.parametrize(("params", "parameter"), [
    ({"action": "erased"}, "action"),
    ({"action": "JOB_ERASED"}, "action"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
])
async def test_a_bad_parameter_is_a_422_naming_it(client, admin_token, params, parameter):
    response = await client.get("/v1/audit", params=params, headers=bearer(admin_token))
    assert response.status_code == 422, response.text
    assert response.json()["details"]["parameter"] == parameter


async def test_a_cursor_of_another_listing_is_a_422(client, admin_token):
    for _ in range(2):
        await deliver(client, {**example("video_failed.json"), "job_id": f"j{_}"})
    deliveries = await client.get("/v1/deliveries", params={"limit": 1},
                                  headers=bearer(admin_token))
    other = deliveries.json()["next_cursor"]
    assert other
    response = await client.get("/v1/audit", params={"cursor": other},
                                headers=bearer(admin_token))
    assert response.status_code == 422
    assert response.json()["details"]["parameter"] == "cursor"


# --- the recording API ---------------------------------------------------------------------------

async def test_record_on_a_sync_connection_commits_with_its_transaction(settings, client,
                                                                        admin_token):
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            kept = await conn.run_sync(audit.record, audit.AuditEntry(
                "key_rotation", audit.CLI, details={"key_id": "k2"}, counts={"jobs": 7}))

        async def failing_action() -> None:
            async with database.write() as conn:
                await conn.run_sync(audit.record, audit.AuditEntry("purge", audit.SYSTEM))
                raise RuntimeError("the action failed")

        with pytest.raises(RuntimeError):
            await failing_action()
    finally:
        await database.dispose()
    [record] = await every_record(client, admin_token)
    assert record["id"] == kept
    assert (record["action"], record["token_name"], record["job_id"]) == (
        "key_rotation", "cli", None)
    assert (record["counts"], record["details"]) == ({"jobs": 7}, {"key_id": "k2"})


@pytest.mark.parametrize("changes", [
    {"action": "read_everything"},
    {"token_name": ""},
    {"counts": {"rows": "3"}},
    {"counts": {"rows": True}},
    {"details": {"body": "x" * 201}},
    {"details": {"embedding": [0.1, 0.2]}},
])
def test_an_entry_refuses_anything_but_known_actions_integers_and_short_strings(changes):
    entry: dict[str, Any] = {"action": "purge", "token_name": "system", **changes}
    with pytest.raises(ValueError, match="audit"):
        audit.AuditEntry(**entry)


def test_every_action_of_the_vocabulary_is_accepted():
    for action in AUDIT_ACTIONS:
        assert audit.AuditEntry(action, "system").action == action


async def test_record_ids_increase_and_are_not_given_again_after_the_newest_is_removed(
        client, settings, admin_token):
    delivery_id = await deliver(client, example("video_failed.json"))
    for _ in range(3):
        await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
    ids = [r["id"] for r in reversed(await every_record(client, admin_token))]
    assert ids == sorted(set(ids))
    # The API never deletes a record; a hand-made deletion still frees no id.
    await execute(settings, f"DELETE FROM audit_log WHERE id = {ids[-1]}")  # noqa: S608
    await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
    newest = (await every_record(client, admin_token))[0]["id"]
    assert newest > ids[-1]
