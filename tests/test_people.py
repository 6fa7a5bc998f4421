"""People across jobs on SQLite and PostgreSQL: the assigner (one leader, stable ids, faces
of other dimensions apart), re-clustering, and the routes: list, detail, pagination, 403/404,
and the erasure of every face of a person with one audit record."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from service.faces import people_store
from service.faces.people import PeopleAssigner, leader_for
from service.faces.people_store import Member
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.db import fetch_all
from tests.test_privacy_policies import deliver

pytestmark = pytest.mark.anyio

persons_table = models.table_of(models.Person)
ALICE = ([1.0, 0.05, 0.0], [0.97, 0.0, 0.1], [0.95, 0.1, -0.05])
BOB = ([0.0, 1.0, 0.05], [0.1, 0.96, 0.0])


def video(job_id: str, embeddings: Sequence[Sequence[float]]) -> dict[str, Any]:
    return {"job_id": job_id, "status": "finished", "result": {
        "person_constellation_scenes": [{
            "time_segment": {"start_seconds": 3, "end_seconds": 7.5},
            "person_ids": [{"age": 30.0, "gender": "female", "face_embedding": list(e),
                            "face_thumbnail": "dGh1bWI="} for e in embeddings]}]}}


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database.from_settings(settings)
    yield db
    await db.dispose()


async def faces_of(settings: Settings, job_id: str) -> list[tuple[int, int, int]]:
    rows = await fetch_all(settings, sa.select(
        persons_table.c.job_pk, persons_table.c.item_index, persons_table.c.person_index)
        .join(models.jobs, models.jobs.c.id == persons_table.c.job_pk)
        .where(models.jobs.c.job_id == job_id).order_by(persons_table.c.person_index))
    return [(r[0], r[1], r[2]) for r in rows]


async def membership(settings: Settings) -> dict[tuple[int, int, int], int]:
    return {(r.job_pk, r.item_index, r.person_index): r.person_id
            for r in await fetch_all(settings, sa.select(models.people_members))}


async def add(assigner: PeopleAssigner, settings: Settings, job_id: str,
              embeddings: Sequence[Sequence[float]]) -> list[int]:
    faces = await faces_of(settings, job_id)
    assigned = await assigner.on_faces_added(faces, len(embeddings[0]),
                                             np.array(embeddings, dtype=np.float32))
    assert assigned is not None
    return [a.person_id for a in assigned]


async def people_jobs(settings: Settings, tmp_path: Path, database: Database,
                      ) -> tuple[PeopleAssigner, str, dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    jobs = {"first": f"video_a_{tag}", "second": f"video_b_{tag}"}
    assigner = PeopleAssigner(database, leader_for(database, tmp_path))
    await assigner.load({})
    return assigner, tag, jobs


async def test_faces_of_one_person_across_jobs_become_one_person_whose_id_stays(
        settings: Settings, database: Database, tmp_path: Path) -> None:
    assigner, tag, jobs = await people_jobs(settings, tmp_path, database)
    async with serve_in_process(settings) as client:
        await deliver(client, video(jobs["first"], [ALICE[0], BOB[0]]))
        await deliver(client, video(jobs["second"], [BOB[1], ALICE[1]]))
        await deliver(client, video(f"video_c_{tag}", [ALICE[2]]))
        await deliver(client, video(f"video_d_{tag}", [[1.0, 0.05, 0.0, 0.0]]))
    try:
        alice, bob = await add(assigner, settings, jobs["first"], [ALICE[0], BOB[0]])
        assert alice != bob
        assert await add(assigner, settings, jobs["second"], [BOB[1], ALICE[1]]) == [bob, alice]
        assert await add(assigner, settings, f"video_c_{tag}", [ALICE[2]]) == [alice]
        # Already assigned: nothing changes.
        assert await add(assigner, settings, jobs["second"], [BOB[1], ALICE[1]]) == []
        # Another dimension: never with a 3-d face, however close its first coordinates.
        (other,) = await add(assigner, settings, f"video_d_{tag}", [[1.0, 0.05, 0.0, 0.0]])
        assert other not in (alice, bob)
        assert sorted(assigner.clusters) == [3, 4]
        members = await fetch_all(settings, sa.select(models.people_members))
        counts = {r.id: r.appearances for r in await fetch_all(
            settings, sa.select(models.people))}
        assert counts == {alice: 3, bob: 2, other: 1}
        assert len(members) == 6
    finally:
        await assigner.stop()


async def test_faces_of_new_jobs_are_assigned_without_asking_which_are_in_a_cluster(
        settings: Settings, database: Database, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assigner, _, jobs = await people_jobs(settings, tmp_path, database)
    async with serve_in_process(settings) as client:
        await deliver(client, video(jobs["first"], [ALICE[0], BOB[0]]))
        await deliver(client, video(jobs["second"], [BOB[1], ALICE[1]]))
    asked: list[object] = []
    original = people_store.assigned_faces

    def spied(conn: Any, faces: Any) -> Any:
        asked.append(faces)
        return original(conn, faces)

    monkeypatch.setattr(people_store, "assigned_faces", spied)
    try:
        first = await faces_of(settings, jobs["first"])
        assigned = await assigner.on_faces_added(
            first, 3, np.array([ALICE[0], BOB[0]], dtype=np.float32), new_jobs=True)
        assert assigned is not None
        alice, bob = (a.person_id for a in assigned)
        assert asked == []
        assert await add(assigner, settings, jobs["second"], [BOB[1], ALICE[1]]) == [bob, alice]
        assert len(asked) == 1, "faces not known to be new are looked up"
        # Given again as new (it never is): the membership still holds each face once.
        await assigner.on_faces_added(first, 3, np.array([ALICE[0], BOB[0]], dtype=np.float32),
                                      new_jobs=True)
        counts = {r.id: r.appearances for r in await fetch_all(
            settings, sa.select(models.people))}
        assert counts == {alice: 2, bob: 2}
        assert len(await membership(settings)) == 4
    finally:
        await assigner.stop()


async def test_reclustering_keeps_ids_and_a_new_leader_rebuilds_from_the_database(
        settings: Settings, database: Database, tmp_path: Path) -> None:
    assigner, _, jobs = await people_jobs(settings, tmp_path, database)
    async with serve_in_process(settings) as client:
        await deliver(client, video(jobs["first"], [ALICE[0], BOB[0], ALICE[1]]))
        await deliver(client, video(jobs["second"], [BOB[1], ALICE[2]]))
    first = await faces_of(settings, jobs["first"])
    second = await faces_of(settings, jobs["second"])
    vectors = dict(zip(first + second, [ALICE[0], BOB[0], ALICE[1], BOB[1], ALICE[2]],
                       strict=True))
    try:
        alice, bob, _ = await add(assigner, settings, jobs["first"],
                                  [ALICE[0], BOB[0], ALICE[1]])
        await assigner.stop()  # leadership passes on
        successor = PeopleAssigner(database, leader_for(database, tmp_path),
                                   vectors_source=lambda: vectors)
        # Taking the lead, it rebuilds the centres from the membership and the source's
        # vectors, and assigns the faces in no cluster yet (the second job's).
        assert await add(successor, settings, jobs["second"], [BOB[1], ALICE[2]]) == []
        expected = {face: alice if vector in ALICE else bob for face, vector in vectors.items()}
        assert await membership(settings) == expected
        assert await successor.recluster_now() == 5
        assert await membership(settings) == expected
        assert {r.id for r in await fetch_all(settings, sa.select(models.people))} == {
            alice, bob}
        await successor.stop()
    finally:
        await assigner.stop()


async def test_only_one_process_assigns(settings: Settings, database: Database,
                                        tmp_path: Path) -> None:
    leader = PeopleAssigner(database, leader_for(database, tmp_path))
    other = PeopleAssigner(database, leader_for(database, tmp_path))
    try:
        await leader.load({})
        await other.load({})
        assert await other.on_faces_added([(1, 0, 0)], 3, np.ones((1, 3), np.float32)) is None
        assert await leader.on_faces_added([], 3, np.ones((0, 3), np.float32)) == []
    finally:
        await leader.stop()
        await other.stop()


async def test_people_routes_list_page_and_show_appearances(
        settings: Settings, database: Database, tmp_path: Path) -> None:
    assigner, _, jobs = await people_jobs(settings, tmp_path, database)
    reader = await create_token(settings, name="viewer", scope="read")
    async with serve_in_process(settings) as client:
        await deliver(client, video(jobs["first"], [ALICE[0], BOB[0]]))
        await deliver(client, video(jobs["second"], [ALICE[1]]))
        try:
            alice, bob = await add(assigner, settings, jobs["first"], [ALICE[0], BOB[0]])
            await add(assigner, settings, jobs["second"], [ALICE[1]])
        finally:
            await assigner.stop()
        everyone = await client.get("/v1/people", headers=bearer(reader))
        first_page = await client.get("/v1/people?limit=1", headers=bearer(reader))
        second_page = await client.get(
            f"/v1/people?limit=1&cursor={first_page.json()['next_cursor']}",
            headers=bearer(reader))
        frequent = await client.get("/v1/people?min_appearances=2", headers=bearer(reader))
        detail = await client.get(f"/v1/people/{alice}", headers=bearer(reader))
        errors = {
            "unknown": await client.get(f"/v1/people/{bob + alice + 1}", headers=bearer(reader)),
            "not a number": await client.get("/v1/people/x", headers=bearer(reader)),
            "bad min": await client.get("/v1/people?min_appearances=0", headers=bearer(reader)),
            "bad cursor": await client.get("/v1/jobs?limit=1", headers=bearer(reader)),
            "anonymous": await client.get("/v1/people"),
        }
        forbidden = await client.delete(f"/v1/people/{alice}", headers=bearer(reader))
        jobs_cursor = errors["bad cursor"].json()["next_cursor"]
        foreign = await client.get(f"/v1/people?cursor={jobs_cursor}", headers=bearer(reader))

    assert everyone.status_code == 200, everyone.text
    assert [(p["id"], p["appearance_count"]) for p in everyone.json()["data"]] == [
        (bob, 1), (alice, 2)]
    assert everyone.json()["next_cursor"] is None
    assert [p["id"] for p in first_page.json()["data"]] == [bob]
    assert [p["id"] for p in second_page.json()["data"]] == [alice]
    assert second_page.json()["next_cursor"] is None
    assert [p["id"] for p in frequent.json()["data"]] == [alice]
    assert detail.status_code == 200
    body = detail.json()
    assert body["id"] == alice
    assert body["appearance_count"] == 2
    assert [(a["job_id"], a["kind"], a["item_index"], a["person_index"], a["external_id"],
             a["start_seconds"], a["end_seconds"]) for a in body["appearances"]] == [
        (jobs["first"], "video", 0, 0, None, 3.0, 7.5),
        (jobs["second"], "video", 0, 0, None, 3.0, 7.5)]
    assert body["appearances"][0]["similarity"] == 1.0
    assert 0.9 < body["appearances"][1]["similarity"] < 1.0
    assert errors["unknown"].status_code == 404
    assert errors["unknown"].json()["code"] == "not_found"
    assert errors["not a number"].status_code == 404
    assert errors["bad min"].status_code == 422
    assert errors["bad min"].json()["details"]["parameter"] == "min_appearances"
    assert errors["anonymous"].status_code == 401
    assert forbidden.status_code == 403
    assert foreign.status_code == 422
    assert foreign.json()["details"]["parameter"] == "cursor"


async def test_deleting_a_person_erases_every_face_of_it_with_one_audit_record(
        settings: Settings, database: Database, tmp_path: Path) -> None:
    assigner, _, jobs = await people_jobs(settings, tmp_path, database)
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, video(jobs["first"], [ALICE[0], BOB[0]]))
        await deliver(client, video(jobs["second"], [ALICE[1]]))
        try:
            alice, bob = await add(assigner, settings, jobs["first"], [ALICE[0], BOB[0]])
            await add(assigner, settings, jobs["second"], [ALICE[1]])
        finally:
            await assigner.stop()
        erased = await client.delete(f"/v1/people/{alice}", headers=bearer(admin))
        gone = await client.get(f"/v1/people/{alice}", headers=bearer(admin))
        again = await client.delete(f"/v1/people/{alice}", headers=bearer(admin))
        bob_still = await client.get(f"/v1/people/{bob}", headers=bearer(admin))
        payload = await client.get(f"/v1/jobs/{jobs['second']}/payload", headers=bearer(admin))
        records = (await client.get("/v1/audit?action=people_erased",
                                    headers=bearer(admin))).json()["data"]

    assert erased.status_code == 204, erased.text
    assert gone.status_code == 404
    assert again.status_code == 404
    assert bob_still.status_code == 200
    assert "face_embedding" not in str(payload.json())
    rows = {(r.job_pk, r.person_index): r for r in await fetch_all(
        settings, sa.select(persons_table))}
    erased_rows = [r for r in rows.values() if r.erased]
    assert len(erased_rows) == 2
    for row in erased_rows:
        assert (row.face_embedding, row.face_embedding_sealed, row.face_thumbnail,
                row.face_thumbnail_sealed, row.age, row.demographics_sealed) == (
            None, None, None, None, None, None)
    assert sum(not r.erased for r in rows.values()) == 1
    assert [r.id for r in await fetch_all(settings, sa.select(models.people))] == [bob]
    assert len(await fetch_all(settings, sa.select(models.people_members))) == 1
    (record,) = records
    assert record["token_name"] == "dpo"
    assert record["counts"] == {"jobs": 2, "persons": 2, "bodies": 2}
    assert record["details"] == {"person_id": str(alice)}


async def test_adding_members_skips_faces_already_in_a_cluster_erased_or_gone(
        settings: Settings, database: Database) -> None:
    job_id = f"video_m_{uuid.uuid4().hex[:8]}"
    async with serve_in_process(settings) as client:
        await deliver(client, video(job_id, [ALICE[0], ALICE[1], BOB[0]]))
    first, second, third = await faces_of(settings, job_id)
    gone = (first[0], 0, 99)
    now = models.utcnow()

    def setup(conn: sa.Connection) -> tuple[int, int]:
        a, b = people_store.create_people(conn, 2, now)
        conn.execute(sa.update(persons_table).values(erased=True).where(
            persons_table.c.job_pk == third[0], persons_table.c.person_index == third[2]))
        assert people_store.add_members(conn, [Member(first, a, 1.0)], now) == 1
        return a, b

    a, b = await database.run_write(setup)
    later = models.utcnow()

    def add_all(conn: sa.Connection) -> int:
        return people_store.add_members(conn, [
            Member(first, b, 0.9),  # already in a: keeps it
            Member(second, a, 0.8),  # live and new: joins a
            Member(third, b, 0.7),  # erased: skipped
            Member(gone, b, 0.6),  # no such person row: skipped
        ], later)

    assert await database.run_write(add_all) == 1
    assert await membership(settings) == {first: a, second: a}
    counts = {r.id: r.appearances for r in await fetch_all(settings, sa.select(models.people))
              if r.id in (a, b)}
    assert counts == {a: 2, b: 0}
