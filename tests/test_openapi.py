"""``/openapi.json``: public, valid OpenAPI 3.1, documents every route the app serves, and the
live service (``results-receiver serve`` on SQLite and PostgreSQL) never answers outside it.

The schemathesis run generates requests from the served document itself, for every operation,
in positive and negative mode, authenticated with an admin token and against a database seeded
with the three reference examples, so that path ids both exist and do not.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from service.api.openapi import build_spec
from service.app import create_app
from service.config import Settings
from tests.conftest import bearer, create_token, serve_in_process
from tests.support.keys import TEST_KEY_LINE, TEST_KEYRING
from tests.support.server import serve
from tests.support.signing import EXAMPLES, SECRET, encode, signed_headers

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
# Examples per operation and mode: enough to cover every parameter's shapes, bounded so the
# module stays well under a minute and a half on two shared cores.
MAX_EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 12}
WEBHOOK_EXAMPLES = 10  # each generated payload is large; unsigned, they all end at the 401
EXAMPLE_FILES = ("video_finished.json", "image_batch_finished.json", "video_failed.json")
SEEDED_JOB_IDS = ("video_12345", "image_batch_123", "video_12346")
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def sqlite_settings(path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{path / 'openapi.db'}", webhook_secrets=(SECRET,),
                    encryption_keys=TEST_KEYRING,
                    log_format="json")


def served_operations(settings: Settings) -> set[tuple[str, str]]:
    """(path, method) for every route of the app, HEAD (implied by GET) left out. The
    explorer's pages (``/ui``) are HTML for people, not API operations: the README lists them."""
    operations = set()
    for route in create_app(settings).routes:
        if route.path == "/ui" or route.path.startswith("/ui/"):
            continue
        methods = getattr(route, "methods", None)
        assert methods, f"route {route!r} has no methods: is it documented?"
        operations |= {(route.path, m.lower()) for m in methods if m != "HEAD"}
    return operations


def documented_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in spec["paths"].items()
            for method in item if method in METHODS}


# --- the document --------------------------------------------------------------------------

@pytest.mark.anyio
async def test_openapi_json_is_public_and_is_the_document_build_spec_makes(sqlite_url):
    settings = Settings(database_url=sqlite_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    async with serve_in_process(settings) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == build_spec()


def test_openapi_document_is_valid_openapi_3_1():
    spec = build_spec()
    assert spec["openapi"].startswith("3.1.")
    validate(spec, cls=OpenAPIV31SpecValidator)  # raises, naming the problem, when invalid
    validate(build_spec("/results"), cls=OpenAPIV31SpecValidator)


def test_openapi_document_lists_exactly_the_routes_the_app_serves(tmp_path):
    served = served_operations(sqlite_settings(tmp_path))
    documented = documented_operations(build_spec())
    assert served - documented == set(), "routes served but not documented in openapi.py"
    assert documented - served == set(), "operations documented but not served"


def test_openapi_servers_entry_follows_the_root_path():
    assert build_spec()["servers"] == [{"url": "/"}]
    assert build_spec("/results")["servers"] == [{"url": "/results"}]


def test_every_operation_documents_its_error_responses_as_json_errors():
    spec = build_spec()
    for path, method in documented_operations(spec):
        operation = spec["paths"][path][method]
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                content = response.get("content", {})
                assert "application/json" in content, (path, method, status)
        if operation.get("security"):
            assert "401" in operation["responses"], (path, method)
            assert "422" in operation["responses"], (path, method)


# --- links ---------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_every_link_of_a_listed_job_leads_to_that_job_whatever_its_id(sqlite_url):
    """The documented ``links`` of a job summary must resolve to the same job, also for ids
    holding characters that are reserved in a URL path ("/", "?", "#", "%")."""
    settings = Settings(database_url=sqlite_url, webhook_secrets=(SECRET,),
                        encryption_keys=TEST_KEYRING, log_format="json")
    token = await create_token(settings, name="links", scope="read")
    job_ids = ["video_plain", "video_c?d", "video_e#f", "video_g%2Fh", "video_ü ß",
               "video_a/b", "video_x/payload"]
    async with serve_in_process(settings) as client:
        for job_id in job_ids:
            body = encode({"job_id": job_id, "status": "failed", "error": "gave up"})
            response = await client.post("/webhooks/analysis", content=body,
                                         headers=signed_headers(body))
            assert response.status_code == 200, response.text
        listed = (await client.get("/v1/jobs", headers=bearer(token))).json()["data"]
        assert sorted(row["job_id"] for row in listed) == sorted(job_ids)
        unreachable = []
        for row in listed:
            for name in ("self", "payload", "items"):
                response = await client.get(row["links"][name], headers=bearer(token))
                found = response.json() if response.status_code == 200 else None
                if name == "items":
                    ok = found is not None and found["data"] == []
                else:
                    ok = found is not None and found["job_id"] == row["job_id"]
                if not ok:
                    unreachable.append(f"{row['job_id']!r} {name} {row['links'][name]} -> "
                                       f"{response.status_code} {response.text[:120]}")
    assert not unreachable, "\n".join(unreachable)


# --- schemathesis against the live service -------------------------------------------------

def _seed(base_url: str) -> list[int]:
    """POST the three reference examples, signed; return the delivery ids."""
    delivery_ids = []
    for name in EXAMPLE_FILES:
        body = (EXAMPLES / name).read_bytes()
        response = httpx.post(base_url + "/webhooks/analysis", content=body,
                              headers=signed_headers(body), timeout=30)
        assert response.status_code == 200, response.text
        delivery_ids.append(response.json()["delivery_id"])
    # A signed payload of the wrong shape: kept as a rejected delivery, listed by /deliveries.
    bad = b'{"job_id": "video_bad", "status": "finished", "result": {"raw_scenes": 3}}'
    response = httpx.post(base_url + "/webhooks/analysis", content=bad,
                          headers=signed_headers(bad), timeout=30)
    assert response.status_code == 422, response.text
    return delivery_ids


def _strategy(operation: Any, mode: GenerationMode, delivery_ids: list[int]) -> Any:
    """Cases from the schema alone, and cases whose path ids exist in the database."""
    generated = operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    if "job_id" in names:
        existing = st.sampled_from(SEEDED_JOB_IDS).flatmap(
            lambda job_id: operation.as_strategy(generation_mode=mode,
                                                 path_parameters={"job_id": job_id}))
        return st.one_of(existing, generated)
    if "delivery_id" in names:
        existing = st.sampled_from([*delivery_ids, 0]).flatmap(
            lambda delivery_id: operation.as_strategy(
                generation_mode=mode, path_parameters={"delivery_id": delivery_id}))
        return st.one_of(existing, generated)
    return generated


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters())) or (operation.body is not None and bool(
        list(operation.body)))


