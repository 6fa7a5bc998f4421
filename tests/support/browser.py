"""Debian's Chromium driven by Playwright (never a downloaded browser), axe-core from the npm
registry (tests/support/axe, installed by scripts/test), and screenshots kept as artifacts.

Without Chromium or axe-core a browser test is skipped on a developer's machine and fails
under CI (``CI=true``): CI must never pass without having run them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RECEIVER_TEST_CHROMIUM", "/usr/bin/chromium"))
AXE = ROOT / "tests" / "support" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def _require(path: Path, what: str) -> None:
    if path.is_file():
        return
    message = f"{what} not found at {path} (scripts/test installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's), closed at the end."""
    _require(CHROMIUM, "Chromium")
    _require(AXE, "axe-core")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, as readable lines."""
    if page.evaluate("typeof window.axe") == "undefined":
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    return [f"{v['impact']}: {v['id']} ({v['help']}) at {v['nodes']}" for v in found
            if v["impact"] in ("serious", "critical")]


def screenshot(page: Any, folder: str, name: str, size: str) -> Path:
    path = SCREENSHOTS / folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{size}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def overflows_horizontally(page: Any) -> bool:
    return bool(page.evaluate(
        "document.documentElement.scrollWidth > window.innerWidth + 1"))
