"""The face page (one person observation: its thumbnail and the most similar faces across
jobs, through this process's face index) and the person page (every appearance of a person
across jobs, once the people clustering has grouped faces)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import queries
from service.api.faces import SearchRequest, face_sync, find_similar
from service.api.jobs import job_id_param
from service.api.people import MAX_ID_DIGITS
from service.faces import people_store
from service.faces.records import FaceFilter
from service.http import ApiError
from service.ui import thumbnails
from service.ui.access import Refused, read_page
from service.ui.render import Renderer
from service.ui.sessions import Session
from service.ui.timeline import range_param

Json = dict[str, Any]

SIMILAR = 12


def moment(found: Json) -> Json:
    """Where a face shows in its job's page: the video time (``t``), or the image's item."""
    found["t"] = range_param(found.get("start_seconds"), found.get("end_seconds"))
    return found


async def face(ui: Renderer, request: Request) -> Response:
    job_id = job_id_param(request)
    item_index = thumbnails.index_param(request, "item_index")
    person_index = thumbnails.index_param(request, "person_index")
    keyring = request.state.keyring

    def read(conn: sa.Connection, session: Session) -> tuple[Json, Json, Any, int | None]:
        missing = Refused(404, "No such face", f"Job {job_id!r} has no person "
                          f"{request.path_params['item_index']}/"
                          f"{request.path_params['person_index']}.", session)
        if item_index is None or person_index is None:
            raise missing
        summary = queries.job_summary(conn, job_id)
        pk = None if summary is None else queries.job_pk(conn, job_id)
        if summary is None or pk is None:
            raise missing
        rows = queries.job_person_appearances(conn, pk, [item_index, person_index - 1],
                                              1).rows
        if not rows or (rows[0]["item_index"], rows[0]["index"]) != (item_index,
                                                                      person_index):
            raise missing
        return (summary, moment(rows[0]), thumbnails.readability(conn, pk, keyring, rows),
                queries.person_cluster(conn, pk, item_index, person_index))

    session, (summary, person, readability, cluster) = await read_page(request, read)
    similar: list[Json] = []
    unavailable = None
    if person["erased"]:
        unavailable = "This face was erased: there is nothing to compare."
    else:
        key = (job_id, person["item_index"], person["index"])
        search = SearchRequest(None, key, SIMILAR, None, FaceFilter(), False)
        try:
            similar = [moment(hit) for hit in await find_similar(face_sync(request), search)]
        except ApiError as exc:
            unavailable = exc.message[:1].upper() + exc.message[1:] + "."
    return ui.page(request, "face.html", {
        "title": f"Face {item_index}/{person_index} of {job_id}", "job": summary,
        "person": person, "readability": readability, "cluster": cluster,
        "similar": similar, "unavailable": unavailable,
    }, session=session)


async def person(ui: Renderer, request: Request) -> Response:
    raw: str = request.path_params["person_id"]

    def read(conn: sa.Connection, session: Session) -> tuple[Json, set[tuple[str, int, int]]]:
        found = None
        if raw.isascii() and raw.isdigit() and len(raw) <= MAX_ID_DIGITS:
            found = people_store.person(conn, int(raw))
        if found is None:
            raise Refused(404, "No such person", f"There is no person {raw[:40]!r}.",
                          session)
        shown = queries.stored_thumbnails(
            conn, [a["job_id"] for a in found["appearances"]])
        return found, shown

    session, (found, shown) = await read_page(request, read)
    for appearance in found["appearances"]:
        moment(appearance)
        appearance["has_thumbnail"] = (appearance["job_id"], appearance["item_index"],
                                       appearance["person_index"]) in shown
    return ui.page(request, "person.html", {
        "title": f"Person {found['id']}", "person": found}, session=session)
