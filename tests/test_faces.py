"""Face search through the live service, on SQLite and PostgreSQL: nearest faces first, k,
min_similarity and every filter, self-exclusion, dimensions kept apart, bad requests, the
thumbnail route, erasures reaching the index (in-process and across two processes), the
encrypted snapshot across restarts, and faces under ``drop`` never indexed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy.engine import make_url
from threadpoolctl import threadpool_info

from service.config import Settings
from service.db import Database
from service.faces import index as face_index
from service.faces import snapshot, sync
from service.faces.snapshot import FILE_NAME
from service.migrations import upgrade
from service.privacy.keys import parse_keys
from service.privacy.policy import BiometricPolicy
from service.privacy.retention import Retention, purge
from service.vectors import pack_doubles
from tests.conftest import bearer, create_token, serve_in_process, serve_in_process_with_state
from tests.support.biometrics import THUMBNAIL
from tests.support.keys import TEST_KEY_LINE
from tests.support.logs import captured_json_logs
from tests.support.server import serve
from tests.support.signing import SECRET, encode, signed_headers

pytestmark = pytest.mark.anyio

@pytest.fixture(autouse=True)
def _own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With PostgreSQL the data folder (the snapshot's) is ./data: this test's own."""
    monkeypatch.chdir(tmp_path)


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
WAIT_SECONDS = 5.0


def person(vector: list[float], *, allowlisted: bool | None = None,
           thumbnail: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"face_embedding": vector, "gender": "female", "age": 30}
    if allowlisted is not None:
        found["allowlisted"] = allowlisted
    if thumbnail is not None:
        found["face_thumbnail"] = thumbnail
    return found


def image_job(job_id: str, persons: list[dict[str, Any]]) -> dict[str, Any]:
    """One image per person."""
    return {"job_id": job_id, "status": "finished",
            "items": [{"external_id": f"img-{i}", "result": {"person_ids": [p]}}
                      for i, p in enumerate(persons)]}


def video_job(job_id: str, persons: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_id": job_id, "status": "finished", "result": {
        "person_constellation_scenes": [{"time_segment": {"start_seconds": 3.0,
                                                          "end_seconds": 7.5},
                                         "person_ids": persons}]}}


