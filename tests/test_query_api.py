"""The query API on SQLite and PostgreSQL: auth, entity rows, OCR search, deliveries, deletion."""

from __future__ import annotations

import functools
import random

import anyio
import pytest
import sqlalchemy as sa

from service import models
from service.config import Settings
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.db import fetch_all, table_counts
from tests.support.keys import TEST_KEYRING
from tests.support.postgres import execute_autocommit
from tests.support.signing import SECRET, encode, example, signed_headers

pytestmark = pytest.mark.anyio

READ_ROUTES = [
    "/v1/jobs",
    "/v1/jobs/video_12345",
    "/v1/jobs/video_12345/payload",
    "/v1/jobs/video_12345/scenes",
    "/v1/jobs/video_12345/sections",
    "/v1/jobs/video_12345/ocr",
    "/v1/jobs/video_12345/persons",
    "/v1/jobs/video_12345/activity",
    "/v1/jobs/video_12345/items",
    "/v1/jobs/image_batch_123/tags",
    "/v1/search/ocr?q=leash",
    "/v1/sections?tag=intro",
    "/v1/tags?tag=cat",
]
ADMIN_ROUTES = [
    ("GET", "/v1/deliveries"),
    ("GET", "/v1/deliveries/1"),
    ("GET", "/v1/deliveries/1/raw"),
    ("DELETE", "/v1/jobs/video_12346"),
]


async def deliver(client, document: object) -> dict[str, object]:
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


@pytest.fixture
async def examples(client) -> None:
    for name in ("video_finished.json", "image_batch_finished.json", "video_failed.json"):
        await deliver(client, example(name))


# --- auth matrix --------------------------------------------------------------------------------

@pytest.mark.parametrize("route", READ_ROUTES)
async def test_read_route_needs_a_token_and_accepts_read_and_admin(client, examples, route,
                                                                   read_token, admin_token):
    anonymous = await client.get(route)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = await client.get(route, headers=bearer(read_token + "x"))
    assert wrong.status_code == 401
    for token in (read_token, admin_token):
        response = await client.get(route, headers=bearer(token))
        assert response.status_code == 200, (route, response.text)


@pytest.mark.parametrize(("method", "route"), ADMIN_ROUTES)
async def test_admin_route_is_401_anonymous_403_for_read_and_allowed_for_admin(
        client, examples, method, route, read_token, admin_token):
    anonymous = await client.request(method, route)
    assert anonymous.status_code == 401
    as_reader = await client.request(method, route, headers=bearer(read_token))
    assert as_reader.status_code == 403
    assert as_reader.json()["code"] == "forbidden"
    as_admin = await client.request(method, route, headers=bearer(admin_token))
    assert as_admin.status_code in (200, 204), as_admin.text


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token abc",
                                    "Bearer " + "x" * 300])
