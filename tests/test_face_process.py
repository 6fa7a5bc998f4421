"""The face process of ``serve`` (service.faces.process): the index and the people clustering
in one process beside the HTTP workers, which hand it their jobs and ask it their searches
over local sockets (service.faces.remote)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.faces.index import FaceBatch, FaceFilter, FaceIndex, FaceKey, normalized
from service.faces.peers import MAX_SOCKET_PATH
from service.faces.process import SearchServer
from service.faces.remote import RemoteFaces
from service.faces.searching import SearchAnswer
from service.faces.supervisor import sockets_fit
from service.faces.sync import FaceSync
from tests.support.keys import TEST_KEY_LINE
from tests.support.server import cli_env, run_cli, serve, wait_until
from tests.support.signing import SECRET, encode, signed_headers

DIMENSION = 8


def an_index(faces: int = 300) -> FaceIndex:
    rng = np.random.default_rng(5)
    keys = [FaceKey(1 + i // 10, i % 10, 0) for i in range(faces)]
    index = FaceIndex()
    index.add_batches([FaceBatch(
        keys, [f"job-{key.job_pk}" for key in keys], rng.standard_normal((faces, DIMENSION)),
        ["video" if i % 3 else "image_batch" for i in range(faces)],
        [1_700_000_000.0 + i for i in range(faces)],
        [[True, False, None][i % 3] for i in range(faces)], [i % 2 == 0 for i in range(faces)])])
    return index


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[tuple[RemoteFaces, FaceSync, SearchServer]]:
    """A face process's search socket over ``here``: an index in this process, ready (its
    tailer is never started)."""
    here = FaceSync(None, None, tmp_path / "unused.snapshot", "test")  # type: ignore[arg-type]
    here.index, here.ready = an_index(), True
    server = SearchServer(tmp_path / "face-search" / "db", here)
    assert await server.start()
    faces = RemoteFaces(None, None, server.folder, tmp_path / "face-peers" / "db")  # type: ignore[arg-type]
    try:
        yield faces, here, server
    finally:
        await server.stop()


SEARCHES: list[dict[str, Any]] = [
    {"k": 10, "where": FaceFilter(), "min_similarity": None, "exclude": None, "exact": False},
    {"k": 5, "where": FaceFilter(kind="image_batch"), "min_similarity": None,
     "exclude": FaceKey(1, 0, 0), "exact": True},
    {"k": 20, "where": FaceFilter(allowlisted=False, received_after=1_700_000_050.0,
                                  received_before=1_700_000_250.0),
     "min_similarity": 0.1, "exclude": None, "exact": False},
    {"k": 100, "where": FaceFilter(allowlisted=True), "min_similarity": 0.95, "exclude": None,
     "exact": False},
]


@pytest.mark.anyio
@pytest.mark.parametrize("search", SEARCHES, ids=["plain", "kind-exclude-exact",
                                                   "filters-min", "min-high"])
async def test_a_search_through_the_face_process_gives_exactly_what_its_index_gives(
        remote: tuple[RemoteFaces, FaceSync, SearchServer], search: dict[str, Any]) -> None:
    faces, here, server = remote
    rng = random.Random(7)
    for _ in range(5):
        query = normalized([rng.gauss(0, 1) for _ in range(DIMENSION)])
        got = await faces.search(query, dimension_required=True, **search)
        expected = await here.search(query, dimension_required=True, **search)
        assert got.state == expected.state == "ok"
        assert got.hits == expected.hits
    assert server.answered == 5


@pytest.mark.anyio
async def test_an_unknown_dimension_and_a_loading_index_cross_the_socket_as_such(
        remote: tuple[RemoteFaces, FaceSync, SearchServer]) -> None:
    faces, here, _ = remote
    plain: dict[str, Any] = {"where": FaceFilter(), "min_similarity": None, "exclude": None,
                             "exact": False}
    other = normalized([1.0, 0.0, 0.0])
    assert await faces.search(other, 3, dimension_required=True, **plain) == SearchAnswer(
        "no_dimension", [], [DIMENSION])
    assert (await faces.search(other, 3, dimension_required=False, **plain)).hits == []
    here.ready = False
    query = normalized([1.0] * DIMENSION)
    assert (await faces.search(query, 3, dimension_required=True, **plain)).state == "loading"


@pytest.mark.anyio
async def test_without_a_face_process_answering_a_search_answers_loading(
        tmp_path: Path) -> None:
    folder = tmp_path / "face-search" / "db"
    folder.mkdir(parents=True)
    faces = RemoteFaces(None, None, folder, tmp_path / "peers")  # type: ignore[arg-type]
    plain: dict[str, Any] = {"where": FaceFilter(), "min_similarity": None, "exclude": None,
                             "exact": False, "dimension_required": True}
    query = normalized([1.0, 0.0])
    assert (await faces.search(query, 3, **plain)).state == "loading"
    (folder / "dead.sock").touch()  # left by a process that was killed
    assert (await faces.search(query, 3, **plain)).state == "loading"


@pytest.mark.anyio
@pytest.mark.parametrize("sent", [b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff",
                                  b"\x00\x00\x00\x01\x90"],
                         ids=["not-msgpack", "too-large", "not-a-search"])
async def test_a_call_that_is_not_a_search_is_refused_and_the_process_keeps_answering(
        remote: tuple[RemoteFaces, FaceSync, SearchServer], sent: bytes) -> None:
    faces, _, server = remote
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(sent)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b"", "the call's connection is closed"
    writer.close()
    query = normalized([1.0] * DIMENSION)
    found = await faces.search(query, 3, where=FaceFilter(), min_similarity=None, exclude=None,
                               exact=False, dimension_required=True)
    assert found.state == "ok"
    assert len(found.hits) == 3


def test_serve_keeps_the_index_in_its_workers_when_the_sockets_would_not_fit_the_path(
        tmp_path: Path) -> None:
    def settings_in(folder: Path) -> Settings:
        return Settings.from_env({"RECEIVER_DATABASE_URL": f"sqlite:///{folder}/results.db"})

    assert sockets_fit(settings_in(tmp_path))
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH - len(str(tmp_path))))
    assert not sockets_fit(settings_in(deep))


# --- the real serve --------------------------------------------------------------------------

def a_job(job_id: str, embeddings: list[list[float]]) -> dict[str, Any]:
    return {"job_id": job_id, "status": "finished", "items": [
        {"external_id": f"img-{i}", "result": {"person_ids": [{"face_embedding": vector}]}}
        for i, vector in enumerate(embeddings)]}


def face_processes(parent: int) -> list[int]:
    """The pids of the face processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\x00")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"service.faces.process" in command:
            found.append(int(entry.name))
    return found