async def deliver(client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    assert response.status_code == 200, response.text


async def search(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/faces/search", json=body, headers=bearer(token))


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     seconds: float = WAIT_SECONDS) -> float:
    """Wait until ``check()`` holds; returns how long it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def hits(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> list[Any]:
    response = await search(client, token, body)
    if response.status_code in (422, 503):  # nothing indexed yet / still loading
        return []
    assert response.status_code == 200, response.text
    data: list[Any] = response.json()["data"]
    return data


async def indexed(client: httpx.AsyncClient, token: str, vector: list[float],
                  job_id: str, count: int = 1) -> None:
    async def found() -> bool:
        data = await hits(client, token, {"embedding": vector, "k": 100})
        return sum(h["job_id"] == job_id for h in data) >= count

    await eventually(found, f"{job_id} indexed")


def noisy_copies(base: np.ndarray, count: int, noise: float,
                 rng: np.random.Generator) -> list[list[float]]:
    return [(base + rng.normal(scale=noise, size=base.shape)).tolist() for _ in range(count)]


async def test_known_clusters_come_back_nearest_first_and_a_person_never_matches_itself(
        settings: Settings, read_token: str) -> None:
    rng = np.random.default_rng(3)
    bases = rng.normal(size=(3, 8))
    jobs: dict[str, int] = {}
    async with serve_in_process(settings) as client:
        for cluster, base in enumerate(bases):
            for copy, vector in enumerate(noisy_copies(base, 4, 0.05, rng)):
                job_id = f"c{cluster}-{copy}-{uuid.uuid4().hex[:6]}"
                jobs[job_id] = cluster
                await deliver(client, image_job(job_id, [person(vector)]))
        await eventually(lambda: _count(client, read_token, bases[0].tolist(), 12),
                         "every face indexed")

        data = await hits(client, read_token, {"embedding": bases[0].tolist(), "k": 4})
        assert [jobs[h["job_id"]] for h in data] == [0, 0, 0, 0]
        similarities = [h["similarity"] for h in data]
        assert similarities == sorted(similarities, reverse=True)
        assert similarities[-1] > 0.95
        first = data[0]
        assert set(first) == {"job_id", "kind", "item_index", "external_id", "person_index",
                              "start_seconds", "end_seconds", "similarity", "allowlisted",
                              "age", "gender"}
        assert (first["kind"], first["external_id"], first["age"], first["gender"]) == (
            "image_batch", "img-0", 30, "female")

        query = {"person": {"job_id": first["job_id"], "item_index": 0, "person_index": 0},
                 "k": 5}
        by_person = await hits(client, read_token, query)
        assert first["job_id"] not in [h["job_id"] for h in by_person]
        assert [jobs[h["job_id"]] for h in by_person[:3]] == [0, 0, 0]
        assert jobs[by_person[3]["job_id"]] != 0
        similar = await client.get(f"/v1/jobs/{first['job_id']}/persons/0/0/similar",
                                   params={"k": 5}, headers=bearer(read_token))
        assert similar.status_code == 200, similar.text
        assert similar.json()["data"] == by_person


async def _count(client: httpx.AsyncClient, token: str, vector: list[float],
                 count: int) -> bool:
    return len(await hits(client, token, {"embedding": vector, "k": 100})) >= count


async def test_k_min_similarity_and_every_filter(settings: Settings, read_token: str) -> None:
    axis = [1.0, 0.0, 0.0, 0.0]
    near, far = [1.0, 0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]
    tag = uuid.uuid4().hex[:6]
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(f"early-{tag}", [person(near, allowlisted=True),
                                                         person(far, allowlisted=False)]))
        await indexed(client, read_token, axis, f"early-{tag}", 2)
        middle = datetime.now(UTC).isoformat()
        await asyncio.sleep(0.05)
        await deliver(client, video_job(f"late-{tag}", [person(near), person(far)]))
        await indexed(client, read_token, axis, f"late-{tag}", 2)

        async def keys(**body: Any) -> list[tuple[str, int, int]]:
            return [(h["job_id"].split("-")[0], h["item_index"], h["person_index"])
                    for h in await hits(client, read_token, {"embedding": axis, **body})]

        assert len(await keys()) == 4
        assert len(await keys(k=1)) == 1
        assert len(await keys(min_similarity=0.5)) == 2
        assert len(await keys(min_similarity=0.5, exact=True)) == 2
        assert await keys(allowlisted=True) == [("early", 0, 0)]
        assert sorted(await keys(allowlisted=False)) == [
            ("early", 1, 0), ("late", 0, 0), ("late", 0, 1)]
        assert sorted(await keys(kind="video")) == [("late", 0, 0), ("late", 0, 1)]
        assert sorted(await keys(kind="image_batch")) == [("early", 0, 0), ("early", 1, 0)]
        assert sorted(await keys(received_after=middle)) == [("late", 0, 0), ("late", 0, 1)]
        assert sorted(await keys(received_before=middle)) == [("early", 0, 0),
                                                              ("early", 1, 0)]
        video_hit = (await hits(client, read_token, {"embedding": axis, "kind": "video",
                                                     "k": 1}))[0]
        assert (video_hit["start_seconds"], video_hit["end_seconds"]) == (3.0, 7.5)


async def test_a_filter_matching_one_percent_of_2000_faces_still_returns_k_hits(
        settings: Settings, read_token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(face_index, "HNSW_THRESHOLD", 200)  # the HNSW path...
    monkeypatch.setattr(face_index, "SELECTIVE_ROWS", 5)  # ...even for this filter
    rng = np.random.default_rng(11)
    tag = uuid.uuid4().hex[:6]
    async with serve_in_process(settings) as client:
        for job in range(20):
            persons = [person(rng.normal(size=6).tolist(), allowlisted=(i == job % 100))
                       for i in range(100)]
            await deliver(client, video_job(f"crowd-{job}-{tag}", persons))
        probe = rng.normal(size=6).tolist()
        await eventually(lambda: _count(client, read_token, probe, 100), "faces indexed")
        await eventually(lambda: _all_indexed(client, read_token, probe, 20),
                         "every allowlisted face indexed")
        found = await hits(client, read_token, {"embedding": probe, "k": 10,
                                                "allowlisted": True})
        assert len(found) == 10
        assert all(h["allowlisted"] for h in found)
        exact = await hits(client, read_token, {"embedding": probe, "k": 10,
                                                "allowlisted": True, "exact": True})
        assert found == exact


async def _all_indexed(client: httpx.AsyncClient, token: str, probe: list[float],
                       count: int) -> bool:
    data = await hits(client, token, {"embedding": probe, "k": 100, "allowlisted": True,
                                      "exact": True})
    return len(data) == count


async def test_faces_of_different_dimensions_are_never_compared(
        settings: Settings, read_token: str) -> None:
    tag = uuid.uuid4().hex[:6]
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(f"three-{tag}", [person([1.0, 0.0, 0.0])]))
        await deliver(client, image_job(f"four-{tag}", [person([1.0, 0.0, 0.0, 0.0])]))
        await indexed(client, read_token, [1.0, 0.0, 0.0], f"three-{tag}")
        await indexed(client, read_token, [1.0, 0.0, 0.0, 0.0], f"four-{tag}")
        three = await hits(client, read_token, {"embedding": [1.0, 0.0, 0.0]})
        four = await hits(client, read_token, {"embedding": [1.0, 0.0, 0.0, 0.0]})
        assert [h["job_id"] for h in three] == [f"three-{tag}"]
        assert [h["job_id"] for h in four] == [f"four-{tag}"]
        five = await search(client, read_token, {"embedding": [1.0, 0.0, 0.0, 0.0, 0.0]})
        assert five.status_code == 422
        assert five.json()["details"]["parameter"] == "embedding"
        assert five.json()["details"]["dimensions"] == [3, 4]


BAD_BODIES: list[tuple[Any, str]] = [
    ({"embedding": [0.0, 0.0, 0.0]}, "embedding"),
    ({"embedding": [1.0, 0.0]}, "embedding"),
    ({"embedding": []}, "embedding"),
    ({"embedding": ["1", 0.0, 0.0]}, "embedding"),
    ({"embedding": [True, 0.0, 0.0]}, "embedding"),
    ({"embedding": "1,0,0"}, "embedding"),
    ({}, "embedding"),
    ({"embedding": [1.0, 0.0, 0.0], "person": {"job_id": "x", "item_index": 0,
                                               "person_index": 0}}, "embedding"),
    ({"embedding": [1.0, 0.0, 0.0], "k": 0}, "k"),
    ({"embedding": [1.0, 0.0, 0.0], "k": 101}, "k"),
    ({"embedding": [1.0, 0.0, 0.0], "k": "5"}, "k"),
    ({"embedding": [1.0, 0.0, 0.0], "k": 2.5}, "k"),
    ({"embedding": [1.0, 0.0, 0.0], "min_similarity": 1.5}, "min_similarity"),
    ({"embedding": [1.0, 0.0, 0.0], "allowlisted": "yes"}, "allowlisted"),
    ({"embedding": [1.0, 0.0, 0.0], "kind": "audio"}, "kind"),
    ({"embedding": [1.0, 0.0, 0.0], "received_after": "yesterday"}, "received_after"),
    ({"embedding": [1.0, 0.0, 0.0], "exact": 1}, "exact"),
    ({"embedding": [1.0, 0.0, 0.0], "limit": 5}, "limit"),
    ({"person": {"job_id": "x"}}, "person"),
    ({"person": {"job_id": "x", "item_index": -1, "person_index": 0}}, "person"),
    ([1.0, 0.0, 0.0], "body"),
]


async def test_bad_search_requests_are_4xx_naming_the_field(
        settings: Settings, read_token: str) -> None:
    job_id = f"bad-{uuid.uuid4().hex[:6]}"
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(job_id, [person([1.0, 0.0, 0.0]), person([0.0, 1.0, 0.0])]))
        await indexed(client, read_token, [1.0, 0.0, 0.0], job_id, 2)
        for body, field in BAD_BODIES:
            response = await client.post("/v1/faces/search", content=json.dumps(body),
                                         headers=bearer(read_token))
            assert response.status_code == 422, (body, response.text)
            assert response.json()["code"] == "invalid_parameter"
            assert response.json()["details"]["parameter"] == field, body
        not_json = await client.post("/v1/faces/search", content=b"{embedding: NaN}",
                                     headers=bearer(read_token))
        assert not_json.status_code == 400
        assert not_json.json()["code"] == "invalid_json"
        nan = await client.post("/v1/faces/search", content=b'{"embedding": [NaN, 1, 0]}',
                                headers=bearer(read_token))
        assert nan.status_code == 400
        huge = await client.post("/v1/faces/search", content=b'{"embedding": [1e400, 1, 0]}',
                                 headers=bearer(read_token))
        assert huge.status_code in (400, 422), huge.text
        missing = await search(client, read_token, {"person": {
            "job_id": job_id, "item_index": 7, "person_index": 0}})
        assert missing.status_code == 404, missing.text
        no_job = await search(client, read_token, {"person": {
            "job_id": "no-such-job", "item_index": 0, "person_index": 0}})
        assert no_job.status_code == 404
        similar = await client.get("/v1/jobs/no-such-job/persons/0/0/similar",
                                   headers=bearer(read_token))
        assert similar.status_code == 404
        bad_k = await client.get(f"/v1/jobs/{job_id}/persons/0/0/similar?k=0",
                                 headers=bearer(read_token))
        assert bad_k.status_code == 422
        assert bad_k.json()["details"]["parameter"] == "k"
        unauthenticated = await client.post("/v1/faces/search", json={"embedding": [1, 0, 0]})
        assert unauthenticated.status_code == 401


async def test_thumbnail_bytes_with_a_sniffed_type_and_404_when_not_stored(
        settings: Settings, read_token: str) -> None:
    job_id = f"thumbs-{uuid.uuid4().hex[:6]}"
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(job_id, [
            person([1.0, 0.0, 0.0], thumbnail=THUMBNAIL), person([0.0, 1.0, 0.0], thumbnail=PNG),
            person([0.0, 0.0, 1.0])]))
        url = f"/v1/jobs/{job_id}/persons/{{}}/0/thumbnail"
        jpeg = await client.get(url.format(0), headers=bearer(read_token))
        assert jpeg.status_code == 200, jpeg.text
        assert jpeg.content == base64.b64decode(THUMBNAIL)
        assert jpeg.headers["content-type"] == "image/jpeg"
        assert jpeg.headers["x-content-type-options"] == "nosniff"
        png = await client.get(url.format(1), headers=bearer(read_token))
        assert (png.status_code, png.headers["content-type"]) == (200, "image/png")
        assert (await client.get(url.format(2), headers=bearer(read_token))).status_code == 404
        assert (await client.get(url.format(9), headers=bearer(read_token))).status_code == 404

        await indexed(client, read_token, [1.0, 0.0, 0.0], job_id, 3)
        found = await hits(client, read_token, {"embedding": [1.0, 0.0, 0.0], "k": 3})
        with_thumbnail = {h["item_index"]: h.get("thumbnail_url") for h in found}
        assert with_thumbnail == {0: url.format(0), 1: url.format(1), 2: None}

        erased = await client.delete(f"/v1/jobs/{job_id}/persons/0/0", headers=bearer(admin))
        assert erased.status_code == 204
        assert (await client.get(url.format(0), headers=bearer(read_token))).status_code == 404


async def test_thumbnail_under_an_unknown_key_is_409_and_dropped_thumbnails_are_404(
        settings: Settings, read_token: str) -> None:
    job_id = f"keys-{uuid.uuid4().hex[:6]}"
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(job_id, [person([1.0, 0.0], thumbnail=THUMBNAIL)]))
    other = parse_keys("other-key:" + base64.b64encode(bytes(range(1, 33))).decode())
    async with serve_in_process(replace(settings, encryption_keys=other)) as client:
        response = await client.get(f"/v1/jobs/{job_id}/persons/0/0/thumbnail",
                                    headers=bearer(read_token))
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "key_unavailable"

    dropped = replace(settings, biometric_policy=BiometricPolicy(thumbnails="drop"))
    async with serve_in_process(dropped) as client:
        await deliver(client, image_job(f"{job_id}-drop", [person([1.0, 0.0],
                                                                  thumbnail=THUMBNAIL)]))
        response = await client.get(f"/v1/jobs/{job_id}-drop/persons/0/0/thumbnail",
                                    headers=bearer(read_token))
        assert response.status_code == 404


async def test_embeddings_under_drop_are_not_indexed(settings: Settings,
                                                     read_token: str) -> None:
    dropped = replace(settings, biometric_policy=BiometricPolicy(embeddings="drop"))
    job_id = f"dropped-{uuid.uuid4().hex[:6]}"
    async with serve_in_process(dropped) as client:
        await deliver(client, image_job(job_id, [person([1.0, 0.0, 0.0])]))
        await asyncio.sleep(2.5)  # two rounds of the tailer
        response = await search(client, read_token, {"embedding": [1.0, 0.0, 0.0]})
        assert response.status_code == 422
        assert response.json()["details"]["dimensions"] == []


VECTOR = [0.3, 0.4, 0.5, 0.6]
NEAR = [0.3, 0.4, 0.5, 0.7]


async def deliver_crowds(client: httpx.AsyncClient, tag: str) -> None:
    """Two jobs of faces equal to VECTOR (more than a search fetches beyond k), and one face
    near it: until the index has dropped both crowds, the near face is not the first hit."""
    await deliver(client, image_job(f"crowd-{tag}", [person(VECTOR)] * 8))
    await deliver(client, image_job(f"people-{tag}", [person(VECTOR)] * 7))
    await deliver(client, image_job(f"other-{tag}", [person(NEAR)]))


async def erase_crowds(client: httpx.AsyncClient, admin: str, tag: str) -> None:
    for item in range(7):
        erased = await client.delete(f"/v1/jobs/people-{tag}/persons/{item}/0",
                                     headers=bearer(admin))
        assert erased.status_code == 204, erased.text
    deleted = await client.delete(f"/v1/jobs/crowd-{tag}", headers=bearer(admin))
    assert deleted.status_code == 204, deleted.text


async def first_hit_is_the_near_face(client: httpx.AsyncClient, token: str, tag: str) -> bool:
    data = await hits(client, token, {"embedding": VECTOR, "k": 1})
    return [h["job_id"] for h in data] == [f"other-{tag}"]


async def test_an_erased_person_and_an_erased_job_leave_the_results_within_5_seconds(
        settings: Settings, read_token: str) -> None:
    admin = await create_token(settings, name="dpo", scope="admin")
    tag = uuid.uuid4().hex[:6]
    async with serve_in_process(settings) as client:
        await deliver_crowds(client, tag)
        await indexed(client, read_token, VECTOR, f"people-{tag}", 7)
        await indexed(client, read_token, VECTOR, f"crowd-{tag}", 8)
        await indexed(client, read_token, VECTOR, f"other-{tag}", 1)
        assert not await first_hit_is_the_near_face(client, read_token, tag)
        await erase_crowds(client, admin, tag)
        await eventually(lambda: first_hit_is_the_near_face(client, read_token, tag),
                         "the erased faces gone from the index")
        erased = await search(client, read_token, {"person": {
            "job_id": f"people-{tag}", "item_index": 1, "person_index": 0}})
        assert erased.status_code == 422
        assert erased.json()["details"]["parameter"] == "person"


def serve_env(database_url: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
            "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE, "RECEIVER_LOG_LEVEL": "warning"}


async def test_erasures_reach_another_process_sharing_postgresql_within_5_seconds(
        postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=postgres_url, webhook_secrets=(SECRET,),
                        encryption_keys=parse_keys(TEST_KEY_LINE))
    reader = await create_token(settings, name="reader", scope="read")
    admin = await create_token(settings, name="dpo", scope="admin")
    tag = "shared"
    with serve(env=serve_env(postgres_url), cwd=tmp_path) as one, \
            serve(env=serve_env(postgres_url), cwd=tmp_path) as two:
        async with httpx.AsyncClient(base_url=one.url, timeout=30) as first, \
                httpx.AsyncClient(base_url=two.url, timeout=30) as second:
            await deliver_crowds(first, tag)
            await indexed(second, reader, VECTOR, f"people-{tag}", 7)
            await indexed(second, reader, VECTOR, f"crowd-{tag}", 8)
            await indexed(second, reader, VECTOR, f"other-{tag}", 1)
            assert not await first_hit_is_the_near_face(second, reader, tag)
            await erase_crowds(first, admin, tag)
            await eventually(lambda: first_hit_is_the_near_face(second, reader, tag),
                             "the erasures seen by the other process")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    with captured_json_logs("debug") as stream:
        yield stream


def events(stream: io.StringIO) -> list[str]:
    return [json.loads(line).get("event", "") for line in stream.getvalue().splitlines()
            if line.strip()]


async def test_the_index_survives_a_restart_from_its_encrypted_snapshot_and_a_corrupt_one_is_rebuilt(  # noqa: E501
        sqlite_url: str, json_logs: io.StringIO) -> None:
    settings = Settings(database_url=sqlite_url, webhook_secrets=(SECRET,),
                        encryption_keys=parse_keys(TEST_KEY_LINE))
    reader = await create_token(settings, name="reader", scope="read")
    vectors = [[0.123456789, -0.987654321, 0.555555555], [0.3, 0.2, 0.1]]
    async with serve_in_process(settings) as client:
        await deliver(client, image_job("kept", [person(v) for v in vectors]))
        await indexed(client, reader, vectors[0], "kept", 2)
    path = settings.data_dir / FILE_NAME
    assert path.is_file()
    assert path.stat().st_mode & 0o777 == 0o600
    data = path.read_bytes()
    for vector in vectors:
        unit = np.asarray(vector) / np.linalg.norm(vector)
        for needle in (pack_doubles(vector), unit.astype(np.float32).tobytes(),
                       struct.pack("<f", unit[0]), repr(vector[0]).encode()):
            assert needle not in data, "plaintext embedding bytes in the snapshot"
    assert "faces.index_built" in events(json_logs)

    json_logs.truncate(0)
    json_logs.seek(0)
    async with serve_in_process(settings) as client:
        await indexed(client, reader, vectors[0], "kept", 2)
    assert "faces.snapshot_loaded" in events(json_logs)
    assert "faces.index_built" not in events(json_logs)

    damaged = bytearray(path.read_bytes())
    first_record = damaged.index(b"\n", len(snapshot.MAGIC)) + 1
    damaged[first_record + 40] ^= 0xFF
    path.write_bytes(bytes(damaged))
    json_logs.truncate(0)
    json_logs.seek(0)
    async with serve_in_process(settings) as client:
        await indexed(client, reader, vectors[0], "kept", 2)
    assert "faces.snapshot_discarded" in events(json_logs)
    assert "faces.index_built" in events(json_logs)


async def test_a_snapshot_stays_usable_after_the_latest_job_was_deleted(
        settings: Settings, read_token: str, json_logs: io.StringIO) -> None:
    """Deleting the latest job takes its deliveries, so the highest delivery id left is below
    the snapshot's cursor: that is not a snapshot from a later database."""
    admin = await create_token(settings, name="dpo", scope="admin")
    tag = uuid.uuid4().hex[:6]
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(f"kept-{tag}", [person(VECTOR)]))
        await deliver(client, image_job(f"latest-{tag}", [person(NEAR)]))
        await indexed(client, read_token, NEAR, f"latest-{tag}")
        await indexed(client, read_token, VECTOR, f"kept-{tag}")
        deleted = await client.delete(f"/v1/jobs/latest-{tag}", headers=bearer(admin))
        assert deleted.status_code == 204, deleted.text

        async def gone() -> bool:
            data = await hits(client, read_token, {"embedding": NEAR, "k": 100})
            return all(h["job_id"] != f"latest-{tag}" for h in data)

        await eventually(gone, "the deleted job out of the index")
    json_logs.truncate(0)
    json_logs.seek(0)
    async with serve_in_process(settings) as client:
        await indexed(client, read_token, VECTOR, f"kept-{tag}")
        data = await hits(client, read_token, {"embedding": NEAR, "k": 100})
    assert all(h["job_id"] != f"latest-{tag}" for h in data)
    assert "faces.snapshot_loaded" in events(json_logs)
    assert "faces.snapshot_discarded" not in events(json_logs)