async def test_malformed_authorization_headers_are_401(client, header):
    response = await client.get("/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401


async def test_a_revoked_token_is_refused(client, settings, read_token):
    from service import tokens
    from service.db import Database
    from service.models import utcnow

    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            assert await tokens.revoke(conn, name="reader", now=utcnow())
    finally:
        await database.dispose()
    response = await client.get("/v1/jobs", headers=bearer(read_token))
    assert response.status_code == 401


async def test_tokens_are_stored_only_as_hashes(settings, read_token):
    import sqlalchemy as sa

    from service import models
    from tests.support.db import fetch_all

    rows = await fetch_all(settings, sa.select(models.api_tokens))
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert read_token not in stored
    assert read_token[3:] not in stored


# --- entity rows -------------------------------------------------------------------------------

async def test_job_summary_counts_every_entity(client, examples, read_token):
    summary = (await client.get("/v1/jobs/video_12345", headers=bearer(read_token))).json()
    assert summary["kind"] == "video"
    assert summary["counts"] == {"items": 1, "scenes": 2, "activity": 3, "sections": 2,
                                 "segments": 2, "ocr": 1, "person_scenes": 2, "persons": 2,
                                 "tags": 0}
    assert summary["links"]["payload"] == "/v1/jobs/video_12345/payload"
    batch = (await client.get("/v1/jobs/image_batch_123", headers=bearer(read_token))).json()
    assert batch["kind"] == "image_batch"
    assert batch["counts"]["tags"] == 4
    assert batch["counts"]["persons"] == 1


async def test_entity_rows_carry_the_delivered_values(client, examples, read_token):
    headers = bearer(read_token)
    scenes = (await client.get("/v1/jobs/video_12345/scenes", headers=headers)).json()
    assert [(s["start_seconds"], s["end_seconds"]) for s in scenes["data"]] == [
        (0, 5.2), (5.2, 10.7)]
    assert scenes["next_cursor"] is None
    sections = (await client.get("/v1/jobs/video_12345/sections", headers=headers)).json()
    assert sections["data"][1]["section_tag"] == "demo"
    assert sections["data"][1]["time_segments"] == [{"start_seconds": 3, "end_seconds": 5.2}]
    persons = (await client.get("/v1/jobs/video_12345/persons", headers=headers)).json()
    assert [p["face_embedding"] for p in persons["data"]] == [[0.11, -0.02, 0.33],
                                                               [0.05, 0.07, -0.12]]
    assert persons["data"][0]["start_seconds"] == 3
    ocr = (await client.get("/v1/jobs/image_batch_123/ocr", headers=headers)).json()
    assert [(o["external_id"], o["full_text"]) for o in ocr["data"]] == [
        ("101", "Kitchen"), ("102", "No dogs off leash")]
    items = (await client.get("/v1/jobs/image_batch_123/items", headers=headers)).json()
    assert [i["external_id"] for i in items["data"]] == ["101", "102"]


async def test_unknown_job_entity_route_is_404(client, read_token):
    for route in ("/v1/jobs/nope", "/v1/jobs/nope/scenes", "/v1/jobs/nope/payload"):
        response = await client.get(route, headers=bearer(read_token))
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("job_id", ["..%2F..%2Fetc%2Fpasswd", "%00", "a%00b", "%2e%2e", "x" * 600,
                                    "%E2%80%AE", "'; DROP TABLE jobs; --"])
async def test_path_tricks_in_job_ids_are_plain_404s(client, examples, read_token, job_id):
    response = await client.get(f"/v1/jobs/{job_id}", headers=bearer(read_token))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert (await client.get("/v1/jobs/video_12345", headers=bearer(read_token))).status_code == 200


# --- OCR search --------------------------------------------------------------------------------

HOSTILE = ["off-leash", "dogs:", '"', '"no dogs"', "'", "*", "dog*", "(", "()", "(leash)",
           "NEAR(a b)", "a AND", "OR", "NOT", "-leash", "leash -dogs", "\\", "%", "_", "%_%",
           "東京", "東京タワー", "no", "日", "😀", "a" * 200, "::", "^", "{}", "[x]", "dogs; --",
           '"遛狗"', "遛*", "遛:狗", "(遛狗)", "遛 OR 狗", "NEAR(遛 狗)", "遛'狗", "遛" * 200,
           "".join(chr(0x4E00 + i) for i in range(200)), "ﾀﾜｰ", "・", "。"]


@pytest.mark.parametrize("q", HOSTILE)
async def test_hostile_search_strings_never_error(client, examples, read_token, q):
    response = await client.get("/v1/search/ocr", params={"q": q}, headers=bearer(read_token))
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["data"], list)


async def test_search_finds_words_prefixes_and_substrings(client, examples, read_token):
    async def hits(q: str) -> list[tuple[str, str | None]]:
        response = await client.get("/v1/search/ocr", params={"q": q},
                                    headers=bearer(read_token))
        return sorted((h["job_id"], h["external_id"]) for h in response.json()["data"])

    both = [("image_batch_123", "102"), ("video_12345", None)]
    assert await hits("leash") == both
    assert await hits("off-leash") == both
    assert await hits("Dogs:") == both
    assert await hits("lea") == both
    assert await hits("kitchen") == [("image_batch_123", "101")]
    assert await hits("itche") == [("image_batch_123", "101")]
    assert await hits("zebra") == []


async def test_search_hits_carry_job_item_text_and_time_segment(client, examples, read_token):
    response = await client.get("/v1/search/ocr", params={"q": "leash", "language_code": "en"},
                                headers=bearer(read_token))
    [hit] = response.json()["data"]
    assert hit["job_id"] == "video_12345"
    assert hit["full_text"] == "No dogs off leash"
    assert (hit["start_seconds"], hit["end_seconds"]) == (3, 5.2)
    assert hit["language_code"] == "en"


