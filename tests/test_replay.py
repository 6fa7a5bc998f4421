"""``results-receiver replay``: rebuild normalized rows from the stored raw deliveries."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from service import ingest, models
from service.db import Database
from service.privacy.protect import Protector
from tests.conftest import bearer, serve_in_process
from tests.support.db import table_counts
from tests.support.keys import TEST_KEY_LINE
from tests.support.server import run_cli
from tests.support.signing import encode, example, signed_headers


async def _deliver_examples(settings) -> None:
    async with serve_in_process(settings) as client:
        for name in ("video_finished.json", "image_batch_finished.json"):
            body = encode(example(name))
            response = await client.post("/webhooks/analysis", content=body,
                                         headers=signed_headers(body))
            assert response.json()["outcome"] == "stored"


async def _damage_rows(settings) -> None:
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            for table in models.ENTITY_TABLES:
                if table.name != "media_items":
                    await conn.execute(sa.delete(table))
    finally:
        await database.dispose()


def _env(database_url: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE}


async def _add_rejected(settings, body: bytes) -> None:
    """A delivery an earlier, stricter version had rejected, kept with its raw bytes."""
    database = Database.from_settings(settings)
    try:
        writer = database.writer()
        delivery = ingest.IncomingDelivery(body=body, received_at=models.utcnow(),
                                           signature_scheme="hmac-sha256")
        body_stored = Protector(settings.biometric_policy, settings.encryption_keys
                                ).protect_rejected(delivery, "video_late")
        await ingest.store_rejected(writer, delivery, body_stored, job_id="video_late",
                                    error_code="invalid_payload", error="old rule")
    finally:
        await database.dispose()


def test_replay_all_rebuilds_rows_and_recovers_rejected_deliveries(settings, database_url,
                                                                   tmp_path):
    asyncio.run(_deliver_examples(settings))
    intact = asyncio.run(table_counts(settings))
    asyncio.run(_damage_rows(settings))
    assert asyncio.run(table_counts(settings))["scenes"] == 0
    late = example("video_finished.json")
    late["job_id"] = "video_late"
    asyncio.run(_add_rejected(settings, encode(late)))

    result = run_cli("replay", "--all", env=_env(database_url),
                     cwd=tmp_path)
    assert "renormalized=2" in result.stdout
    assert "recovered_stored=1" in result.stdout
    assert "[3/3]" in result.stderr

    counts = asyncio.run(table_counts(settings))
    # Both jobs are whole again, and the recovered one adds a second copy of the video rows.
    video_rows = {"scenes": 2, "frame_activity": 1, "sections": 2, "section_segments": 2,
                  "ocr_texts": 1, "person_scenes": 2, "persons": 2, "tags": 0}
    for table, rows in video_rows.items():
        assert counts[table] == intact[table] + rows, table
    assert counts["jobs"] == 3


@pytest.mark.anyio
async def test_replayed_job_payload_equals_the_delivery(settings, database_url, tmp_path,
                                                        read_token):
    await _deliver_examples(settings)
    await _damage_rows(settings)
    await asyncio.to_thread(run_cli, "replay", "--job", "video_12345",
                            env=_env(database_url), cwd=tmp_path)
    async with serve_in_process(settings) as client:
        payload = await client.get("/v1/jobs/video_12345/payload", headers=bearer(read_token))
    assert payload.json() == example("video_finished.json")


def test_replay_of_an_unknown_job_says_so(settings, database_url, tmp_path):
    result = run_cli("replay", "--job", "nope", env=_env(database_url),
                     cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "no stored delivery for job 'nope'" in result.stderr