async def test_a_snapshot_of_a_database_that_has_gone_further_is_discarded(
        sqlite_url: str, json_logs: io.StringIO) -> None:
    settings = Settings(database_url=sqlite_url, webhook_secrets=(SECRET,),
                        encryption_keys=parse_keys(TEST_KEY_LINE))
    async with serve_in_process_with_state(settings) as (client, state):
        await deliver(client, image_job("first", [person(VECTOR)]))
        faces: sync.FaceSync = state["faces"]

        async def followed() -> bool:  # the snapshot's cursor then covers the delivery
            return faces._cursors.delivery_id >= 1 and faces.index.job_pk_of("first") is not None

        await eventually(followed, "the tailer past the delivery")
    path = settings.data_dir / FILE_NAME
    kept = path.read_bytes()
    database = Path(make_url(sqlite_url).database or "")
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    await asyncio.to_thread(upgrade, sqlite_url)  # the same place, a database begun anew
    path.write_bytes(kept)
    json_logs.truncate(0)
    json_logs.seek(0)
    async with serve_in_process(settings) as client:
        reader = await create_token(settings, name="r2", scope="read")

        async def empty() -> bool:
            answer = await search(client, reader, {"embedding": VECTOR})
            return answer.status_code == 422
        await eventually(empty, "an index built from the new, empty database")
    assert "faces.snapshot_discarded" in events(json_logs)
    assert "ahead of the database" in json_logs.getvalue()


