"""Capture the service's JSON log lines in a test (and still have them scanned at the end of
the run, tests/support/log_scan.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from service.config import LogLevel
from service.logging import configure_logging
from tests.support import log_scan


@contextmanager
def captured_json_logs(level: LogLevel) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("json", level, stream)
    try:
        yield stream
    finally:
        log_scan.suite_log_stream().write(stream.getvalue())
        root.handlers[:] = handlers
        root.setLevel(root_level)
        structlog.reset_defaults()
