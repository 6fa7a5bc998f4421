"""The upstream simulator (``results-receiver dev upstream``) in a subprocess, and a small
client for its API and its control routes (``/_sim/...``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support import log_scan
from tests.support.postgres import free_port
from tests.support.server import BIN, cli_env

TOKEN = "upstream-test-token-0123456789"


class Simulator:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def faults(self, **changes: float) -> dict[str, Any]:
        response = self.http.patch("/_sim/faults", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_sim/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def result(self, job_id: str) -> bytes:
        response = self.http.get(f"/_sim/jobs/{job_id}/result")
        response.raise_for_status()
        return response.content

    def answers(self, job_id: str, *answers: str) -> None:
        self.http.post(f"/_sim/jobs/{job_id}/answers",
                       json={"answers": list(answers)}).raise_for_status()

    def expire(self, job_id: str) -> None:
        self.http.post(f"/_sim/jobs/{job_id}/expire").raise_for_status()

    def unreachable(self, seconds: float) -> None:
        self.http.post("/_sim/unreachable", json={"seconds": seconds}).raise_for_status()

    def submit_images(self, count: int = 1, *, webhook_url: str | None = None,
                      secret: str | None = None, max_processing_time: int | None = None) -> str:
        document: dict[str, Any] = {"images": [
            {"external_id": f"img-{i}", "data_base64": "aGVsbG8="} for i in range(count)]}
        if webhook_url is not None:
            document["webhook"] = {"url": webhook_url, "secret": secret}
        headers = ({} if max_processing_time is None
                   else {"Max-Processing-Time": str(max_processing_time)})
        response = self.http.post("/image", json=document, headers=headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def submit_video(self, body: bytes, *, webhook_url: str | None = None,
                     secret: str | None = None, max_processing_time: int | None = None) -> str:
        params = {} if webhook_url is None else {"webhook.url": webhook_url,
                                                 "webhook.secret": secret or ""}
        headers = {"Content-Type": "video/webm"}
        if max_processing_time is not None:
            headers["Max-Processing-Time"] = str(max_processing_time)
        response = self.http.post("/video", content=body, params=params, headers=headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def close(self) -> None:
        self.http.close()


@contextmanager
def simulator(tmp_path: Path, *args: str, port: int | None = None,
              token: str | None = TOKEN) -> Iterator[Simulator]:
    """``results-receiver dev upstream`` on a free port, with ``args``; stopped at the end."""
    port = port or free_port()
    log = tmp_path / f"upstream-{port}.log"
    env = cli_env({"RECEIVER_UPSTREAM_TOKEN": token} if token else {})
    with log.open("wb") as sink:
        process = subprocess.Popen([str(BIN), "dev", "upstream", "--port", str(port), *args],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    log_scan.register(log)
    sim = Simulator(process, port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dev upstream exited with {process.returncode}:\n"
                                     + log.read_text(errors="replace"))
            try:
                if sim.http.get("/_sim/stats", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("dev upstream did not start:\n"
                                     + log.read_text(errors="replace"))
            time.sleep(0.1)
        yield sim
    finally:
        sim.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