@pytest.mark.parametrize("retention", [Retention(jobs_days=1), Retention(biometrics_days=1)])
async def test_a_purge_removes_the_faces_it_deleted_or_erased_from_the_index(
        settings: Settings, read_token: str, retention: Retention) -> None:
    tag = uuid.uuid4().hex[:6]
    async with serve_in_process(settings) as client:
        await deliver(client, image_job(f"old-{tag}", [person(VECTOR), person(NEAR)]))
        await indexed(client, read_token, VECTOR, f"old-{tag}", 2)
        database = Database.from_settings(settings)
        try:
            report = await purge(database, settings.encryption_keys, retention,
                                 now=datetime.now(UTC) + timedelta(days=3), token_name="cli")
        finally:
            await database.dispose()
        assert report.batches == 1

        async def emptied() -> bool:
            response = await search(client, read_token, {"embedding": VECTOR})
            return response.status_code == 422 and response.json()["details"][
                "dimensions"] == []

        await eventually(emptied, "the purged faces gone from the index")


async def test_faces_of_one_identity_delivered_to_the_service_become_one_person(
        settings: Settings, read_token: str) -> None:
    """The whole chain in a running service: webhook -> index tailer -> people assigner ->
    /v1/people."""
    rng = np.random.default_rng(7)
    alice, bob = rng.normal(size=16), rng.normal(size=16)
    async with serve_in_process(settings) as client:
        await deliver(client, image_job("people_a", [person(v) for v in
                                                     noisy_copies(alice, 2, 0.05, rng)]))
        await deliver(client, video_job("people_b", [person(v) for v in [
            *noisy_copies(alice, 1, 0.05, rng), *noisy_copies(bob, 1, 0.05, rng)]]))

        async def two_people() -> bool:
            listed = await client.get("/v1/people", headers=bearer(read_token))
            return sorted(p["appearance_count"] for p in listed.json()["data"]) == [1, 3]

        await eventually(two_people, "two people, of 3 and 1 faces", seconds=10)
        listed = (await client.get("/v1/people", headers=bearer(read_token))).json()["data"]
        biggest = max(listed, key=lambda p: p["appearance_count"])
        detail = (await client.get(f"/v1/people/{biggest['id']}",
                                   headers=bearer(read_token))).json()
    assert sorted((a["job_id"], a["item_index"], a["person_index"])
                  for a in detail["appearances"]) == [
        ("people_a", 0, 0), ("people_a", 1, 0), ("people_b", 0, 0)]


