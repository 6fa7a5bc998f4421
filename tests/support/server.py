"""Run the real ``results-receiver`` command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from tests.support import log_scan
from tests.support.keys import TEST_KEY_LINE
from tests.support.postgres import free_port

BIN = Path(sys.executable).parent / "results-receiver"
T = TypeVar("T")


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env["RECEIVER_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN), *args], env=cli_env(env), cwd=cwd, capture_output=True,
                            text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"results-receiver {' '.join(args)} failed "
                             f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


PROBE_SECRET = "a-secret-of-at-least-16-bytes"


def run_probe(code: str, folder: Path, *args: str,
              extra: Mapping[str, str] | None = None) -> str:
    """``code`` run by a fresh interpreter in ``folder``, configured as a serving process (a
    SQLite database there, a webhook secret, the test encryption key, quiet logs); the last line
    it printed. For what only a process of its own shows: imports, collector and allocator
    settings."""
    env = cli_env({"RECEIVER_DATABASE_URL": f"sqlite:///{folder}/results.db",
                   "RECEIVER_WEBHOOK_SECRETS": PROBE_SECRET,
                   "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE, "RECEIVER_LOG_LEVEL": "warning",
                   **(extra or {})})
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"probe failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        log_scan.register(log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()


@contextmanager
def serve(*args: str, env: Mapping[str, str] | None = None, cwd: Path,
          port: int | None = None, ready_path: str = "/healthz",
          timeout: float = 60) -> Iterator[Server]:
    """``results-receiver serve`` on a free port; stopped with SIGTERM at the end."""
    port = port or free_port()
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port), *args], env=cli_env(env), cwd=cwd,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}:\n"
                                     + "\n".join(server.log_lines()))
            try:
                if httpx.get(server.url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not become ready:\n"
                                     + "\n".join(server.log_lines()))
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """What ``check()`` returns once it is truthy (asked every 0.2 s); an AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
