"""Master key rotation (``keys rotate``) and what the service checks at start-up: a wrong key
refuses to start, a missing one warns, a policy change is recorded once, SQLite zeroes
deleted content under a ``store`` policy. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database, sqlite_pragmas
from service.privacy.keys import parse_keys
from service.privacy.policy import BiometricPolicy
from service.privacy.rotation import KeysNotRotated, rotate
from service.privacy.startup import WrongEncryptionKey, record_policy
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.db import fetch_all
from tests.support.logs import captured_json_logs
from tests.support.server import run_cli
from tests.test_privacy_policies import deliver, video_with_faces
from tests.test_round_trip import assert_json_equal, without_nulls

pytestmark = pytest.mark.anyio


def key_line(key_id: str) -> str:
    return f"{key_id}:" + base64.b64encode(os.urandom(32)).decode("ascii")


OLD = key_line("old-key")
NEW = key_line("new-key")
LOST = key_line("lost-key")


async def deliver_jobs(settings: Settings, count: int) -> dict[str, bytes]:
    """``count`` videos with faces, stored under ``settings``' keys; job id -> body sent."""
    sent = {}
    async with serve_in_process(settings) as client:
        for _ in range(count):
            job_id = f"video_{uuid.uuid4().hex[:8]}"
            sent[job_id] = await deliver(client, video_with_faces(job_id))
    return sent


async def rotate_with(settings: Settings, **options: Any) -> Any:
    assert settings.encryption_keys is not None
    database = Database.from_settings(settings)
    try:
        return await rotate(database, settings.encryption_keys, **options)
    finally:
        await database.dispose()


async def key_ids(settings: Settings) -> list[str]:
    rows = await fetch_all(settings, sa.select(models.data_keys.c.key_id))
    return sorted(row.key_id for row in rows)


async def audit_records(settings: Settings, action: str) -> list[Any]:
    return await fetch_all(settings, sa.select(models.audit_log).where(
        models.audit_log.c.action == action).order_by(models.audit_log.c.id))


async def assert_everything_reads_back(settings: Settings, sent: dict[str, bytes]) -> None:
    admin = await create_token(settings, name=f"dpo-{uuid.uuid4().hex[:6]}", scope="admin")
    async with serve_in_process(settings) as client:
        for job_id, body in sent.items():
            payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
            assert payload.status_code == 200, payload.text
            expected = without_nulls(msgspec.json.decode(body))
            del expected["result"]["an_unknown_field"]
            assert_json_equal(payload.json(), expected)
            deliveries = await client.get("/v1/deliveries", params={"job_id": job_id},
                                          headers=bearer(admin))
            (delivery,) = deliveries.json()["data"]
            raw = await client.get(f"/v1/deliveries/{delivery['id']}/raw",
                                   headers=bearer(admin))
            assert raw.status_code == 200, raw.text
            assert raw.content == body


# --- keys rotate -----------------------------------------------------------------------------

async def test_rotation_rewraps_every_data_key_so_data_reads_once_the_old_key_is_removed(
        settings: Settings) -> None:
    old = replace(settings, encryption_keys=parse_keys(OLD))
    sent = await deliver_jobs(old, 2)
    sealed_before = await fetch_all(settings, sa.select(models.table_of(models.Person).c
                                                        .face_embedding_sealed))
    bodies_before = await fetch_all(settings, sa.select(models.delivery_bodies.c.body))
    both = replace(settings, encryption_keys=parse_keys(f"{NEW},{OLD}"))

    rotation = await rotate_with(both)

    assert rotation.rewrapped == 2
    assert await key_ids(settings) == ["new-key", "new-key"]
    # Envelope encryption: only the wraps changed, not one sealed value or body.
    assert await fetch_all(settings, sa.select(models.table_of(models.Person).c
                                               .face_embedding_sealed)) == sealed_before
    assert await fetch_all(settings, sa.select(models.delivery_bodies.c.body)) == bodies_before
    (record,) = await audit_records(settings, "key_rotation")
    assert record.token_name == "cli"
    assert json.loads(record.counts) == {"rewrapped": 2}
    assert json.loads(record.details) == {"to": "new-key"}
    await assert_everything_reads_back(replace(settings, encryption_keys=parse_keys(NEW)), sent)