def _run_operation(operation: Any, mode: GenerationMode, *, session: requests.Session,
                   headers: dict[str, str], delivery_ids: list[int]) -> str | None:
    """Hypothesis over one operation; a description of the first failure, or None."""
    failing: list[Any] = []

    examples = WEBHOOK_EXAMPLES if operation.path == "/webhooks/analysis" else MAX_EXAMPLES[mode]

    @hypothesis.settings(max_examples=examples, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=_strategy(operation, mode, delivery_ids))
    def run(case: Any) -> None:
        response = case.call(session=session, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, FailureGroup):
            failing.append((case, response))
            raise

    try:
        run()
    except (Exception, FailureGroup) as exc:  # a check (or the call) failed: describe it
        detail = f"{operation.label} [{mode.value}]: {type(exc).__name__}: {exc}"
        if failing:
            case, response = failing[-1]
            detail += (f"\n  reproduce: {case.as_curl_command(headers=headers)}"
                       f"\n  response: {response.status_code} {response.text[:500]}")
        return detail
    return None


@pytest.mark.slow
def test_live_service_conforms_to_its_openapi_document(database_url, settings, tmp_path):
    """No 5xx, no undocumented status code or content type, no body off its schema, for
    positive and negative cases of every operation (the webhook included: unsigned or
    wrongly signed requests must get the documented 401)."""
    token = anyio.run(lambda: create_token(settings, name="schemathesis", scope="admin"))
    env = {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
           "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE, "RECEIVER_LOG_LEVEL": "error"}
    with serve(cwd=tmp_path, env=env) as server:
        delivery_ids = _seed(server.url)
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        documented = documented_operations(build_spec())
        # schemathesis leaves out the document's own location; everything else is run.
        generated = {(op.path, op.method.lower()) for op in operations}
        assert documented - generated == {("/openapi.json", "get")}
        # Deleting goes last, so that the seeded jobs exist for every other operation.
        operations.sort(key=lambda op: op.method.lower() == "delete")
        headers = {"Authorization": f"Bearer {token}"}
        failures = []
        with requests.Session() as session:
            for operation, mode in itertools.product(operations, list(GenerationMode)):
                if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                    continue  # nothing to make invalid
                failure = _run_operation(operation, mode, session=session, headers=headers,
                                         delivery_ids=delivery_ids)
                if failure is not None:
                    failures.append(failure)
        assert not failures, "\n\n".join(failures)
