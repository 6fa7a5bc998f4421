"""The face index's snapshot file (service.faces.snapshot): a whole index in its first record,
the changes since appended as further records, read back as the index that wrote them; a torn
or damaged later record costs only what came after it; an append never lands in a file that
replaced its own; and the tailer appends while the index grows and rewrites the whole file
after an erasure."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.faces import snapshot, sync
from service.faces.index import Face, FaceIndex, FaceKey
from service.faces.snapshot import Cursors, SnapshotReplaced, SnapshotUnusable
from service.faces.sync import FaceSync
from tests.support.keys import TEST_KEYRING

DATABASE = "sqlite:///snapshot-test.db"


def faces_of_job(job_pk: int, count: int, dimension: int, rng: np.random.Generator, *,
                 kind: str = "video") -> list[Face]:
    return [Face(FaceKey(job_pk, 0, person), f"job-{job_pk}", rng.normal(size=dimension).tolist(),
                 kind, 1.7e9 + job_pk, [None, True, False][person % 3], person % 2 == 0)
            for person in range(count)]


def contents(index: FaceIndex) -> dict[str, Any]:
    """Everything a search or the tailer can see of the index."""
    held: dict[str, Any] = {}
    for dimension in index.dimensions:
        keys, vectors = index.faces(dimension)
        collection = index.collections[dimension]
        rows = [collection.rows[key] for key in keys]
        held[str(dimension)] = sorted(
            (key, vector.round(6).tolist(), int(collection.kind[row]),
             float(collection.received_at[row]), int(collection.allowlisted[row]),
             bool(collection.has_thumbnail[row]))
            for key, vector, row in zip(keys, vectors, rows, strict=True))
    held["jobs"] = sorted((pk, index._jobs[pk][0]) for pk in index.job_pks())
    return held


def grown_in_steps(path: Path) -> tuple[FaceIndex, list[dict[str, Any]], snapshot.SnapshotFile]:
    """An index written whole, then changed three times with each change appended: its
    contents after each step."""
    rng = np.random.default_rng(3)
    index = FaceIndex()
    for job_pk in range(1, 6):
        index.add(faces_of_job(job_pk, 4, 8, rng))
    steps = [contents(index)]
    file = snapshot.write_exported(path, index.export(), Cursors(5, 0), TEST_KEYRING, DATABASE)
    index.saved(index.checkpoint())
    changes = [
        # new jobs, one of another dimension
        lambda: (index.add(faces_of_job(6, 3, 8, rng)),
                 index.add(faces_of_job(7, 2, 4, rng, kind="image_batch"))),
        # a job re-read with other faces, a face erased, a job deleted
        lambda: (index.remove_job(job_pk=2), index.add(faces_of_job(2, 2, 8, rng)),
                 index.remove_faces([FaceKey(3, 0, 1)]), index.remove_job(job_pk=4)),
        # a face added and removed between two writes, a deleted job's id back
        lambda: (index.add(faces_of_job(8, 2, 8, rng)), index.remove_job(job_pk=8),
                 index.add(faces_of_job(4, 1, 4, rng))),
    ]
    for number, change in enumerate(changes, start=1):
        change()
        checkpoint = index.checkpoint()
        exported = index.export_since()
        assert exported is not None
        file.append(exported, Cursors(5 + number, number))
        index.saved(checkpoint)
        steps.append(contents(index))
    return index, steps, file


def test_a_snapshot_with_appended_changes_reads_back_as_the_index_that_wrote_it(
        tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILE_NAME
    index, steps, file = grown_in_steps(path)
    loaded = snapshot.read(path, TEST_KEYRING, DATABASE)
    assert loaded.complete
    assert loaded.cursors == Cursors(8, 3)
    assert contents(loaded.index) == steps[-1]
    assert loaded.file.records == file.records == 4
    assert loaded.file.size == path.stat().st_size == file.size
    query = index.collections[8].vectors[0].copy()
    assert [(hit.key, round(hit.similarity, 5)) for hit in loaded.index.search(query, 5)] == [
        (hit.key, round(hit.similarity, 5)) for hit in index.search(query, 5)]


def written_whole(path: Path, jobs: int, dimension: int, rng: np.random.Generator
                  ) -> tuple[FaceIndex, snapshot.SnapshotFile]:
    """An index of ``jobs`` jobs of 10 faces, written whole to a new file."""
    index = FaceIndex()
    for job_pk in range(1, jobs + 1):
        index.add(faces_of_job(job_pk, 10, dimension, rng))
    file = snapshot.write_exported(path, index.export(), Cursors(), TEST_KEYRING, DATABASE)
    index.saved(index.checkpoint())
    return index, file


def test_appended_records_weigh_what_changed_not_the_whole_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    index, file = written_whole(tmp_path / "s", 200, 128, rng)
    index.add(faces_of_job(201, 10, 128, rng))
    exported = index.export_since()
    assert exported is not None
    first = file.size
    appended = file.append(exported, Cursors(1, 0))
    assert appended < first / 100  # 10 faces against 2,000
    assert file.faces == len(index) == 2010
    assert not file.worth_rewriting(len(index))


def test_a_file_mostly_of_faces_no_longer_indexed_is_worth_rewriting(tmp_path: Path) -> None:
    index, file = written_whole(tmp_path / "s", 30, 8, np.random.default_rng(6))
    written = [file.worth_rewriting(len(index))]
    for _ in range(5):  # as if every job had been replaced by a result with other faces
        file.append(index.export(), Cursors())
        written.append(file.worth_rewriting(len(index)))
    assert file.faces == 6 * len(index) == 1800
    assert written == [False] * 5 + [True]  # over 2 x 300 + 1,000 faces in the file
    loaded = snapshot.read(tmp_path / "s", TEST_KEYRING, DATABASE)
    assert (loaded.file.faces, loaded.file.records) == (1800, 6)
    assert contents(loaded.index) == contents(index)


def test_a_torn_or_damaged_last_record_leaves_the_index_of_the_records_before_it(
        tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILE_NAME
    _, steps, _ = grown_in_steps(path)
    whole = path.read_bytes()
    for damaged in (whole[:-7], whole[:-30] + bytes([whole[-30] ^ 1]) + whole[-29:]):
        path.write_bytes(damaged)
        loaded = snapshot.read(path, TEST_KEYRING, DATABASE)
        assert not loaded.complete
        assert loaded.cursors == Cursors(7, 2)
        assert contents(loaded.index) == steps[2]
        assert loaded.file.records == 3


def test_records_out_of_their_order_do_not_open(tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILE_NAME
    _, steps, file = grown_in_steps(path)
    data = path.read_bytes()
    records, position = [], data.index(b"\n", len(snapshot.MAGIC)) + 1
    head = data[:position]
    while position < len(data):
        end = position + 8 + int.from_bytes(data[position:position + 8], "big")
        records.append(data[position:end])
        position = end
    assert len(records) == file.records
    path.write_bytes(head + records[0] + records[2] + records[1] + records[3])
    loaded = snapshot.read(path, TEST_KEYRING, DATABASE)
    assert not loaded.complete
    assert contents(loaded.index) == steps[0]
    path.write_bytes(head + records[1] + records[0])
    with pytest.raises(SnapshotUnusable):
        snapshot.read(path, TEST_KEYRING, DATABASE)


def test_an_append_to_a_file_that_was_replaced_since_is_refused(tmp_path: Path) -> None:
    path = tmp_path / snapshot.FILE_NAME
    index, _, file = grown_in_steps(path)
    snapshot.write_exported(path, index.export(), Cursors(9, 3), TEST_KEYRING, DATABASE)
    before = path.read_bytes()
    with pytest.raises(SnapshotReplaced):
        file.append(index.export(), Cursors(10, 3))
    assert path.read_bytes() == before


def test_a_compaction_renumbers_rows_so_the_next_write_is_a_whole_one() -> None:
    rng = np.random.default_rng(9)
    index = FaceIndex()
    for job_pk in range(1, 401):
        index.add(faces_of_job(job_pk, 5, 4, rng))
    index.saved(index.checkpoint())
    assert index.export_since() is not None
    for job_pk in range(1, 301):
        index.remove_job(job_pk=job_pk)  # under half alive: the rows are compacted
    assert index.export_since() is None
    index.saved(index.checkpoint())
    assert index.export_since() is not None


@pytest.fixture
def tailer(tmp_path: Path) -> FaceSync:
    """A face index whose snapshot writes the test drives (no database is read)."""
    return FaceSync(None, TEST_KEYRING, tmp_path / snapshot.FILE_NAME, DATABASE)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_tailer_appends_while_the_index_grows_and_rewrites_the_file_after_an_erasure(
        tailer: FaceSync) -> None:
    rng = np.random.default_rng(11)
    path = tailer.snapshot_path
    tailer.index.add(faces_of_job(1, 20, 16, rng))
    await tailer._save()
    first = path.stat()
    tailer.index.add(faces_of_job(2, 2, 16, rng))
    await tailer._save()
    grown = path.stat()
    assert grown.st_ino == first.st_ino, "appended to, not replaced"
    assert grown.st_size - first.st_size < first.st_size / 4
    assert contents(snapshot.read(path, TEST_KEYRING, DATABASE).index) == contents(tailer.index)

    erased = tailer.index.vector_of(FaceKey(1, 0, 3))
    assert erased is not None
    tailer.index.remove_faces([FaceKey(1, 0, 3)])
    tailer._erased = True
    await tailer._save()
    rewritten = snapshot.read(path, TEST_KEYRING, DATABASE)
    assert path.stat().st_ino != grown.st_ino, "a new file replaced the one that held the face"
    assert rewritten.file.records == 1
    assert FaceKey(1, 0, 3) not in rewritten.index.collections[16].rows
    assert contents(rewritten.index) == contents(tailer.index)


@pytest.mark.anyio
async def test_a_snapshot_file_replaced_under_the_tailer_is_rewritten_whole(
        tailer: FaceSync) -> None:
    rng = np.random.default_rng(13)
    tailer.index.add(faces_of_job(1, 3, 16, rng))
    await tailer._save()
    other = FaceIndex()
    other.add(faces_of_job(9, 1, 16, rng))
    snapshot.write_exported(tailer.snapshot_path, other.export(), Cursors(), TEST_KEYRING,
                            DATABASE)
    tailer.index.add(faces_of_job(2, 3, 16, rng))
    await tailer._save()  # refused: the file is not the one it wrote
    await tailer._save()
    loaded = snapshot.read(tailer.snapshot_path, TEST_KEYRING, DATABASE)
    assert contents(loaded.index) == contents(tailer.index)
    assert loaded.file.records == 1


@pytest.mark.anyio
async def test_writes_of_a_cancelled_save_finish_before_the_next_one_starts(
        tailer: FaceSync) -> None:
    rng = np.random.default_rng(17)
    tailer.index.add(faces_of_job(1, 50, 64, rng))
    await tailer._save()
    tailer.index.add(faces_of_job(2, 50, 64, rng))
    saving = asyncio.create_task(tailer._save())
    await asyncio.sleep(0)
    saving.cancel()
    tailer.index.add(faces_of_job(3, 5, 64, rng))
    await tailer._save()
    await asyncio.sleep(0.2)
    loaded = snapshot.read(tailer.snapshot_path, TEST_KEYRING, DATABASE)
    assert loaded.complete
    assert contents(loaded.index) == contents(tailer.index)


@pytest.mark.anyio
async def test_the_first_faces_are_written_at_the_next_round_and_later_ones_a_period_later(
        tailer: FaceSync, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(19)
    assert not tailer._save_due()
    tailer.index.add(faces_of_job(1, 3, 16, rng))
    tailer._dirty = True
    assert tailer._save_due(), "no file yet: written while the index is small"
    await tailer._save()
    tailer.index.add(faces_of_job(2, 3, 16, rng))
    tailer._dirty = True
    assert not tailer._save_due(), "appended a snapshot period later"
    monkeypatch.setattr(tailer, "_last_snapshot", tailer._last_snapshot - sync.SNAPSHOT_SECONDS)
    assert tailer._save_due()


@pytest.mark.anyio
async def test_a_failing_first_write_is_not_retried_every_round(
        tailer: FaceSync, tmp_path: Path) -> None:
    rng = np.random.default_rng(23)
    tailer.snapshot_path = tmp_path / "not-a-folder" / snapshot.FILE_NAME
    (tmp_path / "not-a-folder").write_text("a file where the folder should be")
    tailer.index.add(faces_of_job(1, 3, 16, rng))
    tailer._dirty = True
    await tailer._save()
    tailer._dirty = True
    assert not tailer._save_due()


@pytest.mark.anyio
async def test_stopping_waits_for_a_save_under_way_to_finish_writing(
        tailer: FaceSync, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(29)
    tailer.index.add(faces_of_job(1, 5, 16, rng))
    real_write = snapshot.write_exported

    def slow_write(*args: Any) -> snapshot.SnapshotFile:
        time.sleep(0.3)  # a large index's write, still on its thread when stop() comes
        return real_write(*args)

    monkeypatch.setattr(snapshot, "write_exported", slow_write)
    saving = asyncio.create_task(tailer._save_to_the_end())
    await asyncio.sleep(0.05)
    saving.cancel()  # as stop() cancels the tailer's task
    await tailer.stop()
    loaded = snapshot.read(tailer.snapshot_path, TEST_KEYRING, DATABASE)
    assert contents(loaded.index) == contents(tailer.index)
