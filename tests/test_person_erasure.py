"""Erasing one face observation (``DELETE /v1/jobs/{job_id}/persons/{item}/{person}``) on
SQLite and PostgreSQL: its row and every raw body of its job lose its biometric fields, nothing
of them is left in any table, the read routes say so, it is audited once, and intake goes on
meanwhile."""

from __future__ import annotations

import asyncio
import copy
import uuid
from dataclasses import replace
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from service.privacy.policy import BiometricPolicy
from service.privacy.reveal import Revealer
from service.vectors import pack_doubles
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.db import fetch_all
from tests.support.signing import encode, signed_headers
from tests.test_privacy_policies import EMBEDDING, THUMBNAIL, deliver, video_with_faces

pytestmark = pytest.mark.anyio

persons_table = models.table_of(models.Person)
ERASED_COLUMNS = ("age", "gender", "face_embedding", "face_thumbnail", "face_embedding_sealed",
                  "face_thumbnail_sealed", "demographics_sealed")
# What of the first face could remain somewhere: its thumbnail's text, its embedding as stored
# (packed doubles) and as sent (JSON numbers).
NEEDLES_TEXT = (THUMBNAIL, repr(EMBEDDING[0]), repr(EMBEDDING[1]))
NEEDLES_BYTES = (pack_doubles(EMBEDDING), *(n.encode() for n in NEEDLES_TEXT))

POLICIES = {
    "default": BiometricPolicy(),
    "store": BiometricPolicy(thumbnails="store", embeddings="store", demographics="store"),
}


async def every_value(settings: Settings) -> list[Any]:
    """Every value of every row of every table (search indexes included), and every stored
    raw body as it reads back (opened with the keyring, decompressed)."""
    database = Database.from_settings(settings)

    def scan(conn: sa.Connection) -> list[Any]:
        values: list[Any] = []
        for name in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.select(sa.text("*")).select_from(sa.table(name))):
                values.extend(row)
        revealer = Revealer(settings.encryption_keys)
        for body in conn.execute(sa.select(models.delivery_bodies)):
            revealed = revealer.body(conn, body)
            if revealed is not None:
                values.append(revealed.data)
        return values

    try:
        async with database.read() as conn:
            return await conn.run_sync(scan)
    finally:
        await database.dispose()


def traces_of_the_face(values: list[Any]) -> list[str]:
    found = []
    for value in values:
        if isinstance(value, memoryview):
            value = bytes(value)
        if isinstance(value, bytes):
            found += [repr(n[:16]) for n in NEEDLES_BYTES if n in value]
        elif isinstance(value, str):
            found += [repr(n[:16]) for n in NEEDLES_TEXT if n in value]
    return found


def first_scene_persons(document: dict[str, Any]) -> list[dict[str, Any]]:
    persons: list[dict[str, Any]] = (
        document["result"]["person_constellation_scenes"][0]["person_ids"])
    return persons


async def audit_records(client: Any, token: str, action: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit", params={"action": action},
                                headers=bearer(token))
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["data"]
    return records


@pytest.mark.parametrize("policy", sorted(POLICIES))
async def test_erasing_a_person_removes_its_face_from_its_row_and_every_raw_body_of_the_job(
        settings: Settings, policy: str) -> None:
    settings = replace(settings, biometric_policy=POLICIES[policy])
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    first = video_with_faces(job_id)
    later = copy.deepcopy(first)
    later["result"]["raw_scenes"][0]["end_seconds"] = 5.0  # an ``updated`` result
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, first)
        await deliver(client, later)
        assert traces_of_the_face(await every_value(settings)), "the scan must see the face"
        erased = await client.delete(f"/v1/jobs/{job_id}/persons/0/0", headers=bearer(admin))
        assert erased.status_code == 204, erased.text
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
        persons = (await client.get(f"/v1/jobs/{job_id}/persons",
                                    headers=bearer(admin))).json()["data"]
        deliveries = (await client.get(f"/v1/deliveries?job_id={job_id}",
                                       headers=bearer(admin))).json()["data"]
        assert [d["outcome"] for d in deliveries] == ["updated", "stored"]
        raws = [await client.get(f"/v1/deliveries/{d['id']}/raw", headers=bearer(admin))
                for d in deliveries]
        records = await audit_records(client, admin, "person_erased")

    erased_row, kept_row = await fetch_all(settings, sa.select(persons_table).order_by(
        persons_table.c.person_index))
    assert erased_row.erased is True
    assert all(getattr(erased_row, column) is None for column in ERASED_COLUMNS)
    assert erased_row.allowlisted is False
    assert erased_row.relative_prominence == 0.5
    assert kept_row.erased is False
    assert (kept_row.face_embedding or kept_row.face_embedding_sealed) is not None

    assert payload.status_code == 200
    assert payload.headers["withheld-biometrics"] == "erased_persons=0/0"
    gone, kept = first_scene_persons(payload.json())
    assert gone == {"allowlisted": False, "relative_prominence": 0.5}
    assert kept["face_embedding"] == [0.2, 0.3, 0.4]

    assert [p["erased"] for p in persons] == [True, False]
    assert all(persons[0][name] is None for name in
               ("age", "gender", "face_embedding", "face_thumbnail"))

    for raw, document in zip(raws, (later, first), strict=True):
        assert raw.status_code == 200
        assert raw.headers["withheld-biometrics"] == "erased_persons=0/0"
        returned = msgspec.json.decode(raw.content)
        expected = copy.deepcopy(document)
        for name in ("age", "gender", "face_embedding", "face_thumbnail"):
            del first_scene_persons(expected)[0][name]
        assert returned == expected  # the other person and the unknown field are intact

    assert traces_of_the_face(await every_value(settings)) == []
    (record,) = records
    assert record["token_name"] == "dpo"
    assert record["job_id"] == job_id
    assert record["counts"] == {"persons": 1, "bodies": 2}


