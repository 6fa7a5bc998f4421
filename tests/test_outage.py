"""Database outages: 503 while PostgreSQL is down, recovery without a restart of the service."""

from __future__ import annotations

import asyncpg
import pytest

from service.config import Settings
from service.writer.postgres import PostgresWriter
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.keys import TEST_KEYRING
from tests.support.signing import SECRET, encode, example, signed_headers

pytestmark = pytest.mark.anyio


async def test_database_down_gives_503_and_a_retry_after_restart_stores(own_postgres):
    url = own_postgres.url("results")
    settings = Settings(database_url=url, webhook_secrets=(SECRET,), encryption_keys=TEST_KEYRING)
    token = await create_token(settings, name="reader", scope="read")
    body = encode(example("video_finished.json"))
    async with serve_in_process(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        own_postgres.stop()

        down = await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "unavailable"
        assert down.headers["retry-after"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        query = await client.get("/v1/jobs/video_12345", headers=bearer(token))
        assert query.status_code == 503
        assert query.json()["code"] == "unavailable"

        own_postgres.start()
        retry = await client.post("/webhooks/analysis", content=body,
                                  headers=signed_headers(body))
        assert retry.status_code == 200, retry.text
        assert retry.json()["outcome"] == "stored"
        assert (await client.get("/readyz")).status_code == 200
        payload = await client.get("/v1/jobs/video_12345/payload", headers=bearer(token))
        assert payload.json() == example("video_finished.json")


async def test_a_driver_left_in_an_inconsistent_state_gives_503_and_the_retry_stores(
        postgres_url, monkeypatch):
    # The fault PostgreSQL's shutdown once caused under load (asyncpg: "cannot switch to
    # state 12; another operation (2) is in progress"), injected once.
    real_insert = PostgresWriter.insert_new_job
    faults = [asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress")]

    async def insert_once_broken(self, *args):
        if faults:
            raise faults.pop()
        return await real_insert(self, *args)

    monkeypatch.setattr(PostgresWriter, "insert_new_job", insert_once_broken)
    settings = Settings(database_url=postgres_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING)
    body = encode(example("video_finished.json"))
    async with serve_in_process(settings) as client:
        first = await client.post("/webhooks/analysis", content=body,
                                  headers=signed_headers(body))
        assert first.status_code == 503
        assert first.json()["code"] == "unavailable"
        retry = await client.post("/webhooks/analysis", content=body,
                                  headers=signed_headers(body))
        assert retry.status_code == 200
        assert retry.json()["outcome"] == "stored"
