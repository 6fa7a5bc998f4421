"""Query plans on PostgreSQL with 10,000 jobs: every query behind the query API reaches the big
tables through an index, never a sequential scan, and a page after a cursor deep in a listing
seeks to the cursor instead of reading and discarding every newer row.

The statements explained are the ones the service really executes: each test calls the same
function a route calls (``service.queries``, ``service.search``, ``service.rebuild``), captures
the SQL and its parameters from the engine (``before_cursor_execute``), and runs ``EXPLAIN
(FORMAT JSON)`` on exactly that. The database (a copy of the migrated template, like
``postgres_url``, but one for the whole module) is seeded once with the service's own ingest
code (``prepare`` + ``store``), 500 jobs per transaction in two processes, then VACUUM
ANALYZEd (the state autovacuum keeps a running service in).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import random
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from service import ingest, payloads, queries, rebuild, search
from service.config import Settings
from service.db import Database
from service.pagination import Page
from service.privacy.reveal import Revealer
from service.reconcile import expected
from tests.support.keys import TEST_KEYRING
from tests.support.postgres import execute_autocommit
from tests.support.signing import SECRET, encode

# Seeding is CPU-bound: allow for it on a busy machine (it runs in the first test's setup).
pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]

JOBS = 10_000
BATCH = 500  # jobs per transaction
PROCESSES = 2  # seeding processes, each with one transaction at a time
OCR_LINES_PER_VIDEO = 6
RICH_EVERY = 20  # one video in 20 also has scenes, activity, persons and section segments
BIG_TABLES = {"jobs", "ocr_texts", "sections", "tags", "deliveries", "media_items"}
START = datetime(2026, 1, 1, tzinfo=UTC)

WORDS = [f"{a}{b}" for a in ("sun", "moon", "star", "rain", "wind", "snow", "leaf", "rock",
                             "tree", "fish", "bird", "road", "door", "lamp", "ship", "gold")
         for b in ("", "er", "ing", "ed", "s", "y", "ish", "ly", "ness", "less", "ful", "dom",
                   "ward", "side", "light", "fall")]  # 256 words, each in ~2% of lines
COMMON_WORD = WORDS[3]
RARE_WORD = "quixotically"  # in a few dozen lines
RARE_SUBSTRING = "xotical"
RARE_CJK = "Zone禁止遛狗"  # CJK glued to Latin, in a few dozen lines
SECTION_TAGS = [f"scene-{i}" for i in range(40)]
IMAGE_TAGS = [f"object-{i}" for i in range(60)]


def _ocr_line(rng: random.Random, n: int) -> str:
    words = rng.sample(WORDS, 5)
    if n % 1000 == 7:
        words.insert(2, RARE_WORD)
    if n % 1000 == 13:
        words.insert(1, RARE_CJK)
    return " ".join(words)


def _video(rng: random.Random, n: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "sections": [{"section_tag": rng.choice(SECTION_TAGS),
                      "confidence": round(rng.random(), 3),
                      "is_critical": rng.random() < 0.1, "relative_activity": rng.random()}
                     for _ in range(rng.randint(1, 4))],
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


async def _store_jobs(url: str, starts: range) -> None:
    """Deliver the jobs of the batches beginning at ``starts``, one transaction per batch."""
    database = Database.from_settings(Settings(database_url=url, webhook_secrets=(SECRET,),
                                               encryption_keys=TEST_KEYRING))
    try:
        for first in starts:
            batch = []
            for n in range(first, min(first + BATCH, JOBS)):
                rng = random.Random(n)
                body = encode(_document(rng, n))
                received = START + timedelta(minutes=5 * n, seconds=rng.random())
                batch.append((ingest.prepare(payloads.parse(body)), ingest.IncomingDelivery(
                    body=body, received_at=received, signature_scheme="hmac-sha256")))
            writer = database.writer()
            for prepared, delivery in batch:
                await ingest.store(writer, prepared, delivery)
    finally:
        await database.dispose()


def _seed_part(url: str, part: int) -> None:
    """One seeding process: every PROCESSES-th batch (storing is CPU-bound in Python)."""
    anyio.run(_store_jobs, url, range(part * BATCH, JOBS, PROCESSES * BATCH))


async def _analyze(url: str) -> None:
    database = Database.from_settings(Settings(database_url=url, webhook_secrets=(SECRET,),
                                               encryption_keys=TEST_KEYRING))
    try:
        async with database.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            # VACUUM too: it moves the GIN indexes' pending entries (fastupdate) into the
            # index proper, as autovacuum soon does in a running service; while they wait in
            # the pending list, the planner prices the search indexes far too high.
            await conn.exec_driver_sql("VACUUM (ANALYZE)")
    finally:
        await database.dispose()


def _seed(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as pool:
        list(pool.map(_seed_part, [url] * PROCESSES, range(PROCESSES)))
    anyio.run(_analyze, url)


@pytest.fixture(scope="module")
def seeded_url(postgres_admin_url: str, postgres_template: str) -> Iterator[str]:
    """A migrated database of this module's own (like ``postgres_url``, but seeded once)."""
    name = "plans_" + uuid.uuid4().hex[:12]
    execute_autocommit(postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    url = f"{postgres_admin_url.rpartition('/')[0]}/{name}"
    try:
        _seed(url)
        yield url
    finally:
        execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


Query = Callable[[sa.Connection], Any]
LIMIT = 50
UNCAPTURED = "tests.uncaptured"


@contextmanager
def _uncaptured(conn: sa.Connection) -> Iterator[None]:
    """Statements run inside are set-up (finding a cursor deep in a listing), not explained."""
    conn.info[UNCAPTURED] = True
    try:
        yield
    finally:
        del conn.info[UNCAPTURED]


async def _captured(database: Database, query: Query) -> list[tuple[str, Any]]:
    """Run ``query`` and return every (statement, parameters) it sent to the database, but
    settings (``SET LOCAL``, which have no plan)."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                executemany: bool) -> None:
        if not conn.info.get(UNCAPTURED) and not statement.startswith("SET LOCAL "):
            assert not executemany
            statements.append((statement, parameters))

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await database.run_read(query)
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    return statements


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _job(conn: sa.Connection, job_id: str) -> int:
    pk = queries.job_pk(conn, job_id)
    assert pk is not None
    return pk


def _position(conn: sa.Connection, listing: Callable[..., Page], depth: int) -> list[Any] | None:
    """The cursor position after the first ``depth`` rows of a listing (None: first page)."""
    if not depth:
        return None
    with _uncaptured(conn):
        page = listing(conn, after=None, limit=depth)
    assert page.next_position is not None, "the seeded listing is not that deep"
    return page.next_position


def _list_jobs(depth: int = 0, **filters: Any) -> Query:
    """The job list as the query API reads it (with what reconciliation knows of each job)."""
    arguments = {"status": None, "kind": None, "received_after": None,
                 "received_before": None, "extra": expected.ANNOTATION, **filters}

    def run(conn: sa.Connection) -> Any:
        listing = functools.partial(queries.list_jobs, **arguments)
        return listing(conn, after=_position(conn, listing, depth), limit=LIMIT)
    return run


def _entity(function: Callable[..., Any], job_id: str, depth: int = 0) -> Query:
    def run(conn: sa.Connection) -> Any:
        pk = _job(conn, job_id)
        listing = functools.partial(function, conn, pk)
        after = None
        if depth:
            with _uncaptured(conn):
                after = listing(None, depth).next_position
            assert after is not None
        return listing(after, LIMIT)
    return run


def _ocr_search(q: str, language_code: str | None = None, offset: int = 0) -> Query:
    def run(conn: sa.Connection) -> Any:
        hits, _ = search.search_ocr(conn, q, language_code=language_code, limit=LIMIT,
                                    offset=offset)
        assert hits, f"the seeded data has no OCR hit for {q!r}"
        return hits
    return run


def _sections(depth: int = 0, **filters: Any) -> Query:
    arguments = {"tag": None, "critical": None, "min_confidence": None, **filters}

    def run(conn: sa.Connection) -> Any:
        listing = functools.partial(queries.find_sections, **arguments)
        return listing(conn, after=_position(conn, listing, depth), limit=LIMIT)
    return run


def _tags(depth: int = 0, **filters: Any) -> Query:
    arguments = {"tag": None, "critical": None, "min_probability": None, **filters}

    def run(conn: sa.Connection) -> Any:
        listing = functools.partial(queries.find_tags, **arguments)
        return listing(conn, after=_position(conn, listing, depth), limit=LIMIT)
    return run


def _deliveries(depth: int = 0, **filters: Any) -> Query:
    arguments = {"job_id": None, "outcome": None, **filters}

    def run(conn: sa.Connection) -> Any:
        listing = functools.partial(queries.list_deliveries, **arguments)
        return listing(conn, after=_position(conn, listing, depth), limit=LIMIT)
    return run


RICH_VIDEO = "video_004321"  # 4321 % RICH_EVERY == 1
IMAGE_BATCH = "image_batch_004326"
MIDDLE = START + timedelta(minutes=5 * JOBS // 2)
DEEP = 9_000  # a cursor this many jobs into the listing (most of the way to the end)

# Next pages: a cursor deep into the listings that span whole tables (the query behind every
# page but the first), checked for sequential scans and for rows read and thrown away.
DEEP_PAGES: dict[str, tuple[Query, str]] = {
    "jobs-deep-page": (_list_jobs(DEEP), "jobs"),
    "jobs-by-status-deep-page": (_list_jobs(DEEP // 5, status="failed"), "jobs"),
    "jobs-by-kind-deep-page": (_list_jobs(DEEP // 4, kind="image_batch"), "jobs"),
    "jobs-received-between-deep-page": (_list_jobs(
        2_000, received_after=MIDDLE - timedelta(days=10),
        received_before=MIDDLE + timedelta(days=10)), "jobs"),
    "deliveries-deep-page": (_deliveries(DEEP), "deliveries"),
}

QUERIES: dict[str, Query] = {
    "jobs-newest-first": _list_jobs(),
    "jobs-by-status": _list_jobs(status="failed"),
    "jobs-by-kind": _list_jobs(kind="image_batch"),
    "jobs-by-status-and-kind": _list_jobs(status="finished", kind="video"),
    "jobs-received-between": _list_jobs(received_after=MIDDLE,
                                        received_before=MIDDLE + timedelta(hours=6)),
    "job-summary": lambda conn: expected.job_summary(conn, RICH_VIDEO, datetime.now(UTC)),
    "job-payload": lambda conn: rebuild.rebuild(conn, RICH_VIDEO, Revealer(TEST_KEYRING)),
    "job-image-payload": lambda conn: rebuild.rebuild(conn, IMAGE_BATCH, Revealer(TEST_KEYRING)),
    **{f"job-{name}": _entity(function, job_id) for name, function, job_id in (
        ("scenes", queries.job_scenes, RICH_VIDEO),
        ("activity", queries.job_activity, RICH_VIDEO),
        ("sections", queries.job_sections, RICH_VIDEO),
        ("ocr", queries.job_ocr, RICH_VIDEO),
        ("persons", functools.partial(queries.job_persons, revealer=Revealer(TEST_KEYRING)),
         RICH_VIDEO),
        ("tags", queries.job_tags, IMAGE_BATCH),
        ("items", queries.job_items, IMAGE_BATCH),
    )},
    "job-activity-next-page": _entity(queries.job_activity, RICH_VIDEO, depth=10),
    "ocr-search-selective-word": _ocr_search(RARE_WORD),
    "ocr-search-word-prefix": _ocr_search(RARE_WORD[:6]),
    "ocr-search-substring": _ocr_search(RARE_SUBSTRING),
    "ocr-search-word-and-language": _ocr_search(RARE_WORD, "en"),
    "ocr-search-cjk-pair": _ocr_search("遛狗"),
    "ocr-search-cjk-character": _ocr_search("遛"),
    "ocr-search-cjk-pairs-and-substring": _ocr_search("禁止遛狗"),
    "ocr-search-latin-and-cjk": _ocr_search("zone 止遛"),
    "sections-by-tag": _sections(tag="scene-7"),
    "sections-by-tag-critical-confidence": _sections(tag="scene-7", critical=True,
                                                     min_confidence=0.5),
    "tags-by-tag": _tags(tag="object-11"),
    "tags-by-tag-probability-critical": _tags(tag="object-11", min_probability=0.5,
                                              critical=False),
    "deliveries-newest-first": _deliveries(),
    "deliveries-of-a-job": _deliveries(job_id=RICH_VIDEO),
    "sections-by-tag-next-page": _sections(150, tag="scene-7"),
    "tags-by-tag-next-page": _tags(150, tag="object-11"),
    # A word in ~2 % of lines: every hit is ranked, only a page of them is returned.
    "ocr-search-common-word": _ocr_search(COMMON_WORD),
    "ocr-search-common-word-next-page": _ocr_search(COMMON_WORD, offset=LIMIT),
    **{name: query for name, (query, _) in DEEP_PAGES.items()},
}


async def _explain(url: str, query: Query, *, analyze: bool = False
                   ) -> list[tuple[str, Any, list[dict[str, Any]]]]:
    database = Database.from_settings(Settings(database_url=url, webhook_secrets=(SECRET,),
                                               encryption_keys=TEST_KEYRING))
    try:
        statements = await _captured(database, query)
        assert statements, "the query function sent no SQL"
        explained = []
        async with database.read() as conn:
            for statement, parameters in statements:
                options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
                result = await conn.exec_driver_sql(f"EXPLAIN ({options}) {statement}",
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
              f" index cond {node.get('Index Cond', '-')}, filter {node.get('Filter', '-')},"
              f" removed by filter {node.get('Rows Removed by Filter', '-')})"
              for node in nodes]
    return "\n".join(lines)


# Ranking every hit of a common word reads a large share of ocr_texts, where a sequential scan
# can be the cheapest plan; joining jobs and media_items to all those hits before taking the
# page (instead of to the page's rows only) is never needed.
SEQ_SCAN_ALLOWED = {"ocr-search-common-word": {"ocr_texts"},
                    "ocr-search-common-word-next-page": {"ocr_texts"}}


@pytest.mark.parametrize("name", list(QUERIES))
async def test_query_reaches_big_tables_through_indexes_not_sequential_scans(seeded_url, name):
    explained = await _explain(seeded_url, QUERIES[name])
    problems = []
    for statement, parameters, nodes in explained:
        scanned = {node.get("Relation Name") for node in nodes
                   if node["Node Type"] == "Seq Scan"} & (
                       BIG_TABLES - SEQ_SCAN_ALLOWED.get(name, set()))
        if scanned:
            problems.append(f"sequential scan of {sorted(scanned)} in:\n"
                            + _report(statement, parameters, nodes))
    assert not problems, "\n\n".join(problems)


async def test_an_ocr_search_is_planned_for_its_own_words_and_leaves_the_connection_as_it_was(
        seeded_url):
    """A prepared statement's generic plan knows nothing of the words searched: PostgreSQL
    switches to it after five executions on a connection, and for the OCR search it plans for
    thousands of matches (9 ms where the plan for a rare word takes 1 ms, measured at 100,000
    jobs). The search asks for a plan per execution, in its own transaction only."""
    database = Database.from_settings(Settings(database_url=seeded_url,
                                               webhook_secrets=(SECRET,), database_pool_size=1))
    mode = sa.text("SELECT current_setting('plan_cache_mode')")

    def searched(conn: sa.Connection) -> str:
        for _ in range(8):
            hits, _more = search.search_ocr(conn, RARE_WORD, language_code=None, limit=LIMIT,
                                            offset=0)
            assert hits
        return str(conn.execute(mode).scalar_one())

    try:
        assert await database.run_read(lambda conn: str(conn.execute(mode).scalar_one())) == "auto"
        assert await database.run_read(searched) == "force_custom_plan"
        assert await database.run_read(lambda conn: str(conn.execute(mode).scalar_one())) == "auto"
    finally:
        await database.dispose()


async def test_a_payload_reads_its_job_with_its_data_key_then_each_table_of_rows_once(
        seeded_url):
    """Every statement of a read is a round trip: the job and its data key come in one, and no
    table is read twice. (That the key read this way opens sealed persons is proved by the
    round-trip tests of every privacy policy.)"""
    database = Database.from_settings(Settings(database_url=seeded_url,
                                               webhook_secrets=(SECRET,),
                                               encryption_keys=TEST_KEYRING))
    try:
        statements = await _captured(database, QUERIES["job-payload"])
        rebuilt = await database.run_read(QUERIES["job-payload"])
    finally:
        await database.dispose()
    tables = [re.search(r"\bFROM\s+(\w+)", statement).group(1)  # type: ignore[union-attr]
              for statement, _ in statements]
    assert "data_keys" in statements[0][0]
    assert not any("data_keys" in statement for statement, _ in statements[1:])
    assert len(tables) == len(set(tables)), tables
    assert rebuilt is not None
    assert rebuilt.payload["result"]["ocr_results"]


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


@pytest.mark.parametrize("name", list(DEEP_PAGES))
async def test_page_deep_in_a_listing_starts_at_its_cursor_instead_of_filtering_newer_rows(
        seeded_url, name):
    """Keyset pagination must seek: a page read after a cursor deep in the listing reads about
    one page of rows from the index, not every newer row to throw it away (which makes reading
    a whole listing quadratic)."""
    query, table = DEEP_PAGES[name]
    explained = await _explain(seeded_url, query, analyze=True)
    problems = []
    for statement, parameters, nodes in explained:
        removed = sum(node.get("Rows Removed by Filter", 0) for node in nodes
                      if node.get("Relation Name") == table)
        if removed > 2 * (LIMIT + 1):
            problems.append(f"{removed} rows of {table} read and filtered out in:\n"
                            + _report(statement, parameters, nodes))
    assert not problems, "\n\n".join(problems)
