"""Fixtures of the reliability scenarios: a small disk (the PostgreSQL cluster a test may
stop, ``own_postgres``, is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import require_root, run_command
from tests.reliability.results import append
from tests.reliability.scale import SCALE


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[pytest.TestReport]:
    """With a results file, append each scenario's verdict (and why it failed) next to the
    numbers it recorded, for the report."""
    report: pytest.TestReport = yield
    if report.when == "call" or report.failed:
        reason = call.excinfo.exconly()[:1500] if call.excinfo is not None else None
        append({"kind": "verdict", "test": item.nodeid, "phase": report.when,
                "outcome": report.outcome, "failure": reason,
                "duration_s": round(report.duration, 1)})
    return report


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs (4 MiB at fast scale) mounted on a folder of this test, unmounted at the
    end: a disk that fills up quickly."""
    require_root("the disk-full scenario")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = run_command("mount", "-t", "tmpfs", "-o", f"size={SCALE.disk_size},mode=0755",
                          "tmpfs", str(mountpoint))
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {mountpoint} (CAP_SYS_ADMIN needed): "
                    f"{mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if run_command("umount", str(mountpoint)).returncode != 0:
            run_command("umount", "-l", str(mountpoint))