async def test_an_interrupted_rotation_resumes_and_a_run_with_nothing_left_changes_nothing(
        settings: Settings) -> None:
    await deliver_jobs(replace(settings, encryption_keys=parse_keys(OLD)), 3)
    both = replace(settings, encryption_keys=parse_keys(f"{NEW},{OLD}"))

    def stop(done: int, total: int) -> None:
        assert (done, total) == (1, 3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rotate_with(both, batch_size=1, progress=stop)
    assert await key_ids(settings) == ["new-key", "old-key", "old-key"]

    assert (await rotate_with(both, batch_size=1)).rewrapped == 2
    assert await key_ids(settings) == ["new-key"] * 3
    keys_after = await fetch_all(settings, sa.select(models.data_keys))

    assert (await rotate_with(both)).rewrapped == 0
    assert await fetch_all(settings, sa.select(models.data_keys)) == keys_after
    records = await audit_records(settings, "key_rotation")
    assert [json.loads(r.counts) for r in records] == [{"rewrapped": 1}, {"rewrapped": 2}]


async def test_rotation_names_an_unconfigured_key_id_and_its_count_and_exits_2(
        settings: Settings, tmp_path: Any) -> None:
    await deliver_jobs(replace(settings, encryption_keys=parse_keys(LOST)), 1)
    await deliver_jobs(replace(settings, encryption_keys=parse_keys(OLD)), 2)

    result = await asyncio.to_thread(
        run_cli, "keys", "rotate", env={"RECEIVER_DATABASE_URL": settings.database_url,
                                        "RECEIVER_ENCRYPTION_KEYS": f"{NEW},{OLD}"},
        cwd=tmp_path, check=False)

    assert result.returncode == 2, result.stderr
    assert "1 data key(s) are wrapped under encryption key 'lost-key'" in result.stderr
    assert "not configured" in result.stderr
    assert NEW.partition(":")[2] not in result.stderr + result.stdout
    # Everything it could rotate, it did.
    assert await key_ids(settings) == ["lost-key", "new-key", "new-key"]
    with pytest.raises(KeysNotRotated, match="lost-key"):
        await rotate_with(replace(settings, encryption_keys=parse_keys(f"{NEW},{OLD}")))


# --- start-up --------------------------------------------------------------------------------

@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    with captured_json_logs("info") as stream:
        yield stream


def events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [record for record in found if record.get("event") == name]


async def test_start_refuses_a_key_that_does_not_open_its_data_keys_and_names_the_key_id(
        settings: Settings, json_logs: io.StringIO) -> None:
    await deliver_jobs(settings, 1)
    impostor = key_line("test-key")  # the same key id, other bytes
    with pytest.raises(WrongEncryptionKey, match="'test-key'") as refused:
        async with serve_in_process(replace(settings, encryption_keys=parse_keys(impostor))):
            pass
    assert impostor.partition(":")[2] not in str(refused.value)
    (logged,) = events(json_logs, "privacy.key_mismatch")
    assert logged["key_id"] == "test-key"
    assert impostor.partition(":")[2] not in json_logs.getvalue()


async def test_start_with_an_unconfigured_key_id_warns_and_reads_of_its_data_answer_409(
        settings: Settings, json_logs: io.StringIO) -> None:
    sent = await deliver_jobs(settings, 1)
    (job_id,) = sent
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(replace(settings, encryption_keys=parse_keys(OLD))) as client:
        assert (await client.get("/readyz")).status_code == 200
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
    assert payload.status_code == 409
    assert payload.json()["details"] == {"key_id": "test-key"}
    (warning,) = events(json_logs, "privacy.keys_missing")
    assert warning["level"] == "warning"
    assert warning["key_ids"] == ["test-key"]
    assert warning["data_keys"] == {"test-key": 1}


async def test_a_fresh_empty_database_starts_and_records_no_policy_change(
        settings: Settings, json_logs: io.StringIO) -> None:
    async with serve_in_process(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
    assert await audit_records(settings, "policy_changed") == []
    assert events(json_logs, "privacy.keys_missing") == []
    state = await fetch_all(settings, sa.select(models.privacy_state))
    assert [(row.name, row.value) for row in state] == [
        ("biometric_policy",
         "thumbnails=encrypt,embeddings=encrypt,demographics=store,raw_bodies=encrypt")]


async def test_a_policy_change_is_recorded_once_even_when_replicas_start_together(
        settings: Settings, json_logs: io.StringIO) -> None:
    await deliver_jobs(settings, 1)  # the first start: an empty database, nothing recorded
    async with serve_in_process(settings):
        pass  # the same policy again: nothing recorded
    assert await audit_records(settings, "policy_changed") == []
    changed = replace(settings, biometric_policy=BiometricPolicy(thumbnails="drop"))
    replicas = [Database.from_settings(changed) for _ in range(4)]
    try:
        won = await asyncio.gather(*(record_policy(database, changed.biometric_policy)
                                     for database in replicas))
    finally:
        for database in replicas:
            await database.dispose()
    assert sorted(won) == [False, False, False, True]
    async with serve_in_process(changed):
        pass
    (record,) = await audit_records(settings, "policy_changed")
    assert record.token_name == "system"
    assert json.loads(record.details) == {
        "old": "thumbnails=encrypt,embeddings=encrypt,demographics=store,raw_bodies=encrypt",
        "new": "thumbnails=drop,embeddings=encrypt,demographics=store,raw_bodies=encrypt",
    }
    assert len(events(json_logs, "privacy.policy_changed")) == 1


async def test_a_first_start_over_existing_data_records_the_policy_it_found_data_under(
        settings: Settings) -> None:
    await deliver_jobs(settings, 1)
    await fetch_all(settings, sa.select(models.privacy_state))  # stored by that first start
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            await conn.execute(sa.delete(models.privacy_state))  # as before this version
    finally:
        await database.dispose()
    async with serve_in_process(settings):
        pass
    (record,) = await audit_records(settings, "policy_changed")
    assert json.loads(record.details)["old"] == "unknown"


async def test_sqlite_zeroes_deleted_content_when_a_policy_stores_biometrics_in_plaintext(
        sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, webhook_secrets=("a-secret-of-16-bytes",),
                        encryption_keys=parse_keys(OLD),
                        biometric_policy=BiometricPolicy(thumbnails="store"))

    def pragma(conn: sa.Connection) -> int:
        value: int = conn.exec_driver_sql("PRAGMA secure_delete").scalar_one()
        return value

    database = Database.from_settings(settings)
    try:
        assert await database.run_read(pragma) == 1  # a reader thread's connection
        async with database.write() as conn:
            assert await conn.run_sync(pragma) == 1  # the engine's
    finally:
        await database.dispose()
    # Some SQLite builds zero deleted content by default: the pragma is asked for regardless.
    assert "PRAGMA secure_delete=ON" in sqlite_pragmas(settings)
    sealed_only = replace(settings, biometric_policy=BiometricPolicy(demographics="encrypt"))
    assert "PRAGMA secure_delete=ON" not in sqlite_pragmas(sealed_only)
