"""``privacy apply``: data stored before the privacy schema (revision 0004, plaintext persons and
bodies as received) moved under the policy, on SQLite and PostgreSQL; resumable, idempotent,
and reversible to a ``store`` policy; reads return the original content throughout."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import sqlalchemy as sa
import zstandard
from sqlalchemy.ext.asyncio import create_async_engine

from service import models
from service.config import Settings, async_url
from service.db import Database
from service.migrations import upgrade
from service.privacy.apply import Applied, DataNotMoved, apply_policy
from service.privacy.policy import BiometricPolicy
from service.vectors import pack_doubles
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.db import fetch_all
from tests.support.keys import TEST_KEY_LINE, TEST_KEYRING
from tests.support.postgres import execute_autocommit
from tests.support.server import run_cli
from tests.support.signing import SECRET
from tests.test_round_trip import assert_json_equal, without_nulls

pytestmark = pytest.mark.anyio

persons_table = models.table_of(models.Person)
EMBEDDING = [0.25, -0.5, 0.125]
THUMBNAIL = base64.b64encode(b"\xff\xd8\xff\xe0 an old face thumbnail").decode()
NOT_JSON = b"<html>not a result</html>"


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema yet, to bring to 0004, fill, then upgrade."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    name = "a_" + uuid.uuid4().hex[:12]
    execute_autocommit(admin_url, f"CREATE DATABASE {name}")
    yield f"{admin_url.rpartition('/')[0]}/{name}"
    execute_autocommit(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def image_batch(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id, "status": "finished",
        "items": [{"external_id": "img-1", "result": {"person_ids": [
            {"age": 33.0, "gender": "male", "face_embedding": EMBEDDING,
             "face_thumbnail": THUMBNAIL, "allowlisted": False, "relative_prominence": 0.75},
            {"gender": "unidentified", "face_embedding": [0.5, 0.25]},
        ]}}],
    }


def _store_as_0004(connection: sa.Connection, job_ids: list[str]) -> dict[str, bytes]:
    """Jobs as ingest wrote them before the privacy schema: plaintext biometric columns and
    each raw body as received; plus a rejected body that is not JSON."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sent = {}
    for pk, job_id in enumerate(job_ids, start=1):
        document = image_batch(job_id)
        body = msgspec.json.encode(document)
        sent[job_id] = body
        sha = hashlib.sha256(body).hexdigest()
        connection.execute(sa.text(
            "INSERT INTO jobs (id, job_id, kind, status, content_sha256, n_items, received_at, "
            "updated_at, scene_count, activity_count, section_count, segment_count, ocr_count, "
            "person_scene_count, person_count, tag_count, item_count) VALUES (:pk, :job_id, "
            "'image_batch', 'finished', :sha, 1, :now, :now, 0, 0, 0, 0, 0, 0, 2, 0, 1)"),
            {"pk": pk, "job_id": job_id, "sha": sha, "now": now})
        connection.execute(sa.text(
            "INSERT INTO media_items (job_pk, item_index, media_type, external_id, has_result, "
            "n_persons) VALUES (:pk, 0, 'image', 'img-1', true, 2)"), {"pk": pk})
        for index, person in enumerate(document["items"][0]["result"]["person_ids"]):
            connection.execute(sa.text(
                "INSERT INTO persons (job_pk, item_index, person_index, age, gender, "
                "face_embedding, face_thumbnail, allowlisted, relative_prominence) VALUES "
                "(:pk, 0, :index, :age, :gender, :embedding, :thumbnail, :allowlisted, "
                ":prominence)"),
                {"pk": pk, "index": index, "age": person.get("age"),
                 "gender": person.get("gender"),
                 "embedding": pack_doubles(person["face_embedding"]),
                 "thumbnail": person.get("face_thumbnail"),
                 "allowlisted": person.get("allowlisted"),
                 "prominence": person.get("relative_prominence")})
        _insert_delivery(connection, pk, job_id, body, "stored", now)
    _insert_delivery(connection, len(job_ids) + 1, None, NOT_JSON, "rejected", now)
    connection.commit()
    return sent


def _insert_delivery(connection: sa.Connection, delivery_id: int, job_id: str | None,
                     body: bytes, outcome: str, now: datetime) -> None:
    sha = hashlib.sha256(body).hexdigest()
    connection.execute(sa.text("INSERT INTO delivery_bodies (sha256, body) VALUES (:sha, :b)"),
                       {"sha": sha, "b": body})
    connection.execute(sa.text(
        "INSERT INTO deliveries (id, job_id, received_at, outcome, signature_scheme, size, "
        "body_sha256) VALUES (:id, :job_id, :now, :outcome, 'hmac', :size, :sha)"),
        {"id": delivery_id, "job_id": job_id, "now": now, "outcome": outcome,
         "size": len(body), "sha": sha})


