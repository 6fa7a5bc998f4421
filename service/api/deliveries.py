"""The delivery log (admin): every authenticated request, with its exact raw bytes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import pagination, queries
from service.api import params
from service.api.auth import authorized_read, authorized_write
from service.api.reveal import WITHHELD_HEADER
from service.http import ApiError, JSONResponse
from service.pagination import Page
from service.privacy import audit
from service.privacy.keys import Keyring
from service.privacy.redact import summary
from service.privacy.reveal import RevealedBody, Revealer
from service.vocabulary import OUTCOMES

Json = dict[str, Any]



def _delivery_id(request: Request) -> int:
    raw: str = request.path_params["delivery_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not_found", f"no delivery {raw!r}", {"delivery_id": raw})
    return int(raw)


def _not_found(delivery_id: int) -> ApiError:
    return ApiError(404, "not_found", f"no delivery {delivery_id}", {"delivery_id": delivery_id})


def _links(request: Request, delivery_id: int) -> dict[str, str]:
    base = f"{request.scope.get('root_path', '')}/v1/deliveries/{delivery_id}"
    return {"self": base, "raw": f"{base}/raw"}


async def list_deliveries(request: Request) -> Response:
    def read(conn: sa.Connection) -> Page:
        job_id = params.text(request, "job_id", max_length=512)
        outcome = params.choice(request, "outcome", OUTCOMES)
        limit = params.limit(request)
        after = pagination.cursor(request, "deliveries", (int,))
        return queries.list_deliveries(conn, job_id=job_id, outcome=outcome, after=after,
                                       limit=limit)

    page = await authorized_read(request, "admin", read)
    for row in page.rows:
        row["links"] = _links(request, row["id"])
    return pagination.page_response("deliveries", page)


async def get_delivery(request: Request) -> Response:
    def read(conn: sa.Connection) -> tuple[int, Json | None]:
        delivery_id = _delivery_id(request)
        return delivery_id, queries.delivery(conn, delivery_id)

    delivery_id, found = await authorized_read(request, "admin", read)
    if found is None:
        raise _not_found(delivery_id)
    found["links"] = _links(request, delivery_id)
    return JSONResponse(found)


def audited_body(conn: sa.Connection, delivery_id: int, token_name: str,
                 keyring: Keyring | None, *,
                 job_id: str | None = None) -> RevealedBody | None:
    """A delivery's body with its ``raw_read`` audit record written in ``conn``'s (write)
    transaction: the query API's raw route and the explorer's download. None, and no
    record, when there is no such delivery (of job ``job_id``, when given)."""
    found = queries.delivery_body(conn, delivery_id, Revealer(keyring))
    if found is None or (job_id is not None and found[0] != job_id):
        return None
    found_job_id, body = found
    audit.record(conn, audit.AuditEntry(
        "raw_read", token_name, job_id=found_job_id,
        details={"delivery_id": str(delivery_id)}))
    return body


async def get_delivery_raw(request: Request) -> Response:
    """The bytes received (or as a policy or an erasure redacted them, saying so in a
    header), sent only once the read's audit record is committed with it."""
    def read(conn: sa.Connection, token_name: str) -> tuple[int, RevealedBody | None]:
        delivery_id = _delivery_id(request)
        return delivery_id, audited_body(conn, delivery_id, token_name, request.state.keyring)

    delivery_id, body = await authorized_write(request, "admin", read)
    if body is None:
        raise _not_found(delivery_id)
    return raw_response(delivery_id, body)


def raw_response(delivery_id: int, body: RevealedBody) -> Response:
    """A raw body as a download."""
    headers = {
        "Content-Disposition": f'attachment; filename="delivery-{delivery_id}.bin"',
        "X-Content-Type-Options": "nosniff",
    }
    withheld = summary(body.withheld)
    if withheld:
        headers[WITHHELD_HEADER] = withheld
    return Response(body.data, media_type="application/octet-stream", headers=headers)