async def test_a_process_without_a_face_index_answers_503_face_index_off_and_writes_no_snapshot(
        settings: Settings, read_token: str) -> None:
    off = replace(settings, face_index=False)
    async with serve_in_process(off) as client:
        await deliver(client, image_job(f"image_off_{uuid.uuid4().hex[:8]}",
                                        [person([1.0, 0.0, 0.0])]))
        searched = await search(client, read_token, {"embedding": [1.0, 0.0, 0.0]})
        people = await client.get("/v1/people", headers=bearer(read_token))
    assert searched.status_code == 503, searched.text
    assert searched.json()["code"] == "face_index_off"
    assert "RECEIVER_FACE_INDEX" in searched.json()["error"]
    assert people.status_code == 200, people.text
    assert not (off.data_dir / FILE_NAME).exists()


async def test_a_slow_snapshot_write_spaces_the_next_snapshots_out(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database_url=sqlite_url, webhook_secrets=(SECRET,),
                        encryption_keys=parse_keys(TEST_KEY_LINE))
    database = Database.from_settings(settings)
    faces = sync.FaceSync(database, settings.encryption_keys, tmp_path / FILE_NAME, "test",
                          snapshot_seconds=0.5)
    faces.index.add([face_index.Face(face_index.FaceKey(1, 0, 0), "job", [0.1, 0.2, 0.3],
                                     "video", 1.7e9, None, False)])
    real_append = snapshot.SnapshotFile.append

    def slow_append(self: snapshot.SnapshotFile, *args: Any) -> int:
        time.sleep(0.5)  # as a large index's snapshot would take
        return real_append(self, *args)

    try:
        await faces._save()
        # fast (a few ms, or tens on a busy machine): the configured period, or close to it
        assert 0.5 <= faces.snapshot_interval < 5
        monkeypatch.setattr(snapshot.SnapshotFile, "append", slow_append)
        faces.index.add([face_index.Face(face_index.FaceKey(2, 0, 0), "job-2", [0.3, 0.2, 0.1],
                                         "video", 1.7e9, None, False)])
        await faces._save()
        assert faces.snapshot_interval >= 0.5 / sync.SNAPSHOT_SHARE  # 25 s: 2% of the time
        assert (tmp_path / FILE_NAME).is_file()
    finally:
        await database.dispose()


async def test_the_service_runs_numpys_blas_on_one_thread(settings: Settings) -> None:
    """A BLAS thread per core made every small product wait for the other cores' threads
    (service/faces/runtime.py)."""
    async with serve_in_process(settings):
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas, "numpy's BLAS not found"
        assert all(pool["num_threads"] == 1 for pool in blas)
