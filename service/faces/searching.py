"""What the query API asks of the face index, wherever the index lives: in this process
(:class:`service.faces.sync.FaceSync`) or in the face process of ``serve``
(:class:`service.faces.remote.RemoteFaces`, over a local socket; :mod:`service.faces.process`).

One call answers a search whole: whether the index is ready, whether it holds faces of the
query's dimension, and the hits. The caller (:mod:`service.api.faces`) turns the first two into
the 503 and the 422 of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from service.db import Database
from service.faces.handoff import StoredFaces
from service.faces.records import FaceFilter, FaceKey, Hit
from service.privacy.keys import Keyring

if TYPE_CHECKING:
    from service.faces.index import FaceIndex, Vectors

AnswerState = Literal["ok", "loading", "no_dimension"]


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    state: AnswerState
    hits: list[Hit] = field(default_factory=list)
    dimensions: list[int] = field(default_factory=list)
    """The dimensions that have faces: given with ``no_dimension``."""


class Faces(Protocol):
    """The face features as the request handlers see them."""

    database: Database
    keyring: Keyring | None

    @property
    def ready(self) -> bool:
        """False while the index is known to be loading (a search would answer so too)."""

    def stored_here(self, delivery_id: int, faces: StoredFaces) -> None:
        """Take the faces of a job whose first delivery was just committed here."""

    async def search(self, query: Vectors, k: int, *, where: FaceFilter,
                     min_similarity: float | None, exclude: FaceKey | None, exact: bool,
                     dimension_required: bool) -> SearchAnswer:
        """The ``k`` faces most similar to ``query`` (a unit vector); ``dimension_required``:
        answer ``no_dimension`` when no indexed face has the query's dimension."""


def answer(index: FaceIndex, ready: bool, query: Vectors, k: int, *, where: FaceFilter,
           min_similarity: float | None, exclude: FaceKey | None, exact: bool,
           dimension_required: bool) -> SearchAnswer:
    """:meth:`Faces.search` against an index in this process."""
    if not ready:
        return SearchAnswer("loading")
    if dimension_required and not index.has_dimension(len(query)):
        return SearchAnswer("no_dimension", dimensions=index.dimensions)
    return SearchAnswer("ok", index.search(query, k, where=where, min_similarity=min_similarity,
                                           exclude=exclude, exact=exact))
