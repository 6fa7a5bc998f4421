"""Fixtures: a real PostgreSQL (throwaway cluster) and real SQLite files, migrated by Alembic.

Each test that asks for ``database_url`` runs twice, on an SQLite file and on a PostgreSQL
database of its own (a copy of a migrated template, so tests never share state).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from service.logging import configure_logging
from service.migrations import upgrade
from tests.support import log_scan
from tests.support.keys import TEST_KEYRING
from tests.support.postgres import (
    PostgresCluster,
    execute_autocommit,
    find_bindir,
    running_cluster,
)
from tests.support.signing import SECRET

TEMPLATE_DB = "rr_template"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _suite_log() -> None:
    """Everything the service logs in-process goes to the session's log file, scanned for
    biometric values when the run ends (tests that capture logs themselves redirect them for
    their duration)."""
    configure_logging("json", "debug", log_scan.suite_log_stream())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus != 0 or session.testscollected == 0:
        return
    lines, found = log_scan.scan_everything()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found:
        message = (f"biometric values in the logs ({len(found)} of {lines} lines):\n"
                   + "\n".join(found[:20]))
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(f"log scan: {lines} log lines, no biometric value")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A superuser URL of a server the session may create databases on."""
    external = os.environ.get("RECEIVER_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    with _cluster() as cluster:
        yield cluster.admin_url


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster of this test alone, with a migrated database ``results``: the test may stop
    and start it (``own_postgres.stop()``, ``.start()``) while the service runs against it."""
    with _cluster() as cluster:
        execute_autocommit(cluster.admin_url, "CREATE DATABASE results")
        upgrade(cluster.url("results"))
        yield cluster


@contextmanager
def _cluster() -> Iterator[PostgresCluster]:
    if find_bindir() is None:
        pytest.fail("PostgreSQL server binaries not found (pg_config --bindir); install the "
                    "postgresql package or set RECEIVER_TEST_POSTGRES_URL")
    with running_cluster() as cluster:
        yield cluster


def _database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_url: str) -> str:
    execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {TEMPLATE_DB}",
                       f"CREATE DATABASE {TEMPLATE_DB}")
    upgrade(_database_url(postgres_admin_url, TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def postgres_url(postgres_admin_url: str, postgres_template: str) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:16]
    execute_autocommit(postgres_admin_url, f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    yield _database_url(postgres_admin_url, name)
    execute_autocommit(postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "results.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, webhook_secrets=(SECRET,),
                    encryption_keys=TEST_KEYRING, log_format="json")


@asynccontextmanager
async def serve_in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process HTTP client."""
    async with serve_in_process_with_state(settings) as (client, _state):
        yield client


@asynccontextmanager
async def serve_in_process_with_state(
        settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    """:func:`serve_in_process`, and the state its lifespan gives every request."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state, client=("203.0.113.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver.test",
                                     timeout=60) as client:
            yield client, dict(state or {})


ClientFactory = Callable[..., Any]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_in_process(settings) as http:
        yield http


@pytest.fixture
def make_client(settings: Settings) -> ClientFactory:
    """``async with make_client(allow_unsigned=True) as client`` for other settings."""

    def factory(**changes: Any) -> Any:
        return serve_in_process(replace(settings, **changes))

    return factory


async def create_token(settings: Settings, *, name: str, scope: str) -> str:
    from service import tokens
    from service.db import Database
    from service.models import utcnow

    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            return await tokens.create(conn, name=name, scope=scope,  # type: ignore[arg-type]
                                       now=utcnow())
    finally:
        await database.dispose()


@pytest.fixture
async def read_token(settings: Settings) -> str:
    return await create_token(settings, name="reader", scope="read")


@pytest.fixture
async def admin_token(settings: Settings) -> str:
    return await create_token(settings, name="admin", scope="admin")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
