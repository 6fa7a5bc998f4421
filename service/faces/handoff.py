"""The faces of a result this process has just stored, handed to its own face index.

Every process keeps its index current by tailing the delivery log and reading back the faces
of each changed job (:func:`service.faces.source.faces_of_jobs`): a read of every person row
and, under the ``encrypt`` policy, one decryption per embedding. For a job's first delivery
stored by this very process that read only gives back what the process had in hand a moment
before. So once the delivery is committed the webhook hands the job's faces over
(:meth:`service.faces.sync.FaceSync.stored_here`) and the tailer, when its next round meets
that delivery, indexes them from memory instead.

What is handed over is exactly what the read would give: the faces whose embedding the
policy kept (stored in plaintext, or sealed: the plaintext comes from
:attr:`service.rows.PreparedResult.sealed_embeddings`), with the job's kind and time, the
allowlist mark and whether a thumbnail is stored. Whenever the round holds anything else for
the job (another delivery of it, or any erasing audit record), the tailer reads the job back
as before: the database stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from service.faces.source import FaceGatherer
from service.rows import PreparedResult

if TYPE_CHECKING:
    from service.faces.index import FaceBatch

__all__ = ["StoredFace", "StoredFaces", "batches", "stored_faces"]


class StoredFace(NamedTuple):
    """One face of a hand-over, as a row (:meth:`StoredFaces.of` takes these)."""

    item_index: int
    person_index: int
    packed: bytes  # the embedding as little-endian doubles
    allowlisted: bool | None
    has_thumbnail: bool


@dataclass(frozen=True, slots=True)
class StoredFaces:
    """A job as the tailer would read it back right after its first delivery: its faces as
    columns, one entry per face, ordered by ``(item_index, person_index)``. Columns rather
    than an object per face: a typical job has 60 faces, and every one of them used to be an
    object built in the request and taken apart again by the tailer."""

    job_pk: int
    job_id: str
    kind: str | None
    received_at: float  # seconds since the epoch
    item_indexes: list[int] = field(default_factory=list)
    person_indexes: list[int] = field(default_factory=list)
    packed: list[bytes] = field(default_factory=list)  # each embedding as little-endian doubles
    allowlisted: list[bool | None] = field(default_factory=list)
    has_thumbnail: list[bool] = field(default_factory=list)
    size: int = field(init=False)  # bytes of the embeddings held

    def __post_init__(self) -> None:
        count = len(self.item_indexes)
        if not (len(self.person_indexes) == len(self.packed) == len(self.allowlisted)
                == len(self.has_thumbnail) == count):
            raise ValueError("every column of a hand-over has one entry per face")
        object.__setattr__(self, "size", sum(map(len, self.packed)))

    @classmethod
    def of(cls, job_pk: int, job_id: str, kind: str | None, received_at: float,
           faces: Sequence[StoredFace]) -> StoredFaces:
        """The hand-over of these faces (rows), in their order."""
        return cls(job_pk, job_id, kind, received_at, [f.item_index for f in faces],
                   [f.person_index for f in faces], [f.packed for f in faces],
                   [f.allowlisted for f in faces], [f.has_thumbnail for f in faces])


def stored_faces(prepared: PreparedResult, job_pk: int, received_at: datetime) -> StoredFaces:
    """The indexable faces of a result just stored as job ``job_pk``, in the read's order."""
    items: list[int] = []
    persons: list[int] = []
    packed: list[bytes] = []
    allowlisted: list[bool | None] = []
    thumbnails: list[bool] = []
    sealed = prepared.sealed_embeddings
    for row in prepared.rows.get("persons", ()):
        embedding = row["face_embedding"]
        if embedding is None:
            embedding = sealed.get((row["item_index"], row["person_index"]))
            if embedding is None:
                continue  # dropped by the policy, or none was sent
        items.append(row["item_index"])
        persons.append(row["person_index"])
        packed.append(embedding)
        allowlisted.append(row["allowlisted"])
        thumbnails.append(row["face_thumbnail"] is not None
                          or row["face_thumbnail_sealed"] is not None)
    keys = list(zip(items, persons, strict=True))
    if keys != sorted(keys):  # rows are made in this order; put them in it if not
        order = sorted(range(len(keys)), key=keys.__getitem__)
        items = [items[i] for i in order]
        persons = [persons[i] for i in order]
        packed = [packed[i] for i in order]
        allowlisted = [allowlisted[i] for i in order]
        thumbnails = [thumbnails[i] for i in order]
    return StoredFaces(job_pk, prepared.job_id, prepared.kind, received_at.timestamp(), items,
                       persons, packed, allowlisted, thumbnails)


def batches(jobs: Iterable[StoredFaces]) -> list[FaceBatch]:
    """The faces of ``jobs``, one batch per dimension (what the read back would give)."""
    gathered = FaceGatherer()
    for job in jobs:
        gathered.add_job(job.job_pk, job.job_id, job.kind, job.received_at, job.item_indexes,
                         job.person_indexes, job.packed, job.allowlisted, job.has_thumbnail)
    return gathered.batches()
