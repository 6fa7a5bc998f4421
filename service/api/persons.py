"""One face observation: ``DELETE /v1/jobs/{job_id}/persons/{item_index}/{person_index}`` erases
its biometric fields (see :mod:`service.privacy.erasure`)."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service.api.auth import authorized_write
from service.api.jobs import job_id_param, not_found
from service.http import ApiError
from service.privacy import audit
from service.privacy.erasure import NoSuchJob, NoSuchPerson, erase_persons

MAX_INDEX_DIGITS = 9


def _index(request: Request, name: str, job_id: str) -> int:
    raw: str = request.path_params[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_INDEX_DIGITS:
        raise ApiError(404, "not_found", f"no person {raw!r} in job {job_id!r}",
                       {"job_id": job_id, name: raw})
    return int(raw)


def _no_person(job_id: str, item_index: int, person_index: int) -> ApiError:
    return ApiError(404, "not_found",
                    f"job {job_id!r} has no person {item_index}/{person_index}",
                    {"job_id": job_id, "item_index": item_index, "person_index": person_index})


async def erase_person(request: Request) -> Response:
    """Erases the person's embedding, thumbnail and demographics in its row and in every raw
    body of the job, and records it, in one transaction. Erasing again changes nothing and
    records nothing (204 again)."""

    def erase(conn: sa.Connection, token_name: str) -> None:
        job_id = job_id_param(request)
        item_index = _index(request, "item_index", job_id)
        person_index = _index(request, "person_index", job_id)
        try:
            erased = erase_persons(conn, job_id, {(item_index, person_index)},
                                   request.state.keyring)
        except NoSuchJob:
            raise not_found(job_id) from None
        except NoSuchPerson:
            raise _no_person(job_id, item_index, person_index) from None
        if erased.changed:
            audit.record(conn, audit.AuditEntry(
                "person_erased", token_name, job_id=job_id, counts=erased.counts(),
                details={"person": f"{item_index}/{person_index}"}))

    await authorized_write(request, "admin", erase)
    return Response(status_code=204)
