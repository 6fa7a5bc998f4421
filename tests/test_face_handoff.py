"""A result this process stores is indexed from what it had in hand (service.faces.handoff),
on SQLite and PostgreSQL: the index then holds exactly what reading the job back would give,
without that read; and the database wins whenever the tailer's round holds anything else for
the job (an erasure in the same round, or a delivery the tailer has already read back)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service import queries
from service.config import Settings
from service.db import Database
from service.faces import source
from service.faces import sync as sync_module
from service.faces.handoff import StoredFace, StoredFaces, batches, stored_faces
from service.faces.index import FaceIndex, FaceKey
from service.faces.source import FaceGatherer
from service.faces.sync import FaceSync
from service.rows import PreparedResult
from service.vectors import pack_doubles
from tests.conftest import bearer, create_token, serve_in_process_with_state
from tests.support.biometrics import THUMBNAIL
from tests.support.signing import deliver

pytestmark = pytest.mark.anyio

def video_job(job_id: str) -> dict[str, Any]:
    """Two scenes of persons: allowlisted or not or unsaid, with and without a thumbnail,
    one without an embedding, and two dimensions."""
    return {"job_id": job_id, "status": "finished", "result": {
        "person_constellation_scenes": [
            {"time_segment": {"start_seconds": 0.0, "end_seconds": 2.0}, "person_ids": [
                {"face_embedding": [0.1, 0.2, 0.3, 0.4], "allowlisted": True,
                 "face_thumbnail": THUMBNAIL, "age": 41, "gender": "male"},
                {"face_embedding": [0.4, 0.3, 0.2, 0.1], "allowlisted": False},
                {"age": 30}]},
            {"time_segment": {"start_seconds": 2.0, "end_seconds": 5.0}, "person_ids": [
                {"face_embedding": [0.5, -0.5, 0.25]},
                {"face_embedding": [0.9, 0.1, 0.0, 0.2], "face_thumbnail": THUMBNAIL}]}]}}


def image_job(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "status": "finished", "items": [
        {"external_id": "a", "result": {"person_ids": [
            {"face_embedding": [0.3, 0.3, 0.1, 0.0]}]}},
        {"external_id": "b", "result": {"person_ids": [
            {"face_embedding": [0.0, 0.3, 0.1, 0.3], "allowlisted": True}]}}]}



def rows_of(index: FaceIndex, job_pks: set[int]) -> dict[FaceKey, tuple[Any, ...]]:
    """Everything the index holds of each face of these jobs."""
    found = {}
    for dimension, collection in index.collections.items():
        for key, row in collection.rows.items():
            if key.job_pk in job_pks and collection.alive[row]:
                found[key] = (dimension, collection.vectors[row].round(6).tolist(),
                              int(collection.kind[row]), float(collection.received_at[row]),
                              int(collection.allowlisted[row]),
                              bool(collection.has_thumbnail[row]))
    return found


def new_job_ids() -> list[str]:
    """The ids of a new video job and a new image batch job."""
    tag = uuid.uuid4().hex[:6]
    return [f"video-{tag}", f"images-{tag}"]


def spy_on_read_back(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job ids every later read back of faces (``source.faces_of_jobs``) names, in any
    process of this test."""
    read_back: list[str] = []
    original = source.faces_of_jobs

    def spied(conn: Any, keyring: Any, *, pks: Any = (), job_ids: Any = ()) -> Any:
        read_back.extend(job_ids)
        return original(conn, keyring, pks=pks, job_ids=job_ids)

    monkeypatch.setattr(source, "faces_of_jobs", spied)
    return read_back


