"""A method a path does not support is a 405 JSON error whose ``Allow`` lists every method the
path does support, for every route the app serves."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from service.app import create_app
from service.config import Settings
from tests.conftest import serve_in_process
from tests.support.keys import TEST_KEYRING
from tests.support.signing import SECRET

pytestmark = pytest.mark.anyio

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _methods_by_path() -> dict[str, set[str]]:
    settings = Settings(database_url="sqlite:///unused.db", webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING)
    served: dict[str, set[str]] = defaultdict(set)
    for route in create_app(settings).routes:
        methods = getattr(route, "methods", None)
        if methods:  # a mount (the explorer's static files) answers any method itself
            served[getattr(route, "path")] |= set(methods)  # noqa: B009
    return dict(served)


SERVED = _methods_by_path()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_is_checked_and_the_job_path_supports_get_and_delete():
    assert len(SERVED) > 10
    assert {"GET", "HEAD", "DELETE"} <= SERVED["/v1/jobs/{job_id}"]


@pytest.mark.parametrize("path", sorted(SERVED))
async def test_405_allow_header_lists_every_method_the_path_supports(sqlite_url, path):
    settings = Settings(database_url=sqlite_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    unsupported = [m for m in METHODS if m not in SERVED[path]]
    assert "OPTIONS" in unsupported
    async with serve_in_process(settings) as client:
        for method in unsupported:
            response = await client.request(method, _concrete(path))
            assert response.status_code == 405, (method, path, response.text)
            if method != "HEAD":  # a HEAD response has no body
                assert response.json()["code"] == "method_not_allowed"
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == SERVED[path], (method, path)
