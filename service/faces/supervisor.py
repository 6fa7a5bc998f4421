"""``serve``'s side of the face process (:mod:`service.faces.process`): whether its sockets fit,
and :class:`FaceProcess`, which starts it, starts it again when it fails (after 1 s, doubling up
to 30 s while it keeps failing at start; not after a SIGTERM, which is a deliberate stop:
serve's process group being stopped, or an operator), and stops it (SIGTERM, then SIGKILL after
:data:`STOP_WAIT_SECONDS`) once the workers have stopped.

Kept apart from the face process's own code, so that ``serve``'s process (with one worker, the
worker itself) imports none of the index's libraries (numpy, usearch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import structlog

from service.config import Settings, redact_url
from service.faces.peers import MAX_SOCKET_PATH
from service.faces.peers import folder_for as peers_folder_for
from service.faces.remote import folder_for

log = structlog.get_logger("service.faces")

RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
STARTED_FOR_SECONDS = 60.0
"""A process that ran this long before exiting is restarted after the first delay again."""
STOP_WAIT_SECONDS = 15.0


def sockets_fit(settings: Settings) -> bool:
    """Whether the face process's sockets fit the data folder (Unix socket paths are limited
    to :data:`~service.faces.peers.MAX_SOCKET_PATH` bytes)."""
    name = redact_url(settings.database_url)
    longest = max(len(str(folder_for(settings.data_dir, name))),
                  len(str(peers_folder_for(settings.data_dir, name))))
    return longest + len("/0123abcd.sock") <= MAX_SOCKET_PATH


class FaceProcess:
    """The face process of one ``serve``: started, kept running, stopped."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "service.faces.process",
                                   str(os.getpid())]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._keeper = threading.Thread(target=self._keep, name="face-process", daemon=True)
        self._keeper.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.process = subprocess.Popen(self.command)  # noqa: S603
            self.starts += 1
        log.info("faces.process_spawned", pid=self.process.pid, starts=self.starts)

    def _keep(self) -> None:
        delay = RESTART_FIRST_SECONDS
        while not self._stopping.is_set():
            process = self.process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if code in (0, -signal.SIGTERM):  # asked to stop (serve's own group stopping)
                log.info("faces.process_stopped_by_signal", code=code)
                return
            ran = time.monotonic() - started
            delay = RESTART_FIRST_SECONDS if ran >= STARTED_FOR_SECONDS else delay
            log.error("faces.process_exited", code=code, restart_in_seconds=delay)
            if self._stopping.wait(delay):
                return
            delay = min(RESTART_MAX_SECONDS, delay * 2)
            self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("faces.process_killed", pid=process.pid)
                process.kill()
                process.wait()
        if self._keeper is not None:
            self._keeper.join(STOP_WAIT_SECONDS)