def similar(server_url: str, headers: dict[str, str], job_id: str) -> Any:
    response = httpx.get(f"{server_url}/v1/jobs/{job_id}/persons/0/0/similar?k=5",
                         headers=headers, timeout=10)
    return response.json()["data"] if response.status_code == 200 else None


def deliver_over_http(url: str, document: dict[str, Any]) -> None:
    body = encode(document)
    response = httpx.post(url + "/webhooks/analysis", content=body,
                          headers=signed_headers(body), timeout=30)
    assert response.status_code == 200, response.text


def in_job_order(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(hits, key=lambda hit: str(hit["job_id"]))


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_serve_searches_and_clusters_people_in_its_face_process_and_restarts_it(
        tmp_path: Path, request: pytest.FixtureRequest, database: str) -> None:
    env = {"RECEIVER_WEBHOOK_SECRETS": SECRET}
    workers = "1"
    if database == "postgresql":
        env["RECEIVER_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        workers = "2"
    face = [0.6, 0.8, 0.0, 0.0]
    with serve("--workers", workers, env=env, cwd=tmp_path) as server:
        token = run_cli("tokens", "create", "--name", "faces", "--scope", "read", cwd=tmp_path,
                        env=env).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        (pid,) = wait_until(lambda: face_processes(server.process.pid), "the face process")
        jobs = [f"image_batch_fp_{database}_{i}" for i in range(6)]
        for i, job_id in enumerate(jobs):  # the same face in every job, a stranger beside it
            deliver_over_http(server.url, a_job(job_id, [face, [0.0, 0.0, (-1) ** i, 0.1]]))
        # The five other jobs' copies of the face, once every job is indexed (until then the
        # strangers, at a similarity near 0, fill the five hits).
        found = wait_until(lambda: (hits := similar(server.url, headers, jobs[0]))
                           and all(hit["similarity"] > 0.999 for hit in hits)
                           and len(hits) == 5 and hits, "the five other jobs' faces")
        assert {hit["job_id"] for hit in found} == set(jobs[1:])
        people = wait_until(lambda: httpx.get(f"{server.url}/v1/people?min_appearances=6",
                                              headers=headers).json()["data"], "the person")
        assert len(people) == 1

        os.kill(pid, signal.SIGKILL)  # serve starts another one
        (again,) = wait_until(lambda: [p for p in face_processes(server.process.pid)
                                       if p != pid], "a new face process")
        again_found = wait_until(lambda: similar(server.url, headers, jobs[0]), "searches again")
        assert in_job_order(again_found) == in_job_order(found)  # equal similarities: ties
        logs = "\n".join(server.log_lines())
        assert "faces.process_exited" in logs
        assert again != pid
    wait_until(lambda: not Path(f"/proc/{again}").exists(), "the face process to stop", 20)


def test_a_face_process_whose_serve_is_already_gone_stops_at_once(tmp_path: Path) -> None:
    """``serve`` passes its pid: a face process that starts after its ``serve`` was killed (a
    kill during start-up) stops instead of running on with no one to stop it."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    env = cli_env({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path}/results.db",
                   "RECEIVER_WEBHOOK_SECRETS": SECRET, "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE})
    done = subprocess.run([sys.executable, "-m", "service.faces.process", str(gone.pid)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "faces.process_parent_gone" in done.stdout + done.stderr
    assert not (tmp_path / "face-search").exists()