async def test_search_finds_cjk_substrings(client, read_token):
    document = example("image_batch_finished.json")
    document["job_id"] = "image_batch_cjk"
    document["items"][0]["result"]["ocr_results"] = [
        {"language_code": "ja", "full_text": "東京タワーへようこそ"}]
    await deliver(client, document)
    response = await client.get("/v1/search/ocr", params={"q": "タワー"},
                                headers=bearer(read_token))
    assert [h["full_text"] for h in response.json()["data"]] == ["東京タワーへようこそ"]


async def _deliver_ocr(client, job_id: str, texts: list[str]) -> None:
    document = example("image_batch_finished.json")
    document["job_id"] = job_id
    document["items"][0]["result"]["ocr_results"] = [{"full_text": t} for t in texts]
    await deliver(client, document)


async def _texts_found(client, token: str, q: str) -> list[str]:
    response = await client.get("/v1/search/ocr", params={"q": q}, headers=bearer(token))
    assert response.status_code == 200, response.text
    return sorted(h["full_text"] for h in response.json()["data"])


CJK_TEXTS = ["禁止遛狗", "遛一遛小狗", "東京タワーへようこそ", "서울에서 만나요"]


async def test_search_finds_cjk_words_of_one_and_two_characters(client, read_token):
    await _deliver_ocr(client, "image_batch_cjk", CJK_TEXTS)
    found = functools.partial(_texts_found, client, read_token)
    assert await found("遛狗") == ["禁止遛狗"]
    assert await found("禁止") == ["禁止遛狗"]
    assert await found("遛") == ["禁止遛狗", "遛一遛小狗"]
    assert await found("狗") == ["禁止遛狗", "遛一遛小狗"]
    assert await found("禁") == ["禁止遛狗"]
    assert await found("禁止遛狗") == ["禁止遛狗"]
    assert await found("東京") == ["東京タワーへようこそ"]
    assert await found("へ") == ["東京タワーへようこそ"]
    assert await found("よう") == ["東京タワーへようこそ"]
    assert await found("ワー") == ["東京タワーへようこそ"]
    assert await found("ﾀﾜｰ") == ["東京タワーへようこそ"]  # halfwidth katakana
    assert await found("에서") == ["서울에서 만나요"]
    assert await found("울") == ["서울에서 만나요"]
    assert await found("만나") == ["서울에서 만나요"]


async def test_cjk_search_needs_its_characters_side_by_side(client, read_token):
    await _deliver_ocr(client, "image_batch_cjk", CJK_TEXTS)
    found = functools.partial(_texts_found, client, read_token)
    assert await found("遛狗") == ["禁止遛狗"]  # not 遛一遛小狗: 遛 and 狗 apart
    assert await found("一狗") == []
    assert await found("狗遛") == []
    assert await found("禁遛狗") == []
    assert await found("京へ") == []
    assert await found("서만") == []
    assert await found("虎") == []


async def test_exact_cjk_substring_ranks_above_a_text_with_only_its_pairs(client, read_token):
    await _deliver_ocr(client, "image_batch_cjk", ["遛狗 禁止 止遛 遛狗 禁止", "禁止遛狗"])
    response = await client.get("/v1/search/ocr", params={"q": "禁止遛狗"},
                                headers=bearer(read_token))
    assert [h["full_text"] for h in response.json()["data"]] == ["禁止遛狗",
                                                                 "遛狗 禁止 止遛 遛狗 禁止"]


async def test_search_finds_mixed_latin_and_cjk_text(client, read_token):
    await _deliver_ocr(client, "image_batch_mixed",
                       ["USB充電器 for iPhone", "iPhone用ケース", "Parking only"])
    found = functools.partial(_texts_found, client, read_token)
    assert await found("USB充電") == ["USB充電器 for iPhone"]
    assert await found("充電 usb") == ["USB充電器 for iPhone"]
    assert await found("iphone") == ["USB充電器 for iPhone", "iPhone用ケース"]
    assert await found("用") == ["iPhone用ケース"]
    assert await found("ケース iPhone") == ["iPhone用ケース"]
    assert await found("ケース android") == []
    assert await found("parking 充電") == []
    assert await found("parking") == ["Parking only"]


async def test_only_text_with_cjk_stores_search_terms(client, settings):
    await _deliver_ocr(client, "image_batch_mixed",
                       ["禁止遛狗", "No dogs off leash", "Ünïcode café 2026", "USB充電器"])
    ocr = models.metadata.tables["ocr_texts"]
    rows = await fetch_all(settings, sa.select(ocr.c.full_text, ocr.c.search_terms))
    assert dict(rows) == {"禁止遛狗": "禁止 止遛 遛狗 狗", "No dogs off leash": None,
                          "Ünïcode café 2026": None, "USB充電器": "USB 充電 電器 器"}


