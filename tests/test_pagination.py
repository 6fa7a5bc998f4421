"""Cursor pagination and filters of the query API, on SQLite and PostgreSQL: job listings that
stay exact while new jobs arrive, filter semantics and their 422s, entity listings read back
page by page, and the cross-job sections and tags listings against what was delivered."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from service import models
from tests.conftest import bearer
from tests.support.db import fetch_all
from tests.support.signing import encode, example, signed_headers

pytestmark = pytest.mark.anyio

Json = dict[str, Any]


async def deliver(client, document: Json) -> Json:
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body,
                                 headers=signed_headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "stored"
    return response.json()


def failed(job_id: str) -> Json:
    document = example("video_failed.json")
    document["job_id"] = job_id
    return document


async def read_all(client, token: str, path: str, params: dict[str, Any] | None = None, *,
                   limit: int) -> tuple[list[Json], int]:
    """Every row of a listing, following next_cursor; and how many pages that took."""
    rows: list[Json] = []
    cursor = None
    pages = 0
    while True:
        query = {**(params or {}), "limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        response = await client.get(path, params=query, headers=bearer(token))
        assert response.status_code == 200, (path, query, response.text)
        document = response.json()
        assert set(document) == {"data", "next_cursor"}
        assert len(document["data"]) <= limit
        rows += document["data"]
        pages += 1
        cursor = document["next_cursor"]
        if cursor is None:
            return rows, pages
        assert len(document["data"]) == limit, "a page short of the limit must be the last"
        assert pages < 10_000


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_invalid(response, parameter: str) -> None:
    assert response.status_code == 422, (parameter, response.text)
    document = response.json()
    assert document["code"] == "invalid_parameter"
    assert document["details"]["parameter"] == parameter, document


# --- /v1/jobs ----------------------------------------------------------------------------------

async def test_paging_jobs_while_new_jobs_arrive_yields_every_earlier_job_once_newest_first(
        client, settings, read_token):
    seeded = [f"video_seed_{i:03}" for i in range(60)]
    for job_id in seeded:
        await deliver(client, failed(job_id))
    jobs = models.jobs
    expected = [r.job_id for r in await fetch_all(
        settings, sa.select(jobs.c.job_id).order_by(jobs.c.received_at.desc(),
                                                    jobs.c.id.desc()))]
    assert sorted(expected) == seeded

    new_jobs: list[str] = []
    seen: list[Json] = []
    posted_while_paging: list[int] = []

    arrived = anyio.Event()

    async def post_new_jobs() -> None:
        nonlocal arrived
        for i in range(40):
            job_id = f"video_new_{i:03}"
            await deliver(client, failed(job_id))
            new_jobs.append(job_id)
            arrived.set()
            arrived = anyio.Event()

    async def page_through() -> None:
        cursor = None
        pages = 0
        while True:
            query: dict[str, Any] = {"limit": 7}
            if cursor is not None:
                query["cursor"] = cursor
            response = await client.get("/v1/jobs", params=query, headers=bearer(read_token))
            assert response.status_code == 200, response.text
            seen.extend(response.json()["data"])
            posted_while_paging.append(len(new_jobs))
            cursor = response.json()["next_cursor"]
            pages += 1
            if cursor is None:
                return
            # Let a few new jobs land between every two pages.
            with anyio.fail_after(60):
                while len(new_jobs) < min(40, 5 * pages):
                    await arrived.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(post_new_jobs)
        group.start_soon(page_through)

    assert len(new_jobs) == 40
    assert posted_while_paging[-1] > posted_while_paging[0], "no job arrived while paging"
    listed = [row["job_id"] for row in seen]
    assert len(listed) == len(set(listed)), "a job was listed twice"
    assert [job_id for job_id in listed if job_id in set(seeded)] == expected
    # Jobs that arrived after the first page was read may only show up ahead of every
    # earlier job (they are newer), never in between.
    extras = listed[:len(listed) - len(expected)]
    assert listed[len(extras):] == expected
    assert set(extras) <= set(new_jobs)
    times = [moment(row["received_at"]) for row in seen]
    assert times == sorted(times, reverse=True)
    # Afterwards, one more pass lists everything, still without a duplicate.
    everything, _ = await read_all(client, read_token, "/v1/jobs", limit=7)
    assert [row["job_id"] for row in everything][-60:] == expected
    assert sorted(row["job_id"] for row in everything) == sorted(seeded + new_jobs)


@pytest.fixture
async def mixed_jobs(client) -> list[str]:
    """Jobs of every status and kind, delivered one after the other (so times all differ)."""
    video = example("video_finished.json")
    image = example("image_batch_finished.json")
    job_ids = []
    for i in range(14):
        if i % 4 == 0:
            document = {**video, "job_id": f"video_done_{i}"}
        elif i % 4 == 1:
            document = failed(f"video_lost_{i}")
        elif i % 4 == 2:
            document = {**image, "job_id": f"image_batch_done_{i}"}
        else:
            document = {"job_id": f"image_batch_lost_{i}", "status": "failed",
                        "error": "upstream gave up"}
        await deliver(client, document)
        job_ids.append(document["job_id"])
    await deliver(client, {"job_id": "unnamed_job", "status": "failed"})  # kind unknown
    return job_ids


async def test_jobs_filtered_by_status_and_kind_are_exactly_the_matching_jobs_in_order(
        client, read_token, mixed_jobs):
    everything, _ = await read_all(client, read_token, "/v1/jobs", limit=500)
    assert len(everything) == 15
    kinds = {row["job_id"]: row["kind"] for row in everything}
    assert kinds["unnamed_job"] is None
    assert kinds["video_lost_1"] == "video"
    assert kinds["image_batch_lost_3"] == "image_batch"
    for filters in ({"status": "failed"}, {"status": "finished"}, {"kind": "video"},
                    {"kind": "image_batch"}, {"status": "failed", "kind": "image_batch"},
                    {"status": "finished", "kind": "video"}):
        expected = [row["job_id"] for row in everything
                    if all(row[name] == value for name, value in filters.items())]
        assert expected, filters
        rows, pages = await read_all(client, read_token, "/v1/jobs", filters, limit=2)
        assert [row["job_id"] for row in rows] == expected, filters
        assert pages == -(-len(expected) // 2), filters  # a full last page has no cursor


def _offset_forms(value: str) -> list[str]:
    """One instant written in several ISO 8601 forms: Z, +00:00, positive and negative
    offsets, and without any offset (taken as UTC)."""
    instant = moment(value)
    forms = [instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), instant.isoformat()]
    for hours, minutes in ((5, 30), (-3, 0), (14, 0)):
        zone = timezone(timedelta(hours=hours, minutes=minutes))
        forms.append(instant.astimezone(zone).isoformat())
    forms.append(instant.replace(tzinfo=None).isoformat())
    return forms


async def test_received_after_and_before_are_exclusive_bounds_in_any_offset(
        client, read_token, mixed_jobs):
    everything, _ = await read_all(client, read_token, "/v1/jobs", limit=500)
    newest_first = [row["job_id"] for row in everything]
    upper, lower = everything[2]["received_at"], everything[9]["received_at"]
    for after, before in zip(_offset_forms(lower), _offset_forms(upper), strict=True):
        rows, _ = await read_all(client, read_token, "/v1/jobs",
                                 {"received_after": after, "received_before": before}, limit=3)
        assert [row["job_id"] for row in rows] == newest_first[3:9], (after, before)
        rows, _ = await read_all(client, read_token, "/v1/jobs", {"received_after": after},
                                 limit=4)
        assert [row["job_id"] for row in rows] == newest_first[:9], after
        rows, _ = await read_all(client, read_token, "/v1/jobs",
                                 {"received_before": before, "status": "failed"}, limit=4)
        assert [row["job_id"] for row in rows] == [
            row["job_id"] for row in everything[3:] if row["status"] == "failed"], before
    # A whole day either side: everything, or nothing.
    newest = moment(everything[0]["received_at"])
    rows, _ = await read_all(client, read_token, "/v1/jobs", {
        "received_after": (newest - timedelta(days=1)).isoformat(),
        "received_before": (newest + timedelta(days=1)).isoformat()}, limit=500)
    assert len(rows) == 15
    rows, _ = await read_all(client, read_token, "/v1/jobs", {
        "received_after": (newest + timedelta(seconds=1)).isoformat()}, limit=500)
    assert rows == []


BAD_JOBS_PARAMETERS = [
    ("status", "running"),
    ("status", "FAILED"),
    ("kind", "audio"),
    ("received_after", "yesterday"),
    ("received_after", "2026-13-01T00:00:00Z"),
    ("received_before", "2026-11-22T25:00:00Z"),
    ("received_before", "1700000000"),
    ("limit", "0"),
    ("limit", "501"),
    ("limit", "x"),
    ("limit", "-1"),
    ("limit", "1.5"),
    ("limit", ""),
    ("cursor", "garbage!"),
    ("cursor", "AAAA"),
    ("cursor", "W10"),  # base64 of []
    ("cursor", "WyJqb2JzIl0"),  # ["jobs"]: no position
    ("cursor", "WyJqb2JzIiwiYSIsImIiXQ"),  # ["jobs","a","b"]: wrong types
]


async def test_each_bad_jobs_parameter_is_422_naming_it(client, read_token):
    for parameter, value in BAD_JOBS_PARAMETERS:
        response = await client.get("/v1/jobs", params={parameter: value},
                                    headers=bearer(read_token))
        assert_invalid(response, parameter)
    # Given twice is a bad parameter too, never a silent pick of one.
    response = await client.get("/v1/jobs?status=failed&status=finished",
                                headers=bearer(read_token))
    assert_invalid(response, "status")


async def test_cursor_from_another_listing_is_422_naming_cursor(client, read_token, admin_token,
                                                                mixed_jobs):
    deliveries = await client.get("/v1/deliveries", params={"limit": 1},
                                  headers=bearer(admin_token))
    activity = await client.get("/v1/jobs/video_done_0/activity", params={"limit": 1},
                                headers=bearer(read_token))
    jobs = await client.get("/v1/jobs", params={"limit": 1}, headers=bearer(read_token))
    cursors = {name: response.json()["next_cursor"]
               for name, response in (("deliveries", deliveries), ("activity", activity),
                                      ("jobs", jobs))}
    assert all(cursors.values()), cursors
    for path, foreign in (("/v1/jobs", cursors["deliveries"]), ("/v1/jobs", cursors["activity"]),
                          ("/v1/deliveries", cursors["jobs"]),
                          ("/v1/jobs/video_done_0/activity", cursors["jobs"]),
                          ("/v1/jobs/video_done_0/scenes", cursors["activity"]),
                          ("/v1/sections", cursors["jobs"]), ("/v1/tags", cursors["jobs"])):
        token = admin_token if path == "/v1/deliveries" else read_token
        response = await client.get(path, params={"cursor": foreign}, headers=bearer(token))
        assert_invalid(response, "cursor")


# Every paginated route (path, query, scope): 12 of them.
PAGINATED_ROUTES = [
    ("/v1/jobs", {}, "read"),
    *((f"/v1/jobs/video_done_0/{name}", {}, "read")
      for name in ("scenes", "activity", "sections", "ocr", "persons")),
    *((f"/v1/jobs/image_batch_done_2/{name}", {}, "read") for name in ("items", "tags")),
    ("/v1/search/ocr", {"q": "dogs"}, "read"),
    ("/v1/sections", {}, "read"),
    ("/v1/tags", {}, "read"),
    ("/v1/deliveries", {}, "admin"),
]


async def test_empty_cursor_is_the_first_page_on_every_paginated_route(
        client, read_token, admin_token, mixed_jobs):
    assert len(PAGINATED_ROUTES) == 12
    for path, query, scope in PAGINATED_ROUTES:
        headers = bearer(admin_token if scope == "admin" else read_token)
        first = await client.get(path, params={**query, "limit": 1}, headers=headers)
        empty = await client.get(path, params={**query, "limit": 1, "cursor": ""},
                                 headers=headers)
        assert first.status_code == 200, (path, first.text)
        assert empty.status_code == 200, (path, empty.text)
        assert first.json()["data"], f"{path} has no rows to page through"
        assert empty.json() == first.json(), path


# --- entity listings of one job ----------------------------------------------------------------

async def test_eighteen_hundred_activity_values_read_in_four_pages_are_the_list_delivered(
        client, read_token):
    rng = random.Random(1800)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 3) for _ in range(1800)]
    values[:3] = [0.0, 1e-300, 12345.678901234567]
    document = example("video_finished.json")
    document["job_id"] = "video_long"
    document["result"]["frame_activity_diffs"] = values
    await deliver(client, document)
    pages = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/jobs/video_long/activity", params=query,
                                    headers=bearer(read_token))
        assert response.status_code == 200, response.text
        pages.append(response.json()["data"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [500, 500, 500, 300]
    rows = [row for page in pages for row in page]
    assert [row["value"] for row in rows] == values
    assert [row["index"] for row in rows] == list(range(1800))
    assert {row["item_index"] for row in rows} == {0}


def _person(rng: random.Random, n: int) -> Json:
    return {"age": rng.randint(1, 90), "gender": rng.choice(["female", "male", "unidentified"]),
            "face_embedding": [rng.random() for _ in range(4)], "face_thumbnail": f"thumb-{n}",
            "allowlisted": rng.choice([True, False]), "relative_prominence": rng.random()}


def _expected_person(person: Json, *, item: int, index: int, external_id: str | None = None,
                     scene: int | None = None, segment: Json | None = None) -> Json:
    return {"item_index": item, "external_id": external_id, "index": index,
            "scene_index": scene,
            "start_seconds": (segment or {}).get("start_seconds"),
            "end_seconds": (segment or {}).get("end_seconds"),
            "age": person.get("age"), "gender": person.get("gender"),
            "face_embedding": person.get("face_embedding"),
            "face_thumbnail": person.get("face_thumbnail"),
            "allowlisted": person.get("allowlisted"),
            "relative_prominence": person.get("relative_prominence"), "erased": False}


def _expected_ocr(job_id: str, ocr: Json, *, item: int, index: int,
                  external_id: str | None = None) -> Json:
    segment = ocr.get("time_segment") or {}
    return {"job_id": job_id, "item_index": item, "external_id": external_id, "index": index,
            "language_code": ocr.get("language_code"), "full_text": ocr.get("full_text"),
            "start_seconds": segment.get("start_seconds"),
            "end_seconds": segment.get("end_seconds")}


async def test_video_persons_and_ocr_read_two_at_a_time_are_the_rows_delivered(
        client, read_token):
    rng = random.Random(2)
    scenes = [
        {"time_segment": {"start_seconds": 0.0, "end_seconds": 2.5},
         "person_ids": [_person(rng, 0), _person(rng, 1)]},
        {"time_segment": {"start_seconds": 2.5, "end_seconds": 4.0}, "person_ids": []},
        {"person_ids": [_person(rng, 2), {"age": 30}, _person(rng, 4)]},
    ]
    ocr = [{"language_code": "en", "full_text": f"line {i}",
            "time_segment": {"start_seconds": i * 1.5, "end_seconds": i * 1.5 + 1}}
           for i in range(4)] + [{"full_text": "no language, no time"}]
    document = example("video_finished.json")
    document["job_id"] = "video_people"
    document["result"]["person_constellation_scenes"] = scenes
    document["result"]["ocr_results"] = ocr
    await deliver(client, document)

    expected_persons = []
    for scene_index, scene in enumerate(scenes):
        for person in scene["person_ids"]:
            expected_persons.append(_expected_person(
                person, item=0, index=len(expected_persons), scene=scene_index,
                segment=scene.get("time_segment")))
    persons, pages = await read_all(client, read_token, "/v1/jobs/video_people/persons",
                                    limit=2)
    assert persons == expected_persons
    assert pages == 3
    texts, pages = await read_all(client, read_token, "/v1/jobs/video_people/ocr", limit=2)
    assert texts == [_expected_ocr("video_people", o, item=0, index=i)
                     for i, o in enumerate(ocr)]
    assert pages == 3


async def test_image_batch_persons_and_ocr_pages_cross_item_boundaries_in_order(
        client, read_token):
    rng = random.Random(3)
    items = []
    for i in range(4):
        result = {"tags": [], "person_ids": [_person(rng, 10 * i + j) for j in range(i % 3)],
                  "ocr_results": [{"language_code": "de", "full_text": f"item {i} text {j}"}
                                  for j in range((i + 1) % 3)]}
        items.append({"external_id": f"img-{i}", "result": result})
    items.insert(2, {"external_id": "img-failed", "status": "failed", "error": "decode error"})
    await deliver(client, {"job_id": "image_batch_people", "status": "finished",
                           "items": items})
    expected_persons = []
    expected_ocr = []
    for item_index, item in enumerate(items):
        result = item.get("result") or {}
        expected_persons += [_expected_person(p, item=item_index, index=j,
                                              external_id=item["external_id"])
                             for j, p in enumerate(result.get("person_ids", []))]
        expected_ocr += [_expected_ocr("image_batch_people", o, item=item_index, index=j,
                                       external_id=item["external_id"])
                         for j, o in enumerate(result.get("ocr_results", []))]
    assert len(expected_persons) >= 3
    assert len(expected_ocr) >= 3
    persons, _ = await read_all(client, read_token, "/v1/jobs/image_batch_people/persons",
                                limit=2)
    assert persons == expected_persons
    texts, _ = await read_all(client, read_token, "/v1/jobs/image_batch_people/ocr", limit=2)
    assert texts == expected_ocr


# --- across jobs: sections and tags -----------------------------------------------------------

SECTION_TAGS = ["intro", "action", "dialogue", "outro", None]
IMAGE_TAGS = ["cat", "dog", "park", "indoor", None]


def _maybe(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.2 else value


def _without_nulls(document: Json) -> Json:
    return {k: v for k, v in document.items() if v is not None}


@pytest.fixture
async def catalog(client) -> tuple[list[Json], list[Json]]:
    """Video jobs with random sections and image batches with random tags, delivered in order;
    returns (sections, tags) as the cross-job listings must show them, newest job first."""
    rng = random.Random(42)
    sections: list[Json] = []
    tags: list[Json] = []
    for n in range(16):
        if n % 2 == 0:
            job_id = f"video_cat_{n}"
            job_sections = []
            for _ in range(rng.randint(0, 5)):
                segments = None if rng.random() < 0.2 else [
                    _without_nulls({"start_seconds": rng.choice([None, 1.0 * k]),
                                    "end_seconds": 1.0 * k + 0.5})
                    for k in range(rng.randint(0, 2))]
                job_sections.append(_without_nulls({
                    "section_tag": rng.choice(SECTION_TAGS),
                    "time_segments": segments,
                    "thumbnail_timestamp": _maybe(rng, round(rng.uniform(0, 60), 3)),
                    "confidence": _maybe(rng, round(rng.random(), 3)),
                    "is_critical": rng.choice([True, False, None]),
                    "relative_activity": _maybe(rng, rng.random()),
                }))
            document = example("video_finished.json")
            document["job_id"] = job_id
            document["result"]["sections"] = job_sections
            await deliver(client, document)
            sections[:0] = [{
                "job_id": job_id, "item_index": 0, "index": i,
                "section_tag": s.get("section_tag"),
                "time_segments": None if "time_segments" not in s else [
                    {"start_seconds": t.get("start_seconds"),
                     "end_seconds": t.get("end_seconds")} for t in s["time_segments"]],
                "thumbnail_timestamp": s.get("thumbnail_timestamp"),
                "confidence": s.get("confidence"), "is_critical": s.get("is_critical"),
                "relative_activity": s.get("relative_activity"),
            } for i, s in enumerate(job_sections)]
        else:
            job_id = f"image_batch_cat_{n}"
            items = []
            job_tags = []
            for item_index in range(rng.randint(1, 3)):
                external_id = f"{job_id}-{item_index}"
                if rng.random() < 0.15:
                    items.append({"external_id": external_id, "status": "failed"})
                    continue
                item_tags = [_without_nulls({
                    "tag": rng.choice(IMAGE_TAGS),
                    "probability": _maybe(rng, round(rng.random(), 3)),
                    "is_critical": rng.choice([True, False, None]),
                }) for _ in range(rng.randint(0, 4))]
                items.append({"external_id": external_id, "result": {"tags": item_tags}})
                job_tags += [{
                    "job_id": job_id, "item_index": item_index, "external_id": external_id,
                    "index": i, "tag": t.get("tag"), "probability": t.get("probability"),
                    "is_critical": t.get("is_critical"),
                } for i, t in enumerate(item_tags)]
            await deliver(client, {"job_id": job_id, "status": "finished", "items": items})
            tags[:0] = job_tags
    return sections, tags


def _at_least(value: float | None, bound: str | None) -> bool:
    return bound is None or (value is not None and value >= float(bound))


def _matches(row: Json, *, field: str, value: str | None, critical: str | None,
             number: str, bound: str | None) -> bool:
    return ((value is None or row[field] == value)
            and (critical is None or row["is_critical"] is (critical == "true"))
            and _at_least(row[number], bound))


SECTION_QUERIES = [{}, {"tag": "action"}, {"tag": "intro"}, {"critical": "true"},
                   {"critical": "false"}, {"min_confidence": "0.5"}, {"min_confidence": "0"},
                   {"tag": "dialogue", "critical": "false"},
                   {"tag": "outro", "min_confidence": "0.3"},
                   {"tag": "action", "critical": "true", "min_confidence": "0.25"},
                   {"critical": "1", "min_confidence": "-1"}, {"tag": "no-such-tag"},
                   {"min_confidence": "1.01"}]
TAG_QUERIES = [{}, {"tag": "cat"}, {"tag": "dog"}, {"critical": "true"}, {"critical": "false"},
               {"min_probability": "0.5"}, {"tag": "park", "critical": "false"},
               {"tag": "indoor", "min_probability": "0.2"},
               {"tag": "cat", "critical": "true", "min_probability": "0.1"},
               {"critical": "0", "min_probability": "0"}, {"tag": "no-such-tag"}]


async def test_sections_across_jobs_are_exactly_the_matching_rows_newest_job_first(
        client, read_token, catalog):
    sections, _ = catalog
    assert len(sections) > 15
    for query in SECTION_QUERIES:
        critical = query.get("critical")
        critical = {"1": "true", "0": "false"}.get(critical or "", critical)
        expected = [row for row in sections if _matches(
            row, field="section_tag", value=query.get("tag"), critical=critical,
            number="confidence", bound=query.get("min_confidence"))]
        rows, _ = await read_all(client, read_token, "/v1/sections", query, limit=3)
        assert rows == expected, query
    assert any(row["time_segments"] is None for row in sections)
    assert any(row["time_segments"] == [] for row in sections)


async def test_tags_across_jobs_are_exactly_the_matching_rows_newest_job_first(
        client, read_token, catalog):
    _, tags = catalog
    assert len(tags) > 15
    for query in TAG_QUERIES:
        critical = query.get("critical")
        critical = {"1": "true", "0": "false"}.get(critical or "", critical)
        expected = [row for row in tags if _matches(
            row, field="tag", value=query.get("tag"), critical=critical,
            number="probability", bound=query.get("min_probability"))]
        rows, _ = await read_all(client, read_token, "/v1/tags", query, limit=3)
        assert rows == expected, query


BAD_CATALOG_PARAMETERS = [
    ("/v1/sections", "critical", "maybe"),
    ("/v1/sections", "min_confidence", "high"),
    ("/v1/sections", "min_confidence", "nan"),
    ("/v1/sections", "min_confidence", "inf"),
    ("/v1/sections", "tag", ""),
    ("/v1/sections", "limit", "501"),
    ("/v1/tags", "critical", "yes please"),
    ("/v1/tags", "min_probability", "0.5.1"),
    ("/v1/tags", "tag", "x" * 201),
    ("/v1/tags", "limit", "0"),
    ("/v1/tags", "cursor", "bm90IGEgY3Vyc29y"),
]


async def test_each_bad_sections_or_tags_parameter_is_422_naming_it(client, read_token):
    for path, parameter, value in BAD_CATALOG_PARAMETERS:
        response = await client.get(path, params={parameter: value},
                                    headers=bearer(read_token))
        assert_invalid(response, parameter)