async def test_a_result_stored_here_is_indexed_as_reading_it_back_would_without_that_read(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    original = source.faces_of_jobs
    read_back = spy_on_read_back(monkeypatch)
    jobs = new_job_ids()
    async with serve_in_process_with_state(settings) as (client, state):
        sync: FaceSync = state["faces"]
        await asyncio.wait_for(sync.became_ready.wait(), 10)
        await deliver(client, video_job(jobs[0]))
        await deliver(client, image_job(jobs[1]))
        for _ in range(100):
            if all(sync.index.job_pk_of(job_id) is not None for job_id in jobs):
                break
            await asyncio.sleep(0.1)
        pks = {sync.index.job_pk_of(job_id) for job_id in jobs}
        assert None not in pks, "both jobs indexed"
        held = rows_of(sync.index, pks)  # type: ignore[arg-type]
        database: Database = state["database"]
        found = await database.run_read(original, settings.encryption_keys, job_ids=jobs)
    assert not set(read_back) & set(jobs), "a job stored here is not read back"
    from_database = FaceIndex()
    from_database.add_batches(found.batches)
    expected = rows_of(from_database, pks)  # type: ignore[arg-type]
    assert len(expected) == 6  # the person without an embedding has no face
    assert held == expected


async def ready_sync(database: Database, settings: Settings, path: Path, *,
                     wait_for_handoffs: bool = False) -> FaceSync:
    """A face index of its own on the service's database, whose rounds the test runs."""
    sync = FaceSync(database, settings.encryption_keys, path, "handoff-test",
                    poll_seconds=3600, wait_for_handoffs=wait_for_handoffs)
    sync.start()
    await asyncio.wait_for(sync.became_ready.wait(), 10)
    return sync


@pytest.fixture(params=[False, True], ids=["no-wait", "waits-for-handoffs"])
async def service(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  request: pytest.FixtureRequest
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Database, FaceSync]]:
    monkeypatch.chdir(tmp_path)
    # The service's own index is off: the test's index is the only one that reads jobs back
    # (a second one, still loading when a job arrives, would read it back and be counted).
    async with serve_in_process_with_state(replace(settings, face_index=False)) as (
            client, state):
        database: Database = state["database"]
        sync = await ready_sync(database.background, settings, tmp_path / "own.snapshot",
                                wait_for_handoffs=request.param)
        try:
            yield client, database, sync
        finally:
            await sync.stop()


TAMPERED = [0.0, 0.0, 0.0, 1.0]


async def hand_over_tampered(database: Database, sync: FaceSync, job_id: str,
                             delivery_id: int) -> int:
    """Hand ``sync`` the job's image faces with another vector than the stored ones: which
    vector the index then holds tells whether it took the handoff or read the job back."""
    pk = await database.run_read(queries.job_pk, job_id)
    assert pk is not None
    sync.stored_here(delivery_id, StoredFaces.of(pk, job_id, "image_batch", 0.0, [
        StoredFace(item, 0, pack_doubles(TAMPERED), None, False) for item in (0, 1)]))
    return int(pk)


def stored_vector(embedding: list[float]) -> list[float]:
    """An embedding as the index holds it read back from the database (unit, float32)."""
    unit = np.array(embedding) / np.linalg.norm(embedding)
    return list(unit.astype(np.float32).round(6).tolist())


def vector_of(sync: FaceSync, key: FaceKey) -> list[float] | None:
    collection = sync.index.collections[4]
    row = collection.rows.get(key)
    return None if row is None else collection.vectors[row].round(6).tolist()


async def test_the_tailer_indexes_a_handed_over_job_from_memory_when_nothing_else_happened(
        service: tuple[httpx.AsyncClient, Database, FaceSync]) -> None:
    client, database, sync = service
    job_id = f"images-{uuid.uuid4().hex[:6]}"
    pk = await hand_over_tampered(database, sync, job_id,
                                  await deliver(client, image_job(job_id)))
    await sync.poll()
    assert vector_of(sync, FaceKey(pk, 0, 0)) == TAMPERED
    assert vector_of(sync, FaceKey(pk, 1, 0)) == TAMPERED


async def test_faces_added_from_a_hand_over_are_announced_as_new_jobs_and_read_back_ones_not(
        service: tuple[httpx.AsyncClient, Database, FaceSync]) -> None:
    client, database, sync = service
    announced: list[tuple[int, bool]] = []

    async def hook(faces: list[FaceKey], dimension: int, vectors: Any, *,
                   new_jobs: bool) -> None:
        announced.extend((face.job_pk, new_jobs) for face in faces)

    sync.on_faces_added.append(hook)
    handed_job, read_job = (f"images-{uuid.uuid4().hex[:6]}" for _ in range(2))
    pk = await hand_over_tampered(database, sync, handed_job,
                                  await deliver(client, image_job(handed_job)))
    await deliver(client, image_job(read_job))
    await sync.poll()
    await sync.poll()
    read_pk = sync.index.job_pk_of(read_job)
    assert sorted(announced) == sorted([(pk, True), (pk, True), (read_pk, False),
                                        (read_pk, False)])


