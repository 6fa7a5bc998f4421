"""Query plans on PostgreSQL with 10,000 jobs: every query behind the query API reaches the big
tables through an index, never a sequential scan.

The statements explained are the ones the service really executes: each test calls the same
function a route calls (``service.queries`` / ``service.search``), captures the SQL and its
parameters from the engine, and runs ``EXPLAIN (FORMAT JSON)`` on exactly that. The database
is seeded once for the module with the service's own ingest code (``prepare`` + ``store``), in
transactions of 500 jobs, then ANALYZEd.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service import ingest, payloads, queries, rebuild, search
from service.config import Settings
from service.db import Database
from tests.support.postgres import execute_autocommit
from tests.support.signing import SECRET, encode

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

JOBS = 10_000
BATCH = 500  # jobs per transaction
WRITERS = 2  # concurrent transactions while seeding
OCR_LINES_PER_VIDEO = 6
RICH_EVERY = 20  # one video in 20 also has scenes, activity, persons and section segments
BIG_TABLES = {"jobs", "ocr_texts", "sections", "tags", "deliveries", "media_items"}
START = datetime(2026, 1, 1, tzinfo=UTC)

WORDS = [f"{a}{b}" for a in ("sun", "moon", "star", "rain", "wind", "snow", "leaf", "rock",
                             "tree", "fish", "bird", "road", "door", "lamp", "ship", "gold")
         for b in ("", "er", "ing", "ed", "s", "y", "ish", "ly", "ness", "less", "ful", "dom",
                   "ward", "side", "light", "fall")]  # 256 words, each in ~2% of lines
RARE_WORD = "quixotically"  # in ~10 lines
RARE_SUBSTRING = "xotical"
SECTION_TAGS = [f"scene-{i}" for i in range(40)]
IMAGE_TAGS = [f"object-{i}" for i in range(60)]


def _ocr_line(rng: random.Random, n: int) -> str:
    words = rng.sample(WORDS, 5)
    if n % 1000 == 7:
        words.insert(2, RARE_WORD)
    return " ".join(words)


def _video(rng: random.Random, n: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "sections": [{"section_tag": rng.choice(SECTION_TAGS),
                      "confidence": round(rng.random(), 3),
                      "is_critical": rng.random() < 0.1, "relative_activity": rng.random()}
                     for i in range(rng.randint(1, 4))],
        "ocr_results": [{"language_code": rng.choice(["en", "de", "fr"]),
                         "full_text": _ocr_line(rng, n + i),
                         "time_segment": {"start_seconds": i * 1.0, "end_seconds": i + 0.5}}
                        for i in range(OCR_LINES_PER_VIDEO)],
    }
    if n % RICH_EVERY == 1:  # every entity, for the per-job queries
        result["raw_scenes"] = [{"start_seconds": i * 2.0, "end_seconds": i * 2.0 + 2}
                                for i in range(3)]
        result["frame_activity_diffs"] = [rng.random() for _ in range(30)]
        result["person_constellation_scenes"] = [{
            "time_segment": {"start_seconds": 0.0, "end_seconds": 1.0},
            "person_ids": [{"age": rng.randint(1, 90), "gender": "unidentified"}]}]
        for section in result["sections"]:
            section["time_segments"] = [{"start_seconds": 0.0, "end_seconds": 1.0}]
    return {"job_id": f"video_{n:06}", "status": "finished", "result": result}


def _document(rng: random.Random, n: int) -> dict[str, Any]:
    """Half videos, 30 % image batches, 20 % failures; a few rows in many tables, so that
    each job costs few statements to store."""
    roll = n % 10
    if roll < 5:
        return _video(rng, n)
    if roll < 8:
        items = [{"external_id": f"{n}-{i}", "result": {
            "tags": [{"tag": rng.choice(IMAGE_TAGS), "probability": round(rng.random(), 3),
                      "is_critical": rng.random() < 0.05} for _ in range(3)],
            "ocr_results": [{"language_code": "en", "full_text": _ocr_line(rng, n + i)}],
        }} for i in range(2)]
        return {"job_id": f"image_batch_{n:06}", "status": "finished", "items": items}
    prefix = "video" if roll == 8 else "image_batch"
    return {"job_id": f"{prefix}_{n:06}", "status": "failed",
            "error": {"code": "MAX_PROCESSING_TIME_EXCEEDED", "message": f"job {n}"}}


async def _seed(url: str) -> None:
    rng = random.Random(10_000)
    batches: list[list[tuple[ingest.PreparedResult, ingest.IncomingDelivery]]] = []
    for first in range(0, JOBS, BATCH):
        batch = []
        for n in range(first, first + BATCH):
            body = encode(_document(rng, n))
            received = START + timedelta(minutes=5 * n, seconds=rng.random())
            batch.append((ingest.prepare(payloads.parse(body)), ingest.IncomingDelivery(
                body=body, received_at=received, signature_scheme="hmac-sha256")))
        batches.append(batch)
    database = Database.from_settings(Settings(database_url=url, webhook_secrets=(SECRET,)))

    async def writer() -> None:
        while batches:
            batch = batches.pop()
            async with database.write() as conn:
                for prepared, delivery in batch:
                    await ingest.store(conn, prepared, delivery)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(WRITERS):
                group.start_soon(writer)
        async with database.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
def seeded_url(postgres_admin_url: str, postgres_template: str) -> Iterator[str]:
    """A migrated database of this module's own (like ``postgres_url``, but seeded once)."""
    name = "plans_" + uuid.uuid4().hex[:12]
    execute_autocommit(postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    url = f"{postgres_admin_url.rpartition('/')[0]}/{name}"
    try:
        anyio.run(_seed, url)
        yield url
    finally:
        execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


Query = Callable[[AsyncConnection], Awaitable[Any]]


async def _captured(database: Database, query: Query) -> list[tuple[str, Any]]:
    """Run ``query`` and return every (statement, parameters) it sent to the database."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                executemany: bool) -> None:
        assert not executemany
        statements.append((statement, parameters))

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with database.read() as conn:
            await query(conn)
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    return statements


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _job(conn: AsyncConnection, job_id: str) -> int:
    pk = await queries.job_pk(conn, job_id)
    assert pk is not None
    return pk


async def _jobs_cursor(conn: AsyncConnection, depth: int, **filters: Any) -> list[Any]:
    page = await queries.list_jobs(conn, **{"status": None, "kind": None, "received_after": None,
                                            "received_before": None, **filters},
                                   after=None, limit=depth)
    assert page.next_position is not None
    return page.next_position


def _list_jobs(**filters: Any) -> Query:
    arguments = {"status": None, "kind": None, "received_after": None,
                 "received_before": None, "after": None, "limit": 50, **filters}
    return lambda conn: queries.list_jobs(conn, **arguments)


def _entity(function: Callable[..., Awaitable[Any]], job_id: str) -> Query:
    async def run(conn: AsyncConnection) -> Any:
        return await function(conn, await _job(conn, job_id), None, 50)
    return run


def _ocr_search(q: str, language_code: str | None = None) -> Query:
    async def run(conn: AsyncConnection) -> Any:
        hits, _ = await search.search_ocr(conn, q, language_code=language_code, limit=50,
                                          offset=0)
        assert hits, f"the seeded data has no OCR hit for {q!r}"
        return hits
    return run


def _sections(**filters: Any) -> Query:
    arguments = {"tag": None, "critical": None, "min_confidence": None, **filters}
    return lambda conn: queries.find_sections(conn, **arguments, after=None, limit=50)


def _tags(**filters: Any) -> Query:
    arguments = {"tag": None, "critical": None, "min_probability": None, **filters}
    return lambda conn: queries.find_tags(conn, **arguments, after=None, limit=50)


def _deliveries(**filters: Any) -> Query:
    arguments = {"job_id": None, "outcome": None, **filters}
    return lambda conn: queries.list_deliveries(conn, **arguments, after=None, limit=50)


RICH_VIDEO = "video_004321"  # 4321 % RICH_EVERY == 1
IMAGE_BATCH = "image_batch_004326"
MIDDLE = START + timedelta(minutes=5 * JOBS // 2)

QUERIES: dict[str, Query] = {
    "jobs-newest-first": _list_jobs(),
    "jobs-by-status": _list_jobs(status="failed"),
    "jobs-by-kind": _list_jobs(kind="image_batch"),
    "jobs-by-status-and-kind": _list_jobs(status="finished", kind="video"),
    "jobs-received-between": _list_jobs(received_after=MIDDLE,
                                        received_before=MIDDLE + timedelta(hours=6)),
    "job-summary": lambda conn: queries.job_summary(conn, RICH_VIDEO),
    "job-payload": lambda conn: rebuild.rebuild(conn, RICH_VIDEO),
    "job-image-payload": lambda conn: rebuild.rebuild(conn, IMAGE_BATCH),
    **{f"job-{name}": _entity(function, job_id) for name, function, job_id in (
        ("scenes", queries.job_scenes, RICH_VIDEO),
        ("activity", queries.job_activity, RICH_VIDEO),
        ("sections", queries.job_sections, RICH_VIDEO),
        ("ocr", queries.job_ocr, RICH_VIDEO),
        ("persons", queries.job_persons, RICH_VIDEO),
        ("tags", queries.job_tags, IMAGE_BATCH),
        ("items", queries.job_items, IMAGE_BATCH),
    )},
    "ocr-search-selective-word": _ocr_search(RARE_WORD),
    "ocr-search-word-prefix": _ocr_search(RARE_WORD[:6]),
    "ocr-search-substring": _ocr_search(RARE_SUBSTRING),
    "ocr-search-word-and-language": _ocr_search(RARE_WORD, "en"),
    "sections-by-tag": _sections(tag="scene-7"),
    "sections-by-tag-critical-confidence": _sections(tag="scene-7", critical=True,
                                                     min_confidence=0.5),
    "tags-by-tag": _tags(tag="object-11"),
    "tags-by-tag-probability-critical": _tags(tag="object-11", min_probability=0.5,
                                              critical=False),
    "deliveries-newest-first": _deliveries(),
    "deliveries-of-a-job": _deliveries(job_id=RICH_VIDEO),
}


async def _explain(url: str, query: Query) -> list[tuple[str, Any, list[dict[str, Any]]]]:
    database = Database.from_settings(Settings(database_url=url, webhook_secrets=(SECRET,)))
    try:
        statements = await _captured(database, query)
        assert statements, "the query function sent no SQL"
        explained = []
        async with database.read() as conn:
            for statement, parameters in statements:
                result = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement,
                                                    parameters)
                document = result.scalar_one()
                plan = (json.loads(document) if isinstance(document, str) else document)[0]
                explained.append((statement, parameters, list(_nodes(plan["Plan"]))))
        return explained
    finally:
        await database.dispose()


def _report(statement: str, parameters: Any, nodes: list[dict[str, Any]]) -> str:
    lines = [" ".join(statement.split()), f"parameters: {parameters!r}"]
    lines += [f"  {node['Node Type']} on {node.get('Relation Name', '-')}"
              f" (index {node.get('Index Name', '-')}, rows {node.get('Plan Rows')},"
              f" filter {node.get('Filter', '-')})" for node in nodes]
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(QUERIES))
async def test_query_reaches_big_tables_through_indexes_not_sequential_scans(seeded_url, name):
    explained = await _explain(seeded_url, QUERIES[name])
    problems = []
    for statement, parameters, nodes in explained:
        scanned = {node.get("Relation Name") for node in nodes
                   if node["Node Type"] == "Seq Scan"} & BIG_TABLES
        if scanned:
            problems.append(f"sequential scan of {sorted(scanned)} in:\n"
                            + _report(statement, parameters, nodes))
    assert not problems, "\n\n".join(problems)


async def test_seeded_database_holds_ten_thousand_jobs_of_every_kind(seeded_url):
    database = Database.from_settings(Settings(database_url=seeded_url,
                                               webhook_secrets=(SECRET,)))
    try:
        async with database.read() as conn:
            counts = dict(list(await conn.execute(sa.text(
                "SELECT kind || '/' || status, count(*) FROM jobs GROUP BY 1"))))
            ocr_rows = (await conn.execute(sa.text("SELECT count(*) FROM ocr_texts"))).scalar()
            deliveries = (await conn.execute(sa.text("SELECT count(*) FROM deliveries"))).scalar()
    finally:
        await database.dispose()
    assert sum(counts.values()) == JOBS
    assert set(counts) == {"video/finished", "video/failed", "image_batch/finished",
                           "image_batch/failed"}
    assert ocr_rows == JOBS // 2 * OCR_LINES_PER_VIDEO + JOBS * 3 // 10 * 2
    assert deliveries == JOBS