async def test_search_ranks_word_matches_and_paginates(client, read_token):
    for index in range(7):
        document = example("image_batch_finished.json")
        document["job_id"] = f"image_batch_{index}"
        document["items"][0]["result"]["ocr_results"] = [{"full_text": f"parking lot {index}"}]
        await deliver(client, document)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"q": "parking", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/search/ocr", params=params,
                                 headers=bearer(read_token))).json()
        seen += [h["full_text"] for h in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"parking lot {i}" for i in range(7))


async def test_replaced_and_deleted_jobs_leave_no_stale_search_hits(client, examples,
                                                                    read_token, admin_token):
    replacement = example("video_finished.json")
    replacement["result"]["ocr_results"] = [{"full_text": "Fresh paint"}]
    assert (await deliver(client, replacement))["outcome"] == "updated"

    async def jobs_found(q: str) -> list[str]:
        response = await client.get("/v1/search/ocr", params={"q": q},
                                    headers=bearer(read_token))
        return sorted(h["job_id"] for h in response.json()["data"])

    assert await jobs_found("leash") == ["image_batch_123"]
    assert await jobs_found("paint") == ["video_12345"]
    deleted = await client.delete("/v1/jobs/image_batch_123", headers=bearer(admin_token))
    assert deleted.status_code == 204
    assert await jobs_found("leash") == []
    assert await jobs_found("kitchen") == []


async def test_search_needs_q(client, read_token):
    for params in ({}, {"q": ""}, {"q": "x" * 201}):
        response = await client.get("/v1/search/ocr", params=params, headers=bearer(read_token))
        assert response.status_code == 422
        assert response.json()["details"]["parameter"] == "q"


# --- deliveries and deletion ---------------------------------------------------------------

async def test_raw_delivery_is_returned_byte_exact(client, admin_token):
    bodies = [
        b'{"job_id":"video_raw","status":"failed","error":"x"}',
        b'{\n  "job_id" : "video_raw2",\t"status":"failed", "extra": "\xc3\xa9\xf0\x9f\x8e\xac"}',
        b'{"job_id": "v", "status": "finished", "result": {"raw_scenes": "bad"}}',
        b"\x00\xff not json at all",
    ]
    for body in bodies:
        await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    listing = (await client.get("/v1/deliveries", params={"limit": 10},
                                headers=bearer(admin_token))).json()
    assert [d["outcome"] for d in listing["data"]] == ["rejected", "rejected", "stored",
                                                       "stored"]
    by_id = {d["id"]: d for d in listing["data"]}
    for delivery_id, body in zip(sorted(by_id), bodies, strict=True):
        raw = await client.get(f"/v1/deliveries/{delivery_id}/raw", headers=bearer(admin_token))
        assert raw.status_code == 200
        assert raw.content == body
        assert raw.headers["content-type"] == "application/octet-stream"
        assert by_id[delivery_id]["size"] == len(body)


async def test_delivery_log_filters_by_job_and_outcome(client, examples, admin_token):
    await deliver(client, example("video_finished.json"))
    bad = encode({"job_id": "video_12345", "status": "finished", "result": []})
    await client.post("/webhooks/analysis", content=bad, headers=signed_headers(bad))
    headers = bearer(admin_token)
    mine = (await client.get("/v1/deliveries", params={"job_id": "video_12345"},
                             headers=headers)).json()["data"]
    assert [d["outcome"] for d in mine] == ["rejected", "duplicate", "stored"]
    rejected = (await client.get("/v1/deliveries", params={"outcome": "rejected"},
                                 headers=headers)).json()["data"]
    assert len(rejected) == 1
    assert rejected[0]["error_code"] == "invalid_payload"
    one = (await client.get(f"/v1/deliveries/{rejected[0]['id']}", headers=headers)).json()
    assert one["job_id"] == "video_12345"
    assert one["links"]["raw"].endswith("/raw")
    missing = await client.get("/v1/deliveries/999999", headers=headers)
    assert missing.status_code == 404