async def test_an_erasure_in_the_same_round_wins_over_the_handed_over_faces(
        service: tuple[httpx.AsyncClient, Database, FaceSync], settings: Settings) -> None:
    client, database, sync = service
    admin = await create_token(settings, name="dpo", scope="admin")
    job_id = f"images-{uuid.uuid4().hex[:6]}"
    pk = await hand_over_tampered(database, sync, job_id,
                                  await deliver(client, image_job(job_id)))
    erased = await client.delete(f"/v1/jobs/{job_id}/persons/0/0", headers=bearer(admin))
    assert erased.status_code == 204, erased.text
    await sync.poll()
    assert vector_of(sync, FaceKey(pk, 0, 0)) is None
    assert vector_of(sync, FaceKey(pk, 1, 0)) == stored_vector([0.0, 0.3, 0.1, 0.3])


async def test_a_handoff_for_a_delivery_the_tailer_already_read_back_is_dropped(
        service: tuple[httpx.AsyncClient, Database, FaceSync]) -> None:
    client, database, sync = service
    job_id = f"images-{uuid.uuid4().hex[:6]}"
    delivery_id = await deliver(client, image_job(job_id))
    await sync.poll()
    await sync.poll()  # waiting for hand-overs, the second round reads it back
    pk = await hand_over_tampered(database, sync, job_id, delivery_id)
    await sync.poll()
    assert vector_of(sync, FaceKey(pk, 0, 0)) == stored_vector([0.3, 0.3, 0.1, 0.0])


