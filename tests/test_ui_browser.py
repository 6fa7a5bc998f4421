"""The explorer in a real browser (Debian's Chromium, Playwright) against a real
``results-receiver serve`` on SQLite and PostgreSQL: sign in, a video's timeline, a search hit
followed to its moment, a face's similar faces and its person, the other pages, sign out, and a
read token kept out of the deliveries. Every page passes axe-core with no serious or critical
violation, fits a phone's width, and is saved as a screenshot at desktop and phone widths
(artifacts/screenshots/). Stored markup never runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.browser import (
    DESKTOP,
    PHONE,
    chromium,
    overflows_horizontally,
    screenshot,
    serious_violations,
)
from tests.support.explorer import XSS_JOB_ID, XSS_TEXT, showcase_video, xss_payloads
from tests.support.keys import TEST_KEY_LINE
from tests.support.server import run_cli, serve, wait_until
from tests.support.signing import SECRET, encode, example, signed_headers

pytestmark = pytest.mark.slow

WAIT_SECONDS = 60.0


def _env(database_url: str) -> dict[str, str]:
    return {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
            "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE}


def _deliver(base: str, document: dict[str, Any]) -> None:
    body = encode(document)
    response = httpx.post(base + "/webhooks/analysis", content=body,
                          headers=signed_headers(body), timeout=30)
    assert response.status_code == 200, response.text


def _wait_for(check: Any, what: str) -> Any:
    return wait_until(check, what, WAIT_SECONDS)


def _sign_in(page: Any, base: str, token: str) -> None:
    page.goto(base + "/ui")
    assert "/ui/login" in page.url
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/ui/jobs$"))


def _check(page: Any, folder: str, name: str, size: str) -> None:
    """No serious or critical axe violation, no sideways scrolling on a phone, a screenshot."""
    violations = serious_violations(page)
    assert violations == [], f"{name} ({size}):\n" + "\n".join(violations)
    if size == "phone":
        assert not overflows_horizontally(page), f"{name} is wider than a phone"
    screenshot(page, folder, name, size)


@pytest.fixture
def explorer(database_url: str, tmp_path: Path) -> Any:
    """A served explorer with the examples, two showcase videos and markup-laden payloads,
    an admin and a read token, and the face index caught up."""
    env = _env(database_url)
    with serve(cwd=tmp_path, env=env) as server:
        for name in ("video_finished.json", "image_batch_finished.json", "video_failed.json"):
            _deliver(server.url, example(name))
        _deliver(server.url, showcase_video())
        _deliver(server.url, showcase_video("video_showcase_2"))
        for document in xss_payloads():
            _deliver(server.url, document)
        admin = run_cli("tokens", "create", "--name", "ops", "--scope", "admin", env=env,
                        cwd=tmp_path).stdout.strip()
        reader = run_cli("tokens", "create", "--name", "viewer", "--scope", "read", env=env,
                         cwd=tmp_path).stdout.strip()
        headers = {"Authorization": f"Bearer {admin}"}

        def indexed() -> bool:
            response = httpx.get(server.url + "/v1/jobs/video_showcase/persons/0/0/similar",
                                 headers=headers, timeout=10)
            return response.status_code == 200 and bool(response.json()["data"])

        def clustered() -> list[dict[str, Any]]:
            return list(httpx.get(server.url + "/v1/people?min_appearances=4", headers=headers,
                                  timeout=10).json()["data"])

        _wait_for(indexed, "the face index")
        people = _wait_for(clustered, "the people clustering")
        yield {"url": server.url, "admin": admin, "reader": reader,
               "person": people[0]["id"], "server": server}


def test_explorer_end_to_end_in_chromium(explorer, request):
    base = explorer["url"]
    folder = request.node.callspec.id
    with chromium() as browser:
        desktop = browser.new_context(viewport=DESKTOP)
        page = desktop.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        _sign_in(page, base, explorer["admin"])
        assert page.get_by_role("link", name="video_12345").is_visible()
        _check(page, folder, "jobs", "desktop")

        # A video's timeline: the example has 2 scenes, 2 sections, 1 OCR text, 2 persons.
        page.get_by_role("link", name="video_12345").click()
        page.wait_for_url(re.compile(r".*/ui/jobs/video_12345$"))
        timeline = page.locator("#timeline")
        assert timeline.locator('[data-kind="scene"]').count() == 2
        assert timeline.locator('[data-kind="section"]').count() == 2
        assert timeline.locator('[data-kind="ocr"]').count() == 1
        assert timeline.locator('[data-kind="person"]').count() == 2
        assert page.locator("#persons-title").inner_text().endswith("2")
        timeline.locator('[data-kind="ocr"]').first.focus()  # keyboard focus shows details
        assert "No dogs off leash" in page.locator("#timeline-detail").inner_text()
        _check(page, folder, "video-timeline", "desktop")

        # Search from the header; the hit leads to its moment on the timeline.
        page.get_by_label("Search texts, tags and sections").fill("dogs")
        page.get_by_label("Search texts, tags and sections").press("Enter")
        page.wait_for_url(re.compile(r".*/ui/search\?q=dogs"))
        assert page.locator("mark").first.inner_text() == "dogs"
        _check(page, folder, "search", "desktop")
        page.locator('a.hit-link[href*="video_12345"]').click()
        page.wait_for_url(re.compile(r".*/ui/jobs/video_12345\?t=3-5\.2#timeline"))
        assert page.locator("rect.selection").count() >= 4
        assert page.locator('#timeline [data-kind="ocr"].selected').count() == 1
        assert "Selected 3.0 s" in page.locator(".selection-note").inner_text()
        _check(page, folder, "timeline-moment", "desktop")

        # A face's similar faces, each leading to its moment; then its person.
        page.goto(base + "/ui/jobs/video_showcase")
        _check(page, folder, "showcase-timeline", "desktop")
        page.locator(".faces a[href$='/persons/0/0']").click()
        page.wait_for_url(re.compile(r".*/ui/jobs/video_showcase/persons/0/0$"))
        page.wait_for_function(  # a lazy image does not hold up the load event
            "() => { const img = document.querySelector('img.thumb');"
            " return img !== null && img.complete && img.naturalWidth > 0; }")
        assert page.locator("img.thumb").first.evaluate("img => img.naturalWidth") == 16
        hits = page.locator("ol.similar li")
        assert hits.count() >= 2
        _check(page, folder, "face", "desktop")
        page.locator("ol.similar a.moment[href*='video_showcase_2']").first.click()
        page.wait_for_url(re.compile(r".*/ui/jobs/video_showcase_2\?t=.*#timeline"))
        assert page.locator("#timeline .mark.selected").count() >= 1
        page.goto(f"{base}/ui/people/{explorer['person']}")
        assert page.locator(".faces .face").count() == 4
        _check(page, folder, "person", "desktop")

        other_pages = {
            "image-batch": "/ui/jobs/image_batch_123", "failed-job": "/ui/jobs/video_12346",
            "deliveries": "/ui/jobs/video_12345/deliveries", "audit": "/ui/audit",
            "search-tags": "/ui/search?q=cat",
        }
        for name, path in other_pages.items():
            response = page.goto(base + path)
            assert response is not None
            assert response.status == 200, name
            _check(page, folder, name, "desktop")
        assert "MAX_PROCESSING_TIME_EXCEEDED" in page.goto(
            base + "/ui/jobs/video_12346").text()  # type: ignore[union-attr]
        assert errors == [], errors

        # Every page again at a phone's width.
        phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        small = phone.new_page()
        _sign_in(small, base, explorer["admin"])
        _check(small, folder, "jobs", "phone")
        for name, path in {"video-timeline": "/ui/jobs/video_12345",
                           "timeline-moment": "/ui/jobs/video_12345?t=3-5.2",
                           "showcase-timeline": "/ui/jobs/video_showcase",
                           "search": "/ui/search?q=dogs",
                           "face": "/ui/jobs/video_showcase/persons/0/0",
                           "person": f"/ui/people/{explorer['person']}",
                           **other_pages}.items():
            small.goto(base + path)
            _check(small, folder, name, "phone")
        small.goto(base + "/ui/logout")
        _check(small, folder, "logout", "phone")
        phone.close()

        # Sign out: the session is over.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r".*/ui/login$"))
        _check(page, folder, "login", "desktop")
        page.goto(base + "/ui/jobs")
        assert "/ui/login?next=" in page.url
        desktop.close()

        # A read token cannot open the deliveries page.
        reader = browser.new_context(viewport=DESKTOP)
        page = reader.new_page()
        _sign_in(page, base, explorer["reader"])
        response = page.goto(base + "/ui/jobs/video_12345/deliveries")
        assert response is not None
        assert response.status == 403
        assert "Admin only" in page.locator("h1").inner_text()
        _check(page, folder, "forbidden", "desktop")
        reader.close()


def test_stored_markup_never_runs_in_the_browser(explorer, request):
    base = explorer["url"]
    with chromium() as browser:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _sign_in(page, base, explorer["admin"])
        paths = ["/ui/jobs", "/ui/jobs/" + quote(XSS_JOB_ID, safe=""), "/ui/jobs/xss_batch",
                 "/ui/search?q=script", "/ui/search?q=" + quote('<script>window.__xss="tag"'
                                                                 "</script>")]
        for path in paths:
            response = page.goto(base + path)
            assert response is not None
            assert response.status == 200, path
            page.wait_for_load_state("load")
            assert page.evaluate("typeof window.__xss") == "undefined", path
            assert page.locator("script:not([src])").count() == 0, path
        page.goto(base + "/ui/jobs/" + quote(XSS_JOB_ID, safe=""))
        assert page.locator("h1").inner_text() == XSS_JOB_ID  # shown as text, as stored
        assert XSS_TEXT in page.locator(".ocr-text").first.inner_text()
        screenshot(page, request.node.callspec.id, "markup-shown-as-text", "desktop")
        assert dialogs == []
        context.close()
