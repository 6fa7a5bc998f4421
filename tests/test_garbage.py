"""The serve factory sets the cyclic garbage collector for a server (:mod:`service.garbage`);
checked in a fresh interpreter, so that this test process keeps Python's defaults."""

from __future__ import annotations

import json
from pathlib import Path

from service import garbage
from tests.support.server import run_probe

_PROBE = """
import gc, json
before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
from service.app import app_from_env
app_from_env()
print(json.dumps({"before": before,
                  "after": {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}}))
"""


def test_the_serve_factory_raises_the_collector_thresholds_and_freezes_the_startup_objects(
        tmp_path: Path) -> None:
    found = json.loads(run_probe(_PROBE, tmp_path))
    assert found["before"]["threshold"][0] == 700  # Python's default, untouched by imports
    assert found["before"]["frozen"] == 0
    assert found["after"]["threshold"] == [garbage.YOUNG_THRESHOLD, *garbage.OLDER_THRESHOLDS]
    # The modules, classes and functions of the app: far more than a bare interpreter's.
    assert found["after"]["frozen"] > 50_000
