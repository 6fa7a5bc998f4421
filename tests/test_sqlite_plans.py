"""Query plans on SQLite for lookups of many rows by composite key: they search an index, never
scan the table. SQLite scans the whole table for a row-value ``IN`` alone (``(job_pk,
item_index, person_index) IN (VALUES ...)``), which made every batch of the people clustering
and every face search read all of ``persons``; naming the jobs' primary keys as well lets it
search the index. Each test runs the function the service runs, captures its SQL from the
engine and asks SQLite for ``EXPLAIN QUERY PLAN`` of exactly that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from service.faces import people_store, source
from service.faces.index import FaceKey
from service.queries import _segments_of
from tests.support.keys import TEST_KEYRING

FACES = [(7, 0, 0), (7, 0, 1), (9, 2, 3)]
Lookup = Callable[[sa.Connection], object]

LOOKUPS: dict[str, tuple[Lookup, str]] = {
    "people: faces already in a cluster": (
        lambda conn: people_store.assigned_faces(conn, FACES), "people_members"),
    "people: faces whose person row is live": (
        lambda conn: people_store.live_faces(conn, FACES), "persons"),
    "face search: the hits' details": (
        lambda conn: source.hit_details(conn, TEST_KEYRING, [FaceKey(*f) for f in FACES]),
        "persons"),
    "sections list: the sections' segments": (
        lambda conn: _segments_of(conn, FACES), "section_segments"),
}


@contextmanager
def captured(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _many: bool) -> None:
        statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)


@pytest.mark.parametrize("name", list(LOOKUPS))
def test_lookup_by_composite_key_searches_an_index_instead_of_scanning_the_table(
        sqlite_url: str, name: str) -> None:
    lookup, table = LOOKUPS[name]
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            with captured(engine) as statements:
                lookup(conn)
            touching = [(s, p) for s, p in statements if table in s]
            assert touching, f"no statement read {table}"
            for statement, parameters in touching:
                plan = [row[3] for row in conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", parameters)]
                assert not [step for step in plan if step.startswith(f"SCAN {table}")], (
                    f"{statement}\n{plan}")
                assert [step for step in plan if step.startswith(f"SEARCH {table}")], plan
    finally:
        engine.dispose()


def test_new_members_insert_asks_the_erased_index_and_never_reads_a_person_row(
        sqlite_url: str) -> None:
    """The people clustering's insert of new members checks each face's person row: that it
    exists from the primary key's index alone (covering), whether it is erased from
    ``ix_persons_erased``; never from the row itself, whose ``erased`` comes after kilobytes
    of sealed values."""
    engine = sa.create_engine(sqlite_url)
    now = datetime.now(UTC)
    members = [people_store.Member(face, 1, 0.9) for face in FACES]
    try:
        with engine.connect() as conn:
            with captured(engine) as statements:
                people_store._insert_new_members_sqlite(conn, members, now)
            inserts = [(s, p) for s, p in statements if s.lstrip().startswith("INSERT")]
            assert inserts, "no insert ran"
            for statement, parameters in inserts:
                plan = [row[3] for row in conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", parameters)]
                probes = [step for step in plan if step.startswith("SEARCH p ")]
                assert len(probes) == 2, plan
                for step in probes:
                    assert "COVERING INDEX" in step or "INDEX ix_persons_erased" in step, plan
    finally:
        engine.dispose()