async def test_erasing_a_person_again_is_a_204_that_changes_and_records_nothing(
        settings: Settings) -> None:
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, video_with_faces(job_id))
        url = f"/v1/jobs/{job_id}/persons/0/1"
        assert (await client.delete(url, headers=bearer(admin))).status_code == 204
        bodies = await fetch_all(settings, sa.select(models.delivery_bodies))
        rows = await fetch_all(settings, sa.select(persons_table))
        again = await client.delete(url, headers=bearer(admin))
        records = await audit_records(client, admin, "person_erased")
    assert again.status_code == 204
    assert len(records) == 1
    assert await fetch_all(settings, sa.select(models.delivery_bodies)) == bodies
    assert await fetch_all(settings, sa.select(persons_table)) == rows


async def test_erasing_an_unknown_job_or_person_is_a_404_and_a_read_token_a_403(
        settings: Settings) -> None:
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    admin = await create_token(settings, name="dpo", scope="admin")
    reader = await create_token(settings, name="viewer", scope="read")
    async with serve_in_process(settings) as client:
        await deliver(client, video_with_faces(job_id))
        before = await fetch_all(settings, sa.select(persons_table))
        answers = {
            path: await client.delete(path, headers=bearer(admin))
            for path in (f"/v1/jobs/nope_{job_id}/persons/0/0", f"/v1/jobs/{job_id}/persons/0/2",
                         f"/v1/jobs/{job_id}/persons/1/0", f"/v1/jobs/{job_id}/persons/x/0",
                         f"/v1/jobs/{job_id}/persons/0/-1",
                         f"/v1/jobs/{job_id}/persons/0/99999999999999999999")
        }
        forbidden = await client.delete(f"/v1/jobs/{job_id}/persons/0/0",
                                        headers=bearer(reader))
        anonymous = await client.delete(f"/v1/jobs/{job_id}/persons/0/0")
        records = await audit_records(client, admin, "person_erased")
    for path, answer in answers.items():
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["code"] == "not_found", path
    assert answers[f"/v1/jobs/{job_id}/persons/0/2"].json()["details"] == {
        "job_id": job_id, "item_index": 0, "person_index": 2}
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "forbidden"
    assert anonymous.status_code == 401
    assert records == []
    assert await fetch_all(settings, sa.select(persons_table)) == before


async def test_deliveries_of_other_jobs_keep_arriving_while_persons_are_erased(
        settings: Settings) -> None:
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    crowded = video_with_faces(job_id)
    first_scene_persons(crowded).extend(
        {"age": 30 + i, "gender": "male", "face_embedding": [i, 0.5, 0.25],
         "face_thumbnail": f"{THUMBNAIL}{i}"} for i in range(10))
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, crowded)
        others = [video_with_faces(f"other_{i}_{job_id}") for i in range(24)]

        async def intake() -> list[int]:
            statuses = []
            for start in range(0, len(others), 4):
                answers = await asyncio.gather(*(
                    client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
                    for body in map(encode, others[start:start + 4])))
                statuses += [answer.status_code for answer in answers]
            return statuses

        async def erase() -> list[int]:
            return [(await client.delete(f"/v1/jobs/{job_id}/persons/0/{index}",
                                         headers=bearer(admin))).status_code
                    for index in range(12)]

        delivered, erased = await asyncio.gather(intake(), erase())
        records = await audit_records(client, admin, "person_erased")
    assert delivered == [200] * len(others)
    assert erased == [204] * 12
    assert len(records) == 12
    rows = await fetch_all(settings, sa.select(persons_table.c.erased, models.jobs.c.job_id)
                           .join(models.jobs, models.jobs.c.id == persons_table.c.job_pk))
    assert sorted(r.erased for r in rows if r.job_id == job_id) == [True] * 12
    assert not any(r.erased for r in rows if r.job_id != job_id)
    assert len({r.job_id for r in rows}) == 1 + len(others)


async def test_replay_after_an_erasure_keeps_the_person_erased(settings: Settings) -> None:
    from service.replay import replay

    job_id = f"video_{uuid.uuid4().hex[:8]}"
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, video_with_faces(job_id))
        erased = await client.delete(f"/v1/jobs/{job_id}/persons/0/0", headers=bearer(admin))
        assert erased.status_code == 204
    summary = await replay(settings, job_id=job_id, progress=lambda *_: None)
    assert summary == {"renormalized": 1}
    async with serve_in_process(settings) as client:
        persons = (await client.get(f"/v1/jobs/{job_id}/persons",
                                    headers=bearer(admin))).json()["data"]
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
    assert [p["erased"] for p in persons] == [True, False]
    assert persons[0]["face_embedding"] is None
    assert "erased_persons=0/0" in payload.headers["withheld-biometrics"]
    assert traces_of_the_face(await every_value(settings)) == []
