"""Hand-overs between the processes of one data folder (service.faces.peers): what one process
stores reaches the other processes' indexes without their reading it back, on SQLite and
PostgreSQL; the wire carries a hand-over unchanged; and nothing a peer sends, or fails to
send, can do more than cost a read back."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.config import Settings
from service.db import Database
from service.faces import peers as peers_module
from service.faces import source
from service.faces.handoff import StoredFace, StoredFaces
from service.faces.index import FaceIndex
from service.faces.peers import Peers, decode, encode
from service.faces.sync import FaceSync
from service.vectors import pack_doubles
from tests.conftest import serve_in_process_with_state
from tests.support.signing import deliver
from tests.test_face_handoff import image_job, new_job_ids, rows_of, spy_on_read_back, video_job

pytestmark = pytest.mark.anyio


def a_hand_over() -> StoredFaces:
    return StoredFaces.of(7, "video-x", "video", 1_700_000_000.25, [
        StoredFace(0, 0, pack_doubles([0.1, 0.2, 0.3]), True, True),
        StoredFace(0, 1, pack_doubles([0.3, -0.2, 0.1]), None, False),
        StoredFace(2, 0, pack_doubles([1.0, 0.0, 0.0, 0.5]), False, False)])


def uneven_columns() -> bytes:
    """A message whose columns do not all have one entry per face."""
    body = msgspec.msgpack.encode([5, 7, "video-x", "video", 0.0, [0, 0], [0], [b"", b""],
                                   [None, None], [False, False]])
    return len(body).to_bytes(4, "big") + body


def test_a_hand_over_crosses_the_wire_unchanged() -> None:
    message = encode(41, a_hand_over())
    size = int.from_bytes(message[:4], "big")
    assert size == len(message) - 4
    delivery_id, stored = decode(message[4:])
    assert delivery_id == 41
    assert stored == a_hand_over()
    assert stored.size == a_hand_over().size == 80


@pytest.fixture
async def two_peers(tmp_path: Path) -> AsyncIterator[tuple[Peers, Peers, list[Any], list[Any]]]:
    got_a: list[Any] = []
    got_b: list[Any] = []
    folder = tmp_path / "face-peers"
    a = Peers(folder, lambda i, s: got_a.append((i, s)), rescan_seconds=3600)
    b = Peers(folder, lambda i, s: got_b.append((i, s)), rescan_seconds=3600)
    assert await a.start()
    assert await b.start()  # finds a at once; a finds b when it looks again
    await a.rescan()
    try:
        yield a, b, got_a, got_b
    finally:
        await a.stop()
        await b.stop()


async def wait_for(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_peers_in_one_folder_receive_each_others_hand_overs(
        two_peers: tuple[Peers, Peers, list[Any], list[Any]]) -> None:
    a, b, got_a, got_b = two_peers
    assert (a.connected, b.connected) == (1, 1)
    a.publish(5, a_hand_over())
    b.publish(6, a_hand_over())
    await wait_for(lambda: got_a and got_b)
    assert got_b == [(5, a_hand_over())]
    assert got_a == [(6, a_hand_over())]


async def test_the_peers_folder_and_socket_are_reachable_by_the_service_user_only(
        two_peers: tuple[Peers, Peers, list[Any], list[Any]]) -> None:
    a, _, _, _ = two_peers
    assert stat.S_IMODE(a.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(a.path.stat().st_mode) == 0o600


async def test_a_socket_left_by_a_process_that_is_gone_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "face-peers"
    folder.mkdir(mode=0o700)
    stale = folder / "1.dead.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))  # bound, never listening: connecting is refused
    left.close()
    assert stale.exists()
    peer = Peers(folder, lambda i, s: None, rescan_seconds=3600)
    assert await peer.start()
    try:
        assert not stale.exists()
        assert peer.connected == 0
        peer.publish(1, a_hand_over())  # to nobody: nothing to do, no error
    finally:
        await peer.stop()
    assert not peer.path.exists(), "a stopped process removes its socket"


@pytest.mark.parametrize("sent", [
    (peers_module.MAX_MESSAGE_BYTES + 1).to_bytes(4, "big"),
    (5).to_bytes(4, "big") + b"hello",
    encode(3, a_hand_over())[:4] + b"\x00" * (len(encode(3, a_hand_over())) - 4),
    uneven_columns(),
], ids=["too-large", "not-msgpack", "not-a-hand-over", "columns-of-different-lengths"])
async def test_a_message_that_is_not_a_hand_over_closes_its_connection_undelivered(
        tmp_path: Path, sent: bytes) -> None:
    got: list[Any] = []
    peer = Peers(tmp_path / "face-peers", lambda i, s: got.append(i), rescan_seconds=3600)
    assert await peer.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(peer.path))
        writer.write(sent)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b"", "the peer hung up"
        writer.close()
        reader, writer = await asyncio.open_unix_connection(str(peer.path))
        writer.write(encode(4, a_hand_over()))  # a good message on a new connection
        await writer.drain()
        await wait_for(lambda: got)
        writer.close()
    finally:
        await peer.stop()
    assert got == [4]


async def test_a_peer_that_does_not_keep_up_is_skipped_not_waited_for(
        two_peers: tuple[Peers, Peers, list[Any], list[Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, _, _, got_b = two_peers
    monkeypatch.setattr(peers_module, "MAX_BUFFERED_BYTES", 0)
    a.publish(9, a_hand_over())
    await asyncio.sleep(0.2)
    assert a.sent == 0
    assert got_b == []


async def test_a_job_stored_by_one_process_reaches_the_others_index_without_a_read_back(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    original = source.faces_of_jobs
    read_back = spy_on_read_back(monkeypatch)
    jobs = new_job_ids()
    async with serve_in_process_with_state(settings) as (client, state):
        storing: FaceSync = state["faces"]
        database: Database = state["database"]
        assert storing.peers is not None
        other = FaceSync(database.background, settings.encryption_keys,
                         tmp_path / "other.snapshot", "peers-test", poll_seconds=3600,
                         peers_folder=storing.peers.folder)
        other.start()
        try:
            await asyncio.wait_for(other.became_ready.wait(), 10)
            await asyncio.wait_for(storing.became_ready.wait(), 10)
            assert other.peers is not None
            other_peers = other.peers
            await storing.peers.rescan()
            assert storing.peers.connected == 1
            await deliver(client, video_job(jobs[0]))
            await deliver(client, image_job(jobs[1]))
            await wait_for(lambda: other_peers.received == 2)
            await other.poll()
            pks = {other.index.job_pk_of(job_id) for job_id in jobs}
            assert None not in pks, "both jobs indexed by the other process"
            held = rows_of(other.index, pks)  # type: ignore[arg-type]
            found = await database.run_read(original, settings.encryption_keys, job_ids=jobs)
        finally:
            await other.stop()
    assert not set(read_back) & set(jobs), "neither process read the jobs back"
    from_database = FaceIndex()
    from_database.add_batches(found.batches)
    assert held == rows_of(from_database, pks)  # type: ignore[arg-type]
    assert len(held) == 6


async def test_stopping_peers_with_open_connections_reports_no_error_to_the_event_loop(
        tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        folder = tmp_path / "face-peers"
        a = Peers(folder, lambda i, s: None, rescan_seconds=3600)
        b = Peers(folder, lambda i, s: None, rescan_seconds=3600)
        assert await a.start()
        assert await b.start()
        await a.rescan()
        await wait_for(lambda: a.connected == 1 and b.connected == 1)
        await asyncio.sleep(0.1)  # both serve each other's connection
        await b.stop()
        await a.stop()
        await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
