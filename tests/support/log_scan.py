"""The whole suite's log, scanned for biometric values when the run ends (docs/PRIVACY.md:
"A test scans everything logged while the whole test suite runs").

Everything the service logs in-process goes to one JSON-lines file for the session
(:func:`suite_log_stream`); every ``results-receiver serve`` started by a test writes its own
log file, registered here (:func:`register`). :func:`findings` looks in each line for a
biometric field written out (a JSON member named like one: any body or person dumped into a
log has them) and for the distinctive values of :mod:`tests.support.biometrics`.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from tests.support.biometrics import EMBEDDING, THUMBNAIL

_FIELD = re.compile(r'"(face_embedding|face_thumbnail|age|gender)"\s*:')
_VALUES = (THUMBNAIL, THUMBNAIL[:40], *(repr(value) for value in EMBEDDING))

_suite_log: Path | None = None
_stream: TextIO | None = None
_server_logs: list[Path] = []


def suite_log_stream() -> TextIO:
    """The session's in-process log file, opened once."""
    global _suite_log, _stream
    if _stream is None:
        handle, name = tempfile.mkstemp(prefix="results-receiver-suite-", suffix=".log")
        _suite_log = Path(name)
        _stream = open(handle, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 (session)
    return _stream


def register(path: Path) -> None:
    _server_logs.append(path)


def findings(lines: Iterable[str]) -> list[str]:
    """The lines that hold a biometric field or value (cut short)."""
    found = []
    for line in lines:
        if _FIELD.search(line) or any(value in line for value in _VALUES):
            found.append(line[:300])
    return found


def scan_everything() -> tuple[int, list[str]]:
    """(lines read, offending lines) over the session log and every server log."""
    if _stream is not None:
        _stream.flush()
    paths = ([_suite_log] if _suite_log else []) + _server_logs
    lines: list[str] = []
    for path in paths:
        if path.is_file():
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return len(lines), findings(lines)
