"""The results explorer in process, on SQLite and PostgreSQL: sign-in and sessions (cookie
flags, CSRF, revocation, idle expiry, where a sign-in may lead), the headers of every
response, admin-only pages, what each page shows (timeline, batch, failure, search, faces,
deliveries, audit), stored markup rendered inert, and a root path."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from service import models
from service.app import create_app
from service.config import Settings
from service.db import Database
from service.ui import sessions
from service.ui.security import CONTENT_SECURITY_POLICY
from tests.support.explorer import (
    XSS_EXTERNAL_ID,
    XSS_JOB_ID,
    XSS_STRINGS,
    count_marks,
    csrf_of,
    png,
    showcase_video,
    sign_in,
    xss_payloads,
)
from tests.support.logs import captured_json_logs
from tests.support.signing import encode, example, signed_headers

pytestmark = pytest.mark.anyio

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy",
                    "x-frame-options")


async def deliver(client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    body = encode(document)
    response = await client.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    assert response.status_code == 200, response.text


async def deliver_examples(client: httpx.AsyncClient) -> None:
    for name in ("video_finished.json", "image_batch_finished.json", "video_failed.json"):
        await deliver(client, example(name))


async def signed_in(client: httpx.AsyncClient, token: str) -> None:
    response = await sign_in(client, token)
    assert response.status_code == 303, response.text


async def run_sql(settings: Settings, statement: sa.Executable) -> None:
    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            await conn.execute(statement)
    finally:
        await database.dispose()


@pytest.fixture
async def admin(client: httpx.AsyncClient, admin_token: str) -> httpx.AsyncClient:
    await signed_in(client, admin_token)
    return client


# --- sign-in and sessions ----------------------------------------------------------------------

async def test_ui_redirects_to_jobs_and_a_page_without_session_redirects_to_login_with_next(
        client):
    home = await client.get("/ui")
    assert home.status_code == 303
    assert home.headers["location"] == "/ui/jobs"
    page = await client.get("/ui/jobs/video_12345?t=3-5.2")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=" + quote("/ui/jobs/video_12345?t=3-5.2",
                                                                 safe="")
    for path in ("/ui/jobs", "/ui/search?q=x", "/ui/audit", "/ui/people/1",
                 "/ui/jobs/a/persons/0/0", "/ui/jobs/a/persons/0/0/thumbnail",
                 "/ui/jobs/a/deliveries", "/ui/jobs/a/deliveries/1/raw", "/ui/logout"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next="), path


async def test_sign_in_sets_an_httponly_samesite_strict_session_cookie_and_follows_next(
        client, read_token):
    response = await sign_in(client, read_token, next_path="/ui/search?q=dogs")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/search?q=dogs"
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(f"{sessions.COOKIE}="))
    attributes = [part.strip().lower() for part in session.split(";")]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/ui" in attributes
    assert "secure" not in attributes  # plain HTTP, no trusted proxy saying otherwise
    assert any(c.startswith(f"{sessions.LOGIN_COOKIE}=") and "max-age=0" in c.lower()
               for c in cookies)
    jobs = await client.get("/ui/jobs")
    assert jobs.status_code == 200
    assert "reader" in jobs.text


async def test_sign_in_over_https_marks_the_cookie_secure(settings, read_token):
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="https://receiver.test") as https:
            response = await sign_in(https, read_token)
    session = next(c for c in response.headers.get_list("set-cookie")
                   if c.startswith(f"{sessions.COOKIE}="))
    assert "secure" in [part.strip().lower() for part in session.split(";")]


async def test_an_unknown_token_is_refused_with_401_and_no_session(client):
    with captured_json_logs("info") as logs:
        response = await sign_in(client, "rr_not-a-token-at-all")
    assert response.status_code == 401
    assert "unknown or revoked" in response.text
    assert not any(c.startswith(f"{sessions.COOKIE}=")
                   for c in response.headers.get_list("set-cookie"))
    events = [json.loads(line) for line in logs.getvalue().splitlines()]
    refused = [e for e in events if e["event"] == "ui.login_refused"]
    assert refused
    assert refused[0]["reason"] == "unknown_token"
    assert "rr_not-a-token-at-all" not in logs.getvalue()


async def test_sign_in_without_or_with_a_wrong_csrf_token_is_refused_with_403(
        client, read_token):
    form = await client.get("/ui/login")
    good = csrf_of(form.text)
    for data in ({"token": read_token}, {"token": read_token, "csrf": "x" * 43},
                 {"token": read_token, "csrf": good[:-1] + ("A" if good[-1] != "A" else "B")}):
        response = await client.post("/ui/login", data=data)
        assert response.status_code == 403, data
        assert "Form refused" in response.text
        assert not any(c.startswith(f"{sessions.COOKIE}=")
                       for c in response.headers.get_list("set-cookie"))
    client.cookies.clear()  # no sign-in cookie: a token copied from another page is refused
    response = await client.post("/ui/login", data={"token": read_token, "csrf": good})
    assert response.status_code == 403


async def test_sign_out_needs_its_csrf_token_then_ends_the_session_and_clears_the_cookie(
        client, read_token):
    await signed_in(client, read_token)
    page = await client.get("/ui/logout")
    assert page.status_code == 200
    refused = await client.post("/ui/logout", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert (await client.get("/ui/jobs")).status_code == 200  # still signed in
    cookie = client.cookies.get(sessions.COOKIE)
    with captured_json_logs("info") as logs:
        response = await client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    cleared = next(c for c in response.headers.get_list("set-cookie")
                   if c.startswith(f"{sessions.COOKIE}="))
    assert "max-age=0" in cleared.lower()
    assert any(json.loads(line)["event"] == "ui.logout" for line in logs.getvalue().splitlines())
    client.cookies.set(sessions.COOKIE, cookie, path="/ui")  # the old cookie, replayed
    assert (await client.get("/ui/jobs")).status_code == 303


@pytest.mark.parametrize("target", [
    "//evil.example/ui/jobs", "https://evil.example/ui/jobs", "/\\evil.example/ui",
    "/ui/../v1/jobs", "/ui/%2e%2e/v1/jobs", "javascript:alert(1)", "/v1/jobs", "ui/jobs",
    "/ui\r\nLocation: https://evil.example",
])
async def test_sign_in_never_leads_outside_the_explorer(client, read_token, target):
    response = await sign_in(client, read_token, next_path=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/jobs"


async def test_revoking_a_token_ends_its_sessions_at_once(client, settings, read_token):
    await signed_in(client, read_token)
    assert (await client.get("/ui/jobs")).status_code == 200
    from service import tokens
    from service.models import utcnow

    database = Database.from_settings(settings)
    try:
        async with database.write() as conn:
            assert await tokens.revoke(conn, name="reader", now=utcnow())
    finally:
        await database.dispose()
    response = await client.get("/ui/jobs")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")


async def test_a_session_idle_for_12_hours_is_over_and_a_used_one_is_kept_alive(
        client, settings, read_token):
    await signed_in(client, read_token)
    table = models.ui_sessions
    idle = timedelta(seconds=sessions.IDLE_SECONDS)
    await run_sql(settings, sa.update(table).values(
        last_seen_at=models.utcnow() - idle + timedelta(minutes=5)))
    assert (await client.get("/ui/jobs")).status_code == 200  # used: last seen brought up
    await run_sql(settings, sa.update(table).values(
        last_seen_at=models.utcnow() - idle + timedelta(minutes=1)))
    assert (await client.get("/ui/jobs")).status_code == 200  # 11 h 59 min: still alive
    await run_sql(settings, sa.update(table).values(
        last_seen_at=models.utcnow() - idle - timedelta(seconds=1)))
    response = await client.get("/ui/jobs")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")


async def test_sessions_are_stored_only_as_hashes(client, settings, read_token):
    await signed_in(client, read_token)
    secret = client.cookies.get(sessions.COOKIE)
    database = Database.from_settings(settings)
    try:
        async with database.read() as conn:
            stored = (await conn.execute(sa.select(models.ui_sessions))).all()
    finally:
        await database.dispose()
    assert len(stored) == 1
    assert secret not in repr(stored)
    assert stored[0].session_hash == sessions.session_hash(secret)


# --- headers and access --------------------------------------------------------------------------

async def test_every_explorer_response_has_a_csp_without_unsafe_inline_and_safety_headers(
        admin):
    await deliver_examples(admin)
    paths = ["/ui", "/ui/login", "/ui/jobs", "/ui/jobs/video_12345", "/ui/jobs/image_batch_123",
             "/ui/jobs/video_12346", "/ui/jobs/video_12345/deliveries",
             "/ui/jobs/video_12345/persons/0/0", "/ui/search?q=dogs", "/ui/audit",
             "/ui/people/999", "/ui/no-such-page", "/ui/static/ui.css", "/ui/static/ui.js",
             "/ui/jobs/no_such_job"]
    for path in paths:
        response = await admin.get(path)
        headers = response.headers
        for name in SECURITY_HEADERS:
            assert name in headers, (path, name)
        csp = headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        if not path.startswith("/ui/static"):
            assert headers["cache-control"] == "no-store", path
    assert (await admin.get("/ui/no-such-page")).status_code == 404
    assert "text/html" in (await admin.get("/ui/no-such-page")).headers["content-type"]
    assert "content-security-policy" not in (await admin.get("/healthz")).headers


async def test_pages_have_no_inline_script_or_style(admin):
    await deliver(admin, showcase_video())
    for path in ("/ui/jobs", "/ui/jobs/video_showcase?t=10-20", "/ui/search?q=bridge",
                 "/ui/login"):
        html = (await admin.get(path)).text
        assert "style=" not in html, path
        assert "<style" not in html, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\son[a-z]+=", html), path


async def test_a_read_token_gets_403_on_deliveries_audit_and_raw_downloads(client, read_token):
    await deliver_examples(client)
    await signed_in(client, read_token)
    for path in ("/ui/jobs/video_12345/deliveries", "/ui/audit",
                 "/ui/jobs/video_12345/deliveries/1/raw"):
        response = await client.get(path)
        assert response.status_code == 403, path
        assert "admin token" in response.text
    job = await client.get("/ui/jobs/video_12345")
    assert "/deliveries" not in job.text  # no link to a page it cannot open
    assert "Audit log" not in job.text


# --- pages ---------------------------------------------------------------------------------------

async def test_video_timeline_draws_every_scene_section_ocr_text_and_person(admin):
    await deliver_examples(admin)
    html = (await admin.get("/ui/jobs/video_12345")).text
    assert count_marks(html, "scene") == 2
    assert count_marks(html, "section") == 2
    assert count_marks(html, "ocr") == 1
    assert count_marks(html, "person") == 2
    assert 'class="activity-path line"' in html
    assert "3 values" in html  # the activity curve's description
    assert "No dogs off leash" in html
    assert "/ui/jobs/video_12345/persons/0/1" in html


async def test_a_time_range_in_the_url_selects_the_marks_it_touches(admin):
    await deliver(admin, showcase_video())
    html = (await admin.get("/ui/jobs/video_showcase?t=13-15")).text
    assert 'class="selection"' in html
    assert "Selected 13.0 s \u2013 15.0 s" in html
    assert "1 scenes, 2 section segments, 1 texts, 2 persons" in html
    marks = re.findall(r'<a href="[^"]*" class="mark (\w+)[^"]*selected', html)
    assert sorted(marks) == ["ocr", "person", "person", "scene", "section", "section"]
    ignored = await admin.get("/ui/jobs/video_showcase?t=5-banana")
    assert ignored.status_code == 200
    assert "time range in the address was ignored" in ignored.text


async def test_critical_sections_are_marked_and_their_confidence_shown(admin):
    await deliver(admin, showcase_video())
    html = (await admin.get("/ui/jobs/video_showcase")).text
    assert len(re.findall(r'class="mark section critical', html)) == 2  # two segments
    assert "Section weapon: critical, confidence 71%" in html
    assert 'fill-opacity="0.81"' in html  # 0.35 + 0.65 * 0.71


async def test_a_long_activity_series_is_downsampled_keeping_its_spike(admin):
    video = showcase_video("video_long")
    activity = [0.01] * 100_000
    activity[61_234] = 5.0
    video["result"]["frame_activity_diffs"] = activity
    await deliver(admin, video)
    html = (await admin.get("/ui/jobs/video_long")).text
    path = re.search(r'<path d="(M[^"]+)" class="activity-path band"', html)
    assert path is not None
    points = path.group(1).count(",")
    assert points <= 1000  # 500 buckets, their lowest and highest values
    assert "100000 values, drawn as 500 ranges" in html
    assert ",2.0 L" in path.group(1)  # the spike reaches the top of the box


async def test_image_batch_shows_tags_persons_ocr_and_an_item_failure(admin):
    await deliver_examples(admin)
    batch = example("image_batch_finished.json")
    batch["job_id"] = "batch_with_failure"
    batch["items"][1]["result"]["tags"][0]["is_critical"] = True
    batch["items"].append({"external_id": "103", "status": "failed",
                           "error": {"code": "UNSUPPORTED_FORMAT", "message": "not an image"}})
    await deliver(admin, batch)
    html = (await admin.get("/ui/jobs/batch_with_failure")).text
    assert html.count('class="card item') == 3
    assert '<li class="tag critical">dog' in html
    assert "UNSUPPORTED_FORMAT" in html
    assert "not an image" in html
    assert "Kitchen" in html
    assert "/ui/jobs/batch_with_failure/persons/0/0" in html


async def test_a_failed_job_shows_its_error_plainly(admin):
    await deliver_examples(admin)
    html = (await admin.get("/ui/jobs/video_12346")).text
    assert "The job failed" in html
    assert "MAX_PROCESSING_TIME_EXCEEDED" in html
    assert "The job exceeded Max-Processing-Time and was cancelled." in html


async def test_job_list_filters_and_pages_like_the_api(admin):
    await deliver_examples(admin)
    for i in range(3):
        await deliver(admin, {"job_id": f"extra_{i}", "status": "failed", "error": "boom"})
    failed = (await admin.get("/ui/jobs?status=failed&kind=&received_after=")).text
    assert "extra_2" in failed
    assert "video_12346" in failed
    assert "video_12345" not in failed
    videos = (await admin.get("/ui/jobs?kind=video")).text
    assert "video_12345" in videos
    assert "image_batch_123" not in videos
    first = await admin.get("/ui/jobs?limit=2")
    cursor = re.search(r'href="(/ui/jobs\?[^"]*cursor=[^"]+)" rel="next"', first.text)
    assert cursor is not None
    second = await admin.get(cursor.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    assert "First page" in second.text
    bad = await admin.get("/ui/jobs?status=nope")
    assert bad.status_code == 422
    assert "status: must be one of" in bad.text


async def test_search_highlights_ocr_matches_and_links_each_hit_to_its_moment(admin):
    await deliver_examples(admin)
    html = (await admin.get("/ui/search?q=dogs")).text
    assert "No <mark>dogs</mark> off leash" in html
    assert 'href="/ui/jobs/video_12345?t=3-5.2#timeline"' in html
    assert 'href="/ui/jobs/image_batch_123?item=1#item-1"' in html
    tags = (await admin.get("/ui/search?q=cat")).text
    assert "Tags named “cat”" in tags
    assert "image_batch_123" in tags
    sections = (await admin.get("/ui/search?q=intro")).text
    assert 'href="/ui/jobs/video_12345?t=0-3#timeline"' in sections
    assert (await admin.get("/ui/search?q=" + "x" * 201)).status_code == 422


async def test_deliveries_page_lists_each_delivery_and_the_raw_download_is_audited(admin):
    video = example("video_finished.json")
    body = encode(video)
    for _ in range(2):
        await admin.post("/webhooks/analysis", content=body, headers=signed_headers(body))
    page = await admin.get("/ui/jobs/video_12345/deliveries")
    assert page.status_code == 200
    assert page.text.count("<tr>") == 3  # header and two deliveries
    assert "stored" in page.text
    assert "duplicate" in page.text
    assert "hmac-sha256" in page.text
    link = re.search(r'href="(/ui/jobs/video_12345/deliveries/(\d+)/raw)"', page.text)
    assert link is not None
    raw = await admin.get(link.group(1))
    assert raw.status_code == 200
    assert raw.content == body
    assert raw.headers["content-disposition"].startswith("attachment")
    audit_page = await admin.get("/ui/audit?action=raw_read")
    assert "raw read" in audit_page.text
    assert "admin" in audit_page.text
    assert f"delivery_id: {link.group(2)}" in audit_page.text
    other_job = await admin.get(f"/ui/jobs/image_batch_123/deliveries/{link.group(2)}/raw")
    assert other_job.status_code == 404  # a delivery is downloaded under its own job only


async def test_face_page_shows_the_thumbnail_and_similar_faces_linking_to_their_moments(
        admin):
    await deliver(admin, showcase_video())
    await deliver(admin, showcase_video("video_showcase_2"))
    html = ""
    for _ in range(300):  # the face index loads and tails in the background
        html = (await admin.get("/ui/jobs/video_showcase/persons/0/0")).text
        if "similar" in html and "video_showcase_2" in html:
            break
        await asyncio.sleep(0.1)
    assert '<img class="thumb" src="/ui/jobs/video_showcase/persons/0/0/thumbnail"' in html
    assert 'href="/ui/jobs/video_showcase_2?t=9-19#timeline"' in html
    assert "% similar" in html
    thumbnail = await admin.get("/ui/jobs/video_showcase/persons/0/0/thumbnail")
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.content == png(200, 120, 80)
    assert (await admin.get("/ui/jobs/video_12345/persons/0/0/thumbnail")).status_code == 404
    assert (await admin.get("/ui/jobs/video_showcase/persons/0/9")).status_code == 404


async def test_person_page_lists_every_appearance_across_jobs(admin, admin_token):
    await deliver(admin, showcase_video())
    await deliver(admin, showcase_video("video_showcase_2"))
    people: list[dict[str, Any]] = []
    for _ in range(300):  # the people clustering runs in the background
        listed = await admin.get("/v1/people?min_appearances=4",
                                 headers={"Authorization": f"Bearer {admin_token}"})
        people = listed.json()["data"]
        if people:
            break
        await asyncio.sleep(0.1)
    assert people, "no person grouped four faces"
    html = (await admin.get(f"/ui/people/{people[0]['id']}")).text
    assert html.count('class="face"') == 4
    assert "video_showcase_2" in html
    assert "/ui/jobs/video_showcase?t=30-38#timeline" in html


async def test_stored_markup_is_escaped_in_every_page(admin):
    for document in xss_payloads():
        await deliver(admin, document)
    encoded = quote(XSS_JOB_ID, safe="")
    pages = ["/ui/jobs", f"/ui/jobs/{encoded}", "/ui/jobs/xss_batch",
             "/ui/search?q=script", f"/ui/jobs/{encoded}/deliveries",
             "/ui/search?q=" + quote('<script>window.__xss="tag"</script>')]
    for path in pages:
        response = await admin.get(path)
        assert response.status_code == 200, path
        html = response.text
        for value in XSS_STRINGS:
            assert value not in html, (path, value)
        assert "<script>window" not in html, path
    job = (await admin.get(f"/ui/jobs/{encoded}")).text
    assert "xss_&lt;script&gt;window.__xss=&#34;job&#34;&lt;/script&gt;" in job
    batch = (await admin.get("/ui/jobs/xss_batch")).text
    assert "&lt;script&gt;window.__xss=&#34;external&#34;&lt;/script&gt;" in batch
    assert XSS_EXTERNAL_ID not in batch


async def test_job_ids_with_a_slash_have_working_pages(admin):
    video = example("video_finished.json")
    video["job_id"] = "tenant/a/video 1"
    await deliver(admin, video)
    listing = (await admin.get("/ui/jobs")).text
    assert 'href="/ui/jobs/tenant%2Fa%2Fvideo%201"' in listing
    page = await admin.get("/ui/jobs/tenant%2Fa%2Fvideo%201")
    assert page.status_code == 200
    assert count_marks(page.text, "scene") == 2
    assert 'href="/ui/jobs/tenant%2Fa%2Fvideo%201/persons/0/0"' in page.text
    assert (await admin.get("/ui/jobs/tenant%2Fa%2Fvideo%201/persons/0/0")).status_code == 200


async def test_the_explorer_under_a_root_path_links_everything_under_it(
        settings, read_token):
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state, root_path="/results")
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://receiver.test") as client:
            await deliver_examples_at(client, "/results")
            redirect = await client.get("/results/ui/jobs")
            assert redirect.headers["location"] == "/results/ui/login?next=%2Fresults%2Fui%2Fjobs"
            response = await sign_in(client, read_token, prefix="/results",
                                     next_path="/results/ui/jobs/video_12345")
            assert response.headers["location"] == "/results/ui/jobs/video_12345"
            cookie = next(c for c in response.headers.get_list("set-cookie")
                          if c.startswith(f"{sessions.COOKIE}="))
            assert "path=/results/ui" in cookie.lower()
            html = (await client.get("/results/ui/jobs/video_12345")).text
            hrefs = re.findall(r'(?:href|src|action)="([^"#]+)', html)
            local = [h for h in hrefs if h.startswith("/")]
            assert local
            assert all(h.startswith("/results/ui") for h in local), local
            assert "/results/ui/static/ui.css" in html
            for asset in ("ui.css", "ui.js", "favicon.svg"):
                assert (await client.get(f"/results/ui/static/{asset}")).status_code == 200
            client.cookies.clear()
            outside = await sign_in(client, read_token, prefix="/results",
                                    next_path="/ui/jobs")  # not under the root path
            assert outside.headers["location"] == "/results/ui/jobs"


async def deliver_examples_at(client: httpx.AsyncClient, prefix: str) -> None:
    for name in ("video_finished.json", "image_batch_finished.json"):
        body = encode(example(name))
        response = await client.post(f"{prefix}/webhooks/analysis", content=body,
                                     headers=signed_headers(body))
        assert response.status_code == 200


async def test_logs_of_a_session_never_carry_its_token_cookie_or_session_id(
        client, admin_token):
    with captured_json_logs("debug") as logs:
        await deliver_examples(client)
        await signed_in(client, admin_token)
        secret = client.cookies.get(sessions.COOKIE)
        for path in ("/ui/jobs", "/ui/jobs/video_12345/deliveries", "/ui/search?q=dogs"):
            assert (await client.get(path)).status_code == 200
        page = await client.get("/ui/logout")
        await client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    text = logs.getvalue()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert "ui.login" in events
    assert "ui.logout" in events
    assert admin_token not in text
    assert secret not in text
    assert sessions.session_hash(secret) not in text
    assert sessions.csrf_token(secret) not in text


async def test_an_unexpected_failure_is_a_500_page_with_the_error_in_the_log(admin, monkeypatch):
    await deliver_examples(admin)

    def broken(*_args: Any) -> None:
        raise RuntimeError("the timeline could not be read")

    monkeypatch.setattr("service.ui.jobs.video.read", broken)
    with captured_json_logs("info") as logs:
        response = await admin.get("/ui/jobs/video_12345")
    assert response.status_code == 500
    assert "text/html" in response.headers["content-type"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "could not be shown" in response.text
    events = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert any(e["event"] == "http.internal_error" for e in events)
