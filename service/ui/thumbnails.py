"""Face thumbnails on the explorer's pages: served by an explorer route (the session's cookie,
never a bearer token), and shown only where one is stored and can be opened.

A sealed thumbnail can be opened when its job's data key can be unwrapped with the configured
keys; when it cannot (a key id not configured), the page says so once instead of showing
broken images, and the rest of the page is shown as usual. A stored value that is not an image
(JPEG, PNG, GIF or WebP by its first bytes) is never served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from service import models
from service.api.faces import decode_thumbnail, sniff
from service.api.jobs import job_id_param
from service.api.persons import MAX_INDEX_DIGITS
from service.faces import source
from service.privacy.keys import Keyring
from service.privacy.reveal import KeyUnavailable, Revealer
from service.ui.access import Refused, read_page
from service.ui.render import Renderer

_IMAGES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


@dataclass(frozen=True, slots=True)
class Readability:
    """Whether a job's stored thumbnails can be shown; ``key_id`` names the missing key."""

    readable: bool = True
    key_id: str | None = None


def readability(conn: sa.Connection, pk: int, keyring: Keyring | None,
                persons: Iterable[dict[str, Any]]) -> Readability:
    """Whether the sealed thumbnails among ``persons`` (of job ``pk``) can be opened: one
    unwrap of the job's data key, only when there is a sealed one."""
    if not any(person.get("thumbnail_sealed") for person in persons):
        return Readability()
    data_key_id = conn.execute(sa.select(models.jobs.c.data_key_id)
                               .where(models.jobs.c.id == pk)).scalar_one_or_none()
    try:
        key = Revealer(keyring).key(conn, data_key_id)
    except KeyUnavailable as exc:
        return Readability(False, exc.key_id)
    return Readability(key is not None)


def index_param(request: Request, name: str) -> int | None:
    raw: str = request.path_params[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_INDEX_DIGITS:
        return None
    return int(raw)


async def thumbnail(_ui: Renderer, request: Request) -> Response:
    """``/ui/jobs/{job_id}/persons/{item_index}/{person_index}/thumbnail``: the image, or 404
    when there is none (none stored, erased, not an image, or sealed under a key this service
    does not have)."""
    job_id = job_id_param(request)
    item_index = index_param(request, "item_index")
    person_index = index_param(request, "person_index")
    keyring = request.state.keyring

    def read(conn: sa.Connection, _session: Any) -> str | None:
        if item_index is None or person_index is None:
            return None
        try:
            _exists, found = source.thumbnail(conn, keyring, job_id, item_index, person_index)
        except KeyUnavailable:
            return None
        return found

    session, stored = await read_page(request, read)
    data = None if stored is None else decode_thumbnail(stored)
    if data is None or sniff(data) not in _IMAGES:
        raise Refused(404, "No thumbnail", "No thumbnail can be shown for this face.", session)
    return Response(data, media_type=sniff(data), headers={"Cache-Control": "private, no-store"})