async def old_database(url: str, jobs: int) -> dict[str, bytes]:
    """Fill ``url`` at revision 0004 and upgrade it to head; job id -> body sent."""
    await anyio.to_thread.run_sync(upgrade, url, "0004")
    job_ids = [f"old_batch_{n}" for n in range(jobs)]
    engine = create_async_engine(async_url(url), poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            sent: dict[str, bytes] = await conn.run_sync(_store_as_0004, job_ids)
    finally:
        await engine.dispose()
    await anyio.to_thread.run_sync(upgrade, url)
    return sent


def settings_for(url: str, policy: BiometricPolicy | None = None) -> Settings:
    return Settings(database_url=url, webhook_secrets=(SECRET,), encryption_keys=TEST_KEYRING,
                    biometric_policy=policy or BiometricPolicy(), log_format="json")


async def apply(settings: Settings, **options: Any) -> Applied:
    database = Database.from_settings(settings, secure_delete=True)
    try:
        return await apply_policy(database, settings.biometric_policy,
                                  settings.encryption_keys, **options)
    finally:
        await database.dispose()


async def snapshot(settings: Settings) -> dict[str, list[Any]]:
    tables = {"persons": persons_table, "bodies": models.delivery_bodies,
              "keys": models.data_keys, "jobs": models.jobs}
    return {name: await fetch_all(settings, sa.select(table).order_by(*table.primary_key))
            for name, table in tables.items()}


async def assert_reads_return_the_original(settings: Settings, sent: dict[str, bytes],
                                           *, dropped: tuple[str, ...] = ()) -> None:
    admin = await create_token(settings, name=f"dpo-{uuid.uuid4().hex[:6]}", scope="admin")
    async with serve_in_process(settings) as client:
        for job_id, body in sent.items():
            expected = without_nulls(msgspec.json.decode(body))
            for person in expected["items"][0]["result"]["person_ids"]:
                for name in dropped:
                    person.pop(name, None)
            payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
            assert payload.status_code == 200, payload.text
            assert_json_equal(payload.json(), expected)
            listing = await client.get("/v1/deliveries", params={"job_id": job_id},
                                       headers=bearer(admin))
            (delivery,) = listing.json()["data"]
            raw = await client.get(f"/v1/deliveries/{delivery['id']}/raw",
                                   headers=bearer(admin))
            assert raw.status_code == 200, raw.text
            if dropped:
                assert_json_equal(msgspec.json.decode(raw.content), expected)
            else:
                assert raw.content == body
        rejected = await client.get("/v1/deliveries", params={"outcome": "rejected"},
                                    headers=bearer(admin))
        (delivery,) = rejected.json()["data"]
        raw = await client.get(f"/v1/deliveries/{delivery['id']}/raw", headers=bearer(admin))
        assert raw.content == NOT_JSON


async def test_apply_seals_plaintext_stored_before_the_privacy_schema_and_reads_stay_equal(
        old_database_url: str) -> None:
    sent = await old_database(old_database_url, 2)
    settings = settings_for(old_database_url)

    applied = await apply(settings)

    assert (applied.persons, applied.jobs_keyed, applied.bodies) == (4, 2, 3)
    rows = (await snapshot(settings))["persons"]
    for row in rows:
        assert row.face_embedding is None
        assert row.face_embedding_sealed is not None
        assert row.gender is not None  # demographics: stored by the default policy
        assert row.demographics_sealed is None
    assert [r.face_thumbnail_sealed is not None for r in rows] == [True, False] * 2
    assert all(r.face_thumbnail is None for r in rows)
    jobs = (await snapshot(settings))["jobs"]
    assert all(job.data_key_id is not None for job in jobs)
    for stored in (await snapshot(settings))["bodies"]:
        assert stored.codec == "zstd"
        assert stored.data_key_id is not None
        assert THUMBNAIL.encode() not in stored.body
        assert NOT_JSON not in stored.body
    (record,) = await fetch_all(settings, sa.select(models.audit_log).where(
        models.audit_log.c.token_name == "cli"))
    assert record.action == "policy_changed"
    assert json.loads(record.counts) == {"persons": 4, "jobs_keyed": 2, "bodies": 3}
    assert json.loads(record.details) == {"applied": "true", **settings.biometric_policy
                                          .describe()}
    await assert_reads_return_the_original(settings, sent)


async def test_an_interrupted_apply_resumes_and_a_second_run_changes_nothing(
        old_database_url: str) -> None:
    sent = await old_database(old_database_url, 3)
    settings = settings_for(old_database_url)

    def stop(phase: str, done: int) -> None:
        assert (phase, done) == ("persons", 2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await apply(settings, batch_size=1, progress=stop)
    rows = (await snapshot(settings))["persons"]
    assert [r.face_embedding_sealed is not None for r in rows] == [True, True] + [False] * 4

    resumed = await apply(settings, batch_size=1)
    assert (resumed.persons, resumed.bodies) == (4, 4)
    before = await snapshot(settings)

    again = await apply(settings)
    assert (again.persons, again.jobs_keyed, again.bodies) == (0, 0, 0)
    assert await snapshot(settings) == before
    records = await fetch_all(settings, sa.select(models.audit_log.c.counts).where(
        models.audit_log.c.token_name == "cli").order_by(models.audit_log.c.id))
    assert [json.loads(r.counts)["persons"] for r in records] == [2, 4]
    await assert_reads_return_the_original(settings, sent)


async def test_apply_moves_back_to_plaintext_under_a_store_policy(old_database_url: str) -> None:
    sent = await old_database(old_database_url, 1)
    await apply(settings_for(old_database_url))
    store = settings_for(old_database_url, BiometricPolicy(
        thumbnails="store", embeddings="store", demographics="store"))

    moved = await apply(store)

    assert (moved.persons, moved.bodies) == (2, 2)
    state = await snapshot(store)
    assert [r.face_embedding for r in state["persons"]] == [
        pack_doubles(EMBEDDING), pack_doubles([0.5, 0.25])]
    assert state["persons"][0].face_thumbnail == THUMBNAIL
    assert all(r.face_embedding_sealed is None and r.face_thumbnail_sealed is None
               for r in state["persons"])
    for stored in state["bodies"]:
        assert stored.data_key_id is None
        assert stored.codec == "zstd"
    assert any(THUMBNAIL.encode() in zstandard.ZstdDecompressor().decompress(b.body)
               for b in state["bodies"])
    await assert_reads_return_the_original(store, sent)


async def test_apply_under_a_drop_policy_removes_the_field_from_rows_and_bodies(
        old_database_url: str) -> None:
    sent = await old_database(old_database_url, 1)
    await apply(settings_for(old_database_url))  # sealed first: drop removes sealed values too
    drop = settings_for(old_database_url, BiometricPolicy(thumbnails="drop"))

    moved = await apply(drop)

    assert moved.persons == 1
    state = await snapshot(drop)
    assert all(r.face_thumbnail is None and r.face_thumbnail_sealed is None
               for r in state["persons"])
    assert state["jobs"][0].withheld == "face_thumbnail"
    assert await apply(drop) == Applied()
    await assert_reads_return_the_original(drop, sent, dropped=("face_thumbnail",))
    admin = await create_token(drop, name="dpo-header", scope="admin")
    async with serve_in_process(drop) as client:
        (job_id,) = sent
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
    assert payload.headers["withheld-biometrics"] == "fields=face_thumbnail"


async def test_apply_names_the_key_of_data_it_cannot_read_and_exits_with_an_error(
        old_database_url: str) -> None:
    await old_database(old_database_url, 1)
    await apply(settings_for(old_database_url))
    other = replace(settings_for(old_database_url, BiometricPolicy(
        thumbnails="store", embeddings="store")), encryption_keys=None)

    with pytest.raises(DataNotMoved, match="'test-key'"):
        await apply(other)


async def test_privacy_apply_on_the_command_line_shows_progress_and_what_moved(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    sent = await old_database(url, 1)
    env = {"RECEIVER_DATABASE_URL": url, "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE}

    first = await anyio.to_thread.run_sync(lambda: run_cli("privacy", "apply", env=env,
                                                           cwd=tmp_path))
    second = await anyio.to_thread.run_sync(lambda: run_cli("privacy", "apply", env=env,
                                                            cwd=tmp_path))

    assert first.stdout.strip() == "persons=2 jobs_keyed=1 bodies=2"
    assert "[persons] 2 moved" in first.stderr
    assert "[bodies] 2 moved" in first.stderr
    assert second.stdout.strip() == "persons=0 jobs_keyed=0 bodies=0"
    assert TEST_KEY_LINE.partition(":")[2] not in first.stderr + first.stdout
    await assert_reads_return_the_original(settings_for(url), sent)