async def test_hand_overs_past_their_memory_bound_are_read_back_instead(
        service: tuple[httpx.AsyncClient, Database, FaceSync],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, database, sync = service
    monkeypatch.setattr(sync_module, "MAX_HANDOFF_BYTES", 2 * 4 * 8 - 1)  # under two 4-d faces
    job_id = f"images-{uuid.uuid4().hex[:6]}"
    pk = await hand_over_tampered(database, sync, job_id,
                                  await deliver(client, image_job(job_id)))
    await sync.poll()
    await sync.poll()  # waiting for hand-overs, the refused one is read back a round later
    assert vector_of(sync, FaceKey(pk, 0, 0)) == stored_vector([0.3, 0.3, 0.1, 0.0])


async def met_once_without_its_hand_over(service: tuple[httpx.AsyncClient, Database, FaceSync]
                                        ) -> tuple[str, int]:
    """A new image job delivered and met by one round of the tailer, with no hand-over:
    its job id and delivery id."""
    client, _, sync = service
    job_id = f"images-{uuid.uuid4().hex[:6]}"
    delivery_id = await deliver(client, image_job(job_id))
    cursor = sync._cursors.delivery_id
    await sync.poll()
    assert sync.index.job_pk_of(job_id) is None, "the delivery waits a round"
    assert sync._cursors.delivery_id < delivery_id, "the cursor stays below it meanwhile"
    assert sync._cursors.delivery_id >= cursor
    return job_id, delivery_id


@pytest.mark.parametrize("service", [True], ids=["waits-for-handoffs"], indirect=True)
async def test_a_hand_over_arriving_after_the_round_that_met_its_delivery_is_still_indexed(
        service: tuple[httpx.AsyncClient, Database, FaceSync],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, database, sync = service
    read_back = spy_on_read_back(monkeypatch)
    job_id, delivery_id = await met_once_without_its_hand_over(service)
    pk = await hand_over_tampered(database, sync, job_id, delivery_id)
    await sync.poll()
    assert vector_of(sync, FaceKey(pk, 0, 0)) == TAMPERED
    assert job_id not in read_back
    assert sync._cursors.delivery_id >= delivery_id


@pytest.mark.parametrize("service", [True], ids=["waits-for-handoffs"], indirect=True)
async def test_a_first_delivery_whose_hand_over_never_comes_is_read_back_one_round_later(
        service: tuple[httpx.AsyncClient, Database, FaceSync],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, sync = service
    read_back = spy_on_read_back(monkeypatch)
    job_id, delivery_id = await met_once_without_its_hand_over(service)
    await sync.poll()
    pk = sync.index.job_pk_of(job_id)
    assert pk is not None
    assert read_back == [job_id]
    assert vector_of(sync, FaceKey(pk, 0, 0)) == stored_vector([0.3, 0.3, 0.1, 0.0])
    assert sync._cursors.delivery_id >= delivery_id


@pytest.mark.parametrize("service", [True], ids=["waits-for-handoffs"], indirect=True)
async def test_an_update_does_not_wait_for_a_hand_over_that_is_never_sent(
        service: tuple[httpx.AsyncClient, Database, FaceSync]) -> None:
    client, _, sync = service
    job_id = f"images-{uuid.uuid4().hex[:6]}"
    await deliver(client, image_job(job_id))
    await sync.poll()
    await sync.poll()
    changed = image_job(job_id)
    changed["items"][0]["result"]["person_ids"][0]["face_embedding"] = [0.0, 0.0, 1.0, 0.0]
    await deliver(client, changed)
    await sync.poll()
    pk = sync.index.job_pk_of(job_id)
    assert pk is not None
    assert vector_of(sync, FaceKey(pk, 0, 0)) == [0.0, 0.0, 1.0, 0.0]


def test_a_hand_over_gives_the_same_batches_as_its_faces_added_one_by_one() -> None:
    """The hand-over's columns are gathered a whole job at a time; faces of another
    dimension in the same job, and embeddings that are not whole doubles, are handled as
    :meth:`FaceGatherer.add` handles each one."""
    faces = [StoredFace(0, 0, pack_doubles([0.1, 0.2, 0.3]), True, True),
             StoredFace(0, 1, pack_doubles([0.3, -0.2, 0.1]), None, False),
             StoredFace(1, 0, pack_doubles([1.0, 0.0, 0.0, 0.5]), False, False),
             StoredFace(1, 1, b"\x00" * 12, None, False)]
    for chosen in (faces[:2], faces):
        stored = StoredFaces.of(9, "job-9", "video", 12.5, chosen)
        one_by_one = FaceGatherer()
        for face in chosen:
            one_by_one.add(FaceKey(9, face.item_index, face.person_index), "job-9",
                           face.packed, "video", 12.5, face.allowlisted, face.has_thumbnail)
        expected = [(b.keys, b.job_ids, b.vectors.tolist(), b.kinds, b.received_at,
                     b.allowlisted, b.has_thumbnail) for b in one_by_one.batches()]
        got = [(b.keys, b.job_ids, b.vectors.tolist(), b.kinds, b.received_at,
                b.allowlisted, b.has_thumbnail) for b in batches([stored])]
        assert got == expected
        assert sum(len(b.keys) for b in batches([stored])) == min(len(chosen), 3)


def test_a_hand_over_lists_the_faces_in_the_order_the_read_back_gives() -> None:
    """Person rows out of order (another program's payload) are handed over ordered by
    item and person index, as the read back orders them."""
    rows = [{"item_index": item, "person_index": person,
             "face_embedding": pack_doubles([float(item), float(person), 1.0]),
             "allowlisted": None, "face_thumbnail": None, "face_thumbnail_sealed": None}
            for item, person in [(1, 0), (0, 1), (0, 0)]]
    prepared = PreparedResult(job_id="job-o", status="finished", kind="image_batch",
                              error=None, content_sha256="0" * 64, n_items=2,
                              rows={"persons": rows})
    stored = stored_faces(prepared, 3, datetime(2026, 1, 1, tzinfo=UTC))
    assert list(zip(stored.item_indexes, stored.person_indexes, strict=True)) == [
        (0, 0), (0, 1), (1, 0)]
    assert stored.packed[2] == pack_doubles([1.0, 0.0, 1.0])


@pytest.mark.parametrize("snapshot", [True, False], ids=["from-the-snapshot", "built"])
async def test_an_index_loaded_where_hand_overs_are_awaited_answers_with_every_job_committed_before(
        service: tuple[httpx.AsyncClient, Database, FaceSync], settings: Settings,
        tmp_path: Path, snapshot: bool) -> None:
    """A job stored while no index of this process ran (its hand-over went to a process that
    is gone, or nowhere) is indexed by the load's round, not one round after it answers."""
    client, database, sync = service
    first = f"images-{uuid.uuid4().hex[:6]}"
    await deliver(client, image_job(first))
    await sync.poll()
    await sync.poll()
    await sync.stop()  # writes its snapshot
    path = tmp_path / "own.snapshot"
    assert path.exists()
    if not snapshot:
        path.unlink()
    later = f"images-{uuid.uuid4().hex[:6]}"
    await deliver(client, image_job(later))
    again = await ready_sync(database.background, settings, path, wait_for_handoffs=True)
    try:
        assert again.loaded_from == ("snapshot" if snapshot else "database")
        assert again.index.job_pk_of(first) is not None
        assert again.index.job_pk_of(later) is not None
    finally:
        await again.stop()