async def test_deleting_a_job_leaves_nothing_behind(client, settings, examples, read_token,
                                                    admin_token):
    before = await table_counts(settings)
    video_rows = {"media_items": 1, "scenes": 2, "frame_activity": 1, "sections": 2,
                  "section_segments": 2, "ocr_texts": 1, "person_scenes": 2, "persons": 2,
                  "tags": 0}
    response = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert response.status_code == 204
    assert response.content == b""
    after = await table_counts(settings)
    assert after["jobs"] == before["jobs"] - 1
    assert after["deliveries"] == before["deliveries"] - 1
    assert after["delivery_bodies"] == before["delivery_bodies"] - 1
    for table, rows in video_rows.items():
        assert after[table] == before[table] - rows, table
    again = await client.delete("/v1/jobs/video_12345", headers=bearer(admin_token))
    assert again.status_code == 404
    gone = await client.get("/v1/jobs/video_12345", headers=bearer(read_token))
    assert gone.status_code == 404
    others = await client.get("/v1/jobs/image_batch_123/payload", headers=bearer(read_token))
    assert others.json() == example("image_batch_finished.json")


async def test_deleting_every_job_empties_every_table(client, settings, examples, admin_token):
    for job_id in ("video_12345", "image_batch_123", "video_12346"):
        response = await client.delete(f"/v1/jobs/{job_id}", headers=bearer(admin_token))
        assert response.status_code == 204
    counts = await table_counts(settings)
    assert counts == dict.fromkeys(counts, 0)


async def test_a_huge_cjk_text_is_stored_and_found_by_its_start_and_by_substring(
        client, read_token):
    """200,000 random ideographs: their pairs alone would exceed PostgreSQL's 1 MB tsvector."""
    rng = random.Random(7)
    text = "".join(chr(rng.randrange(0x4E00, 0xA000)) for _ in range(200_000))
    await _deliver_ocr(client, "image_batch_huge", [text])
    for q in (text[:2], text[1], text[-3:]):
        response = await client.get("/v1/search/ocr", params={"q": q},
                                    headers=bearer(read_token))
        assert [h["full_text"] for h in response.json()["data"]] == [text]


# --- a connection that fails -----------------------------------------------------------------

async def test_read_on_a_connection_postgresql_closed_is_503_and_the_next_read_succeeds(
        postgres_admin_url, postgres_url):
    """Reads use pooled connections without a ping first: one that the server closed fails
    the read that gets it (503 with Retry-After, never a 500) and is never handed out again."""
    settings = Settings(database_url=postgres_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    read_token = await create_token(settings, name="reader", scope="read")
    async with serve_in_process(settings) as client:
        first = await client.get("/v1/jobs", headers=bearer(read_token))
        assert first.status_code == 200, first.text
        name = postgres_url.rpartition("/")[2]
        terminate = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
                     f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        await anyio.to_thread.run_sync(execute_autocommit, postgres_admin_url, terminate)
        # The background tasks (the face index tailer polls every second) run meanwhile: they
        # find their own dropped connections, never the one this request's pool holds.
        await anyio.sleep(1.5)
        failed = await client.get("/v1/jobs", headers=bearer(read_token))
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "unavailable"
        assert failed.headers["retry-after"]
        for _ in range(3):
            again = await client.get("/v1/jobs/video_12345", headers=bearer(read_token))
            assert again.status_code == 404, again.text


async def test_background_tasks_hold_their_own_postgresql_connections_apart_from_requests(
        postgres_admin_url, postgres_url):
    """The face index tailer and the people leader never borrow the requests' pool: their
    connections carry their own application name, and dropping them all leaves every request
    answering as before."""
    settings = Settings(database_url=postgres_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    read_token = await create_token(settings, name="reader", scope="read")
    name = postgres_url.rpartition("/")[2]
    admin = Settings(database_url=postgres_admin_url, webhook_secrets=(SECRET,))
    async with serve_in_process(settings) as client:
        assert (await client.get("/v1/jobs", headers=bearer(read_token))).status_code == 200
        names: list[str] = []
        for _ in range(50):  # the tailer's first poll comes within a second or two
            rows = await fetch_all(admin, sa.text(
                "SELECT application_name FROM pg_stat_activity WHERE datname = :name",
            ).bindparams(name=name))
            names = sorted(row[0] for row in rows)
            if "results-receiver background" in names:
                break
            await anyio.sleep(0.1)
        assert "results-receiver background" in names, names
        terminate = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
                     f"WHERE datname = '{name}' "
                     "AND application_name = 'results-receiver background'")
        await anyio.to_thread.run_sync(execute_autocommit, postgres_admin_url, terminate)
        for _ in range(3):
            response = await client.get("/v1/jobs", headers=bearer(read_token))
            assert response.status_code == 200, response.text
            await anyio.sleep(0.5)
