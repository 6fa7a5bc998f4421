"""The explorer's cookie and paths under the real ``results-receiver serve`` (uvicorn with its
proxy headers): ``Secure`` exactly when a trusted proxy says the request came over HTTPS, and
every link under ``--root-path``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from service.ui import sessions
from tests.support.explorer import csrf_of
from tests.support.keys import TEST_KEY_LINE
from tests.support.server import run_cli, serve
from tests.support.signing import SECRET

pytestmark = pytest.mark.slow


def _sign_in(base: str, token: str, headers: dict[str, str],
             prefix: str = "") -> httpx.Response:
    """The sign-in form, sent back with its cookie by hand (over forwarded HTTPS the cookie is
    Secure, and this client speaks plain HTTP to the server, as the proxy would)."""
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        form = client.get(f"{prefix}/ui/login")
        assert form.status_code == 200, form.text
        login = form.cookies.get(sessions.LOGIN_COOKIE)
        client.cookies.clear()
        return client.post(f"{prefix}/ui/login",
                           data={"csrf": csrf_of(form.text), "token": token},
                           headers={"Cookie": f"{sessions.LOGIN_COOKIE}={login}"})


def _session_cookie(response: httpx.Response) -> list[str]:
    assert response.status_code == 303, response.text
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith(f"{sessions.COOKIE}="))
    return [part.strip().lower() for part in cookie.split(";")]


@pytest.mark.parametrize(("trusted", "secure"), [("127.0.0.1", True), ("192.0.2.10", False)])
def test_the_session_cookie_is_secure_when_a_trusted_proxy_forwarded_https(
        sqlite_url: str, tmp_path: Path, trusted: str, secure: bool):
    env = {"RECEIVER_DATABASE_URL": sqlite_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
           "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE, "RECEIVER_FORWARDED_ALLOW_IPS": trusted}
    token = run_cli("tokens", "create", "--name", "proxy", "--scope", "read", env=env,
                    cwd=tmp_path).stdout.strip()
    with serve(cwd=tmp_path, env=env) as server:
        forwarded = _session_cookie(_sign_in(server.url, token,
                                             {"X-Forwarded-Proto": "https"}))
        plain = _session_cookie(_sign_in(server.url, token, {}))
    assert ("secure" in forwarded) is secure
    assert "secure" not in plain
    for attributes in (forwarded, plain):
        assert "httponly" in attributes
        assert "samesite=strict" in attributes


def test_every_link_and_asset_works_under_the_root_path(sqlite_url: str, tmp_path: Path):
    """As behind a proxy that strips ``/results`` (deploy/nginx/results-receiver-subpath.conf):
    requests reach the service without the prefix; what it emits carries it."""
    env = {"RECEIVER_DATABASE_URL": sqlite_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
           "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE}
    token = run_cli("tokens", "create", "--name", "rooted", "--scope", "admin", env=env,
                    cwd=tmp_path).stdout.strip()
    with serve("--root-path", "/results", cwd=tmp_path, env=env) as server:
        response = _sign_in(server.url, token, {})
        assert response.headers["location"] == "/results/ui/jobs"
        assert "path=/results/ui" in _session_cookie(response)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            cookie = {"Cookie": f"{sessions.COOKIE}={response.cookies.get(sessions.COOKIE)}"}
            page = client.get("/ui/jobs", headers=cookie)
            assert page.status_code == 200
            links = set(re.findall(r'(?:href|src|action)="(/[^"#?]*)', page.text))
            assert links
            for link in sorted(links):
                assert link.startswith("/results/ui"), link
                if link != "/results/ui/logout":
                    stripped = link.removeprefix("/results")
                    assert client.get(stripped, headers=cookie).status_code == 200, link
