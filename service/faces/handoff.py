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

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from service.faces.index import FaceBatch, FaceKey
from service.faces.source import FaceGatherer
from service.rows import PreparedResult

__all__ = ["StoredFaces", "batches", "stored_faces"]


@dataclass(frozen=True, slots=True)
class StoredFace:
    item_index: int
    person_index: int
    packed: bytes  # the embedding as little-endian doubles
    allowlisted: bool | None
    has_thumbnail: bool


@dataclass(frozen=True, slots=True)
class StoredFaces:
    """A job as the tailer would read it back right after its first delivery."""

    job_pk: int
    job_id: str
    kind: str | None
    received_at: float  # seconds since the epoch
    faces: list[StoredFace] = field(default_factory=list)
    size: int = field(init=False)  # bytes of the embeddings held

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(len(face.packed) for face in self.faces))


def stored_faces(prepared: PreparedResult, job_pk: int, received_at: datetime) -> StoredFaces:
    """The indexable faces of a result just stored as job ``job_pk``, in the read's order."""
    found = []
    for row in prepared.rows.get("persons", ()):
        item, index = row["item_index"], row["person_index"]
        packed = row["face_embedding"]
        if packed is None:
            packed = prepared.sealed_embeddings.get((item, index))
        if packed is None:
            continue  # dropped by the policy, or none was sent
        found.append(StoredFace(item, index, packed, row["allowlisted"],
                                row["face_thumbnail"] is not None
                                or row["face_thumbnail_sealed"] is not None))
    found.sort(key=lambda face: (face.item_index, face.person_index))
    return StoredFaces(job_pk, prepared.job_id, prepared.kind, received_at.timestamp(), found)


def batches(jobs: Iterable[StoredFaces]) -> list[FaceBatch]:
    """The faces of ``jobs``, one batch per dimension (what the read back would give)."""
    gathered = FaceGatherer()
    for job in jobs:
        for face in job.faces:
            gathered.add(FaceKey(job.job_pk, face.item_index, face.person_index), job.job_id,
                         face.packed, job.kind, job.received_at, face.allowlisted,
                         face.has_thumbnail)
    return gathered.batches()
