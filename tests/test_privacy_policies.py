"""Biometric field policies (encrypt / store / drop) from the rows to /payload and /raw, on
SQLite and PostgreSQL; crypto-shredding on job deletion; unknown and wrong keys."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
import zstandard

from service import models
from service.config import Settings
from service.privacy.envelope import SealedValueError, Sealer, unwrap_data_key
from service.privacy.keys import parse_keys
from service.privacy.policy import BiometricPolicy
from service.vectors import pack_doubles
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.biometrics import EMBEDDING, THUMBNAIL
from tests.support.db import fetch_all
from tests.support.db import stored_bodies as stored_bodies_as_received
from tests.support.server import run_cli
from tests.support.signing import SECRET, encode, signed_headers
from tests.test_round_trip import assert_json_equal, without_nulls

pytestmark = pytest.mark.anyio

persons_table = models.table_of(models.Person)


def video_with_faces(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id, "status": "finished",
        "result": {
            "raw_scenes": [{"start_seconds": 0, "end_seconds": 4.5}],
            "person_constellation_scenes": [
                {"time_segment": {"start_seconds": 1, "end_seconds": 2},
                 "person_ids": [
                     {"age": 41.5, "gender": "female", "face_embedding": EMBEDDING,
                      "face_thumbnail": THUMBNAIL, "allowlisted": False,
                      "relative_prominence": 0.5},
                     {"gender": "unidentified", "face_embedding": [0.2, 0.3, 0.4]},
                 ]},
            ],
            "an_unknown_field": {"kept": "in the raw body"},
        },
    }


async def deliver(client: Any, document: dict[str, Any]) -> bytes:
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    assert response.status_code == 200, response.text
    return body


async def person_rows(settings: Settings) -> list[Any]:
    return await fetch_all(settings, sa.select(persons_table).order_by(
        persons_table.c.item_index, persons_table.c.person_index))


async def stored_bodies(settings: Settings) -> list[Any]:
    return await fetch_all(settings, sa.select(models.delivery_bodies))


async def test_default_policy_seals_embeddings_thumbnails_and_the_body_and_reads_them_back(
        settings: Settings) -> None:
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    document = video_with_faces(job_id)
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        body = await deliver(client, document)
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
        raw_id = (await client.get("/v1/deliveries", headers=bearer(admin))).json()["data"][0]
        raw = await client.get(f"/v1/deliveries/{raw_id['id']}/raw", headers=bearer(admin))
        persons = await client.get(f"/v1/jobs/{job_id}/persons", headers=bearer(admin))
    first, second = await person_rows(settings)
    assert first.face_embedding is None
    assert first.face_thumbnail is None
    assert first.face_embedding_sealed is not None
    assert first.face_thumbnail_sealed is not None
    assert pack_doubles(EMBEDDING) not in first.face_embedding_sealed
    assert (first.age, first.gender) == (41.5, "female")  # demographics: store by default
    assert second.face_embedding_sealed is not None
    assert second.face_thumbnail_sealed is None
    (stored,) = await stored_bodies(settings)
    assert stored.data_key_id is not None
    assert stored.codec == "zstd"
    assert THUMBNAIL.encode() not in stored.body
    assert b"face_embedding" not in stored.body
    assert payload.status_code == 200
    assert "withheld-biometrics" not in payload.headers
    expected = without_nulls(document)
    del expected["result"]["an_unknown_field"]
    assert_json_equal(payload.json(), expected)
    assert raw.status_code == 200
    assert raw.content == body
    assert "withheld-biometrics" not in raw.headers
    listed = persons.json()["data"]
    assert listed[0]["face_embedding"] == EMBEDDING
    assert listed[0]["face_thumbnail"] == THUMBNAIL


@pytest.mark.parametrize("field", ["thumbnails", "embeddings", "demographics"])
@pytest.mark.parametrize("policy", ["encrypt", "store", "drop"])
async def test_each_policy_of_each_field_governs_rows_raw_body_and_payload(
        settings: Settings, field: str, policy: str) -> None:
    others = {"thumbnails": "encrypt", "embeddings": "encrypt", "demographics": "store"}
    others[field] = policy
    settings = replace(settings, biometric_policy=BiometricPolicy(**others))  # type: ignore[arg-type]
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    document = video_with_faces(job_id)
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        body = await deliver(client, document)
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
        (delivery,) = (await client.get("/v1/deliveries", headers=bearer(admin))).json()["data"]
        raw = await client.get(f"/v1/deliveries/{delivery['id']}/raw", headers=bearer(admin))
    row = (await person_rows(settings))[0]
    plain, sealed, names = {
        "thumbnails": (row.face_thumbnail, row.face_thumbnail_sealed, ["face_thumbnail"]),
        "embeddings": (row.face_embedding, row.face_embedding_sealed, ["face_embedding"]),
        "demographics": (row.age, row.demographics_sealed, ["age", "gender"]),
    }[field]
    person = payload.json()["result"]["person_constellation_scenes"][0]["person_ids"][0]
    original = document["result"]["person_constellation_scenes"][0]["person_ids"][0]
    if policy == "encrypt":
        assert plain is None
        assert sealed is not None
    elif policy == "store":
        assert plain is not None
        assert sealed is None
    else:
        assert plain is None
        assert sealed is None
    if policy == "drop":
        assert all(name not in person for name in names)
        assert payload.headers["withheld-biometrics"] == "fields=" + ",".join(names)
        returned = msgspec.json.decode(raw.content)
        raw_person = returned["result"]["person_constellation_scenes"][0]["person_ids"][0]
        assert all(name not in raw_person for name in names)
        assert returned["result"]["an_unknown_field"] == {"kept": "in the raw body"}
        assert raw.headers["withheld-biometrics"] == "fields=" + ",".join(sorted(names))
    else:
        assert all(person[name] == original[name] for name in names)
        assert raw.content == body
        assert "withheld-biometrics" not in raw.headers
    (stored,) = await stored_bodies(settings)
    encrypts = "encrypt" in others.values()
    assert (stored.data_key_id is not None) == encrypts
    if not encrypts:
        # Stored compressed but in the clear: a policy of store/drop only.
        readable = zstandard.ZstdDecompressor().decompress(stored.body)
        assert (THUMBNAIL.encode() in readable) == (others["thumbnails"] == "store")


async def test_deleting_a_job_destroys_its_data_keys_so_kept_copies_cannot_be_decrypted(
        settings: Settings) -> None:
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, video_with_faces(job_id))
        # What a backup taken now would hold.
        backup_rows = await person_rows(settings)
        backup_keys = await fetch_all(settings, sa.select(models.data_keys))
        assert [k.job_id for k in backup_keys] == [job_id]
        deleted = await client.delete(f"/v1/jobs/{job_id}", headers=bearer(admin))
        assert deleted.status_code == 204
        await deliver(client, video_with_faces(f"other_{job_id}"))
    remaining = await fetch_all(settings, sa.select(models.data_keys))
    assert [k.job_id for k in remaining] == [f"other_{job_id}"]
    assert settings.encryption_keys is not None
    sealed = backup_rows[0].face_embedding_sealed
    # Even with the master key, no data key that still exists opens the copy.
    for key in remaining:
        data_key = unwrap_data_key(settings.encryption_keys, key.key_id, key.wrapped,
                                   key_ref=key.id.encode())
        with pytest.raises(SealedValueError):
            Sealer(data_key).open(sealed, aad=b"")
    # The backup's own wrapped key is all that could open it, and it is gone from the store.
    assert all(k.id != backup_keys[0].id for k in remaining)


async def test_data_under_an_unknown_key_id_is_a_409_naming_the_key_id(
        settings: Settings) -> None:
    job_id = f"video_{uuid.uuid4().hex[:8]}"
    admin = await create_token(settings, name="dpo", scope="admin")
    async with serve_in_process(settings) as client:
        await deliver(client, video_with_faces(job_id))
    other = parse_keys("other-key:" + base64.b64encode(os.urandom(32)).decode())
    async with serve_in_process(replace(settings, encryption_keys=other)) as client:
        payload = await client.get(f"/v1/jobs/{job_id}/payload", headers=bearer(admin))
        persons = await client.get(f"/v1/jobs/{job_id}/persons", headers=bearer(admin))
        summary = await client.get(f"/v1/jobs/{job_id}", headers=bearer(admin))
    assert payload.status_code == 409
    assert payload.json()["code"] == "key_unavailable"
    assert payload.json()["details"] == {"key_id": "test-key"}
    assert "test-key" in payload.json()["error"]
    assert persons.status_code == 409
    assert summary.status_code == 200  # nothing sealed in a summary


async def test_serve_refuses_to_create_a_new_key_over_data_sealed_under_a_missing_one(
        settings: Settings, tmp_path: Path) -> None:
    async with serve_in_process(settings) as client:
        await deliver(client, video_with_faces(f"video_{uuid.uuid4().hex[:8]}"))
    # Another replica's folder (or a lost key file): no key configured, none on disk.
    result = run_cli("serve", "--port", "1", check=False, cwd=tmp_path, env={
        "RECEIVER_DATABASE_URL": settings.database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET})
    assert result.returncode == 2, result.stderr
    assert "test-key (1 data keys)" in result.stderr
    assert "RECEIVER_ENCRYPTION_KEYS" in result.stderr
    assert not (tmp_path / "data" / "encryption-keys").exists()


async def test_large_bodies_prepared_on_several_threads_at_once_are_all_stored_and_readable(
        settings: Settings) -> None:
    # Bodies over the thread-pool threshold are compressed and sealed on worker threads,
    # several at once.
    padding = [{"start_seconds": i, "end_seconds": i + 0.5} for i in range(9000)]
    documents = []
    for _ in range(8):
        document = video_with_faces(f"video_{uuid.uuid4().hex[:8]}")
        document["result"]["raw_scenes"] = padding
        documents.append(document)
    async with serve_in_process(settings) as client:
        bodies = await asyncio.gather(*(deliver(client, d) for d in documents))
    assert all(len(body) > 256 * 1024 for body in bodies)
    assert sorted(await stored_bodies_as_received(settings)) == sorted(bodies)
