"""The plain records of face search: a face's key, what a search asks for, a hit.

Nothing here needs numpy: the HTTP workers, which only store faces and forward searches to the
face process (:mod:`service.faces.remote`), use these without loading the index's libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class FaceKey(NamedTuple):
    """One face observation: the job's primary key, its item and person index."""

    job_pk: int
    item_index: int
    person_index: int


@dataclass(frozen=True, slots=True)
class FaceFilter:
    """What the faces searched must be; None: anything."""

    allowlisted: bool | None = None  # False: not marked allowlisted (false or absent)
    kind: str | None = None
    received_after: float | None = None  # exclusive, seconds since the epoch
    received_before: float | None = None  # exclusive

    @property
    def empty(self) -> bool:
        return (self.allowlisted is None and self.kind is None and self.received_after is None
                and self.received_before is None)


@dataclass(frozen=True, slots=True)
class Hit:
    key: FaceKey
    similarity: float


class InvalidVector(ValueError):
    """A query or face vector that has no direction: empty, not finite, or zero."""
