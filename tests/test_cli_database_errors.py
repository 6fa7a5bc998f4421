"""``serve`` and ``migrate`` facing a database they cannot use: one clear line naming where
(host:port, never the password) and ``RECEIVER_DATABASE_URL``, a non-zero exit, no traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support.postgres import execute_autocommit, free_port
from tests.support.server import run_cli
from tests.support.signing import SECRET

PASSWORD = "pw-that-must-not-be-printed"
PASSWORD_ROLE = "rr_password_check"


def _fails_clearly(command: str, database_url: str, tmp_path: Path) -> str:
    args = (command, "--port", str(free_port())) if command == "serve" else (command,)
    result = run_cli(*args, check=False, cwd=tmp_path,
                     env={"RECEIVER_DATABASE_URL": database_url,
                          "RECEIVER_WEBHOOK_SECRETS": SECRET})
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    assert "RECEIVER_DATABASE_URL" in line
    assert PASSWORD not in result.stderr + result.stdout
    return line


def _on_server(admin_url: str, user: str, database: str, password: str = PASSWORD) -> str:
    url = make_url(admin_url)
    return f"postgresql://{user}:{password}@{url.host}:{url.port}/{database}"


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_closed_port_names_host_port_and_the_variable(command, tmp_path):
    port = free_port()  # nothing listens there
    line = _fails_clearly(command, f"postgresql://receiver:{PASSWORD}@127.0.0.1:{port}/results",
                          tmp_path)
    assert f"127.0.0.1:{port}" in line
    assert "connection refused" in line


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_unknown_database_is_named(command, postgres_admin_url, tmp_path):
    url = _on_server(postgres_admin_url, "postgres", "no_such_database")
    line = _fails_clearly(command, url, tmp_path)
    assert f"{make_url(url).host}:{make_url(url).port}" in line
    assert "there is no database 'no_such_database'" in line


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_unknown_user_is_named(command, postgres_admin_url, tmp_path):
    line = _fails_clearly(command, _on_server(postgres_admin_url, "nobody_here", "postgres"),
                          tmp_path)
    assert "user 'nobody_here' is not allowed to connect" in line


@pytest.fixture
def password_role(postgres_admin_url: str) -> Iterator[str]:
    """A role that must log in with a password: one pg_hba.conf line for it alone."""
    import asyncio

    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from service.config import async_url

    async def hba_file() -> str:
        engine = create_async_engine(async_url(postgres_admin_url), poolclass=sa.pool.NullPool)
        try:
            async with engine.connect() as conn:
                return str((await conn.execute(sa.text("SHOW hba_file"))).scalar_one())
        finally:
            await engine.dispose()

    path = Path(asyncio.run(hba_file()))
    if not os.access(path, os.W_OK):
        pytest.skip("the test server's pg_hba.conf is not writable here")
    original = path.read_text(encoding="utf-8")
    execute_autocommit(postgres_admin_url, f"DROP ROLE IF EXISTS {PASSWORD_ROLE}",
                       f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'the-right-password'")
    path.write_text(f"host all {PASSWORD_ROLE} all scram-sha-256\n" + original,
                    encoding="utf-8")
    execute_autocommit(postgres_admin_url, "SELECT pg_reload_conf()")
    try:
        yield PASSWORD_ROLE
    finally:
        path.write_text(original, encoding="utf-8")
        execute_autocommit(postgres_admin_url, "SELECT pg_reload_conf()",
                           f"DROP ROLE IF EXISTS {PASSWORD_ROLE}")


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_wrong_password_is_named_without_printing_it(command, postgres_admin_url, password_role,
                                                    tmp_path):
    line = _fails_clearly(command, _on_server(postgres_admin_url, password_role, "postgres"),
                          tmp_path)
    assert f"the password was refused for user '{password_role}'" in line
