"""People across jobs (clusters of faces, see :mod:`service.faces.people`): the list, one
person with its appearances, and the erasure of every face of a person (admin)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination
from service.api import params
from service.api.auth import authorized_read, authorized_write
from service.faces import people_store
from service.http import ApiError, JSONResponse
from service.pagination import Page
from service.privacy import audit

MAX_ID_DIGITS = 18
MAX_MIN_APPEARANCES = 1_000_000


def _person_id(request: Request) -> int:
    raw: str = request.path_params["person_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_ID_DIGITS:
        raise not_found(raw[:64])
    return int(raw)


def not_found(person_id: int | str) -> ApiError:
    return ApiError(404, "not_found", f"no person {person_id}", {"person_id": person_id})


def _min_appearances(request: Request) -> int:
    raw = params.raw_param(request, "min_appearances")
    if raw is None:
        return 1
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_MIN_APPEARANCES:
        raise params.invalid("min_appearances",
                             f"must be a whole number from 1 to {MAX_MIN_APPEARANCES}", value=raw)
    return int(raw)


async def list_people(request: Request) -> Response:
    """People with at least ``min_appearances`` faces, newest first."""

    def read(conn: sa.Connection) -> Page:
        min_appearances = _min_appearances(request)
        limit = params.limit(request)
        after = pagination.cursor(request, "people", (int,))
        return people_store.list_people(conn, min_appearances=min_appearances, after=after,
                                        limit=limit)

    return pagination.page_response("people", await authorized_read(request, "read", read))


async def person(request: Request) -> Response:
    """GET: one person with its appearances; DELETE (admin): erase it."""
    if request.method == "DELETE":
        return await _erase(request)

    def read(conn: sa.Connection) -> dict[str, Any]:
        person_id = _person_id(request)
        found = people_store.person(conn, person_id)
        if found is None:
            raise not_found(person_id)
        return found

    return JSONResponse(await authorized_read(request, "read", read))


async def _erase(request: Request) -> Response:
    """Erases the biometric fields of every face of the person (rows and raw bodies, job by
    job) and removes the person, with one ``people_erased`` audit record, in one transaction.
    The person is then gone: erasing again is a 404."""

    def erase(conn: sa.Connection, token_name: str) -> None:
        person_id = _person_id(request)
        erased = people_store.erase_people(conn, person_id, request.state.keyring)
        if erased is None:
            raise not_found(person_id)
        audit.record(conn, audit.AuditEntry(
            "people_erased", token_name, counts=erased.counts(),
            details={"person_id": str(person_id)}))

    await authorized_write(request, "admin", erase)
    return Response(status_code=204)
