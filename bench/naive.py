"""The naive peer: the obvious implementation of the same webhook, on the same database.

One request = verify the HMAC, ``json.loads`` the body, open a SQLModel ``AsyncSession``,
look the job up (minimal idempotency: a job already there is a duplicate), build one ORM
object per row (the service's own table classes from ``service.models``), ``session.add``
each (flushing parents before children: the models declare foreign keys but no
relationships), and one ``commit``. A unique-key error from a concurrent copy is answered
as a duplicate. It uses the same async drivers as the service (aiosqlite, asyncpg) and the same
uvicorn settings; it is what the service's throughput is compared with.

    BENCH_WEBHOOK_SECRET=s BENCH_DATABASE_URL=sqlite:///./naive.db \
        .venv/bin/python -m bench.naive --port 8002 --workers 2

The database must be migrated first (``results-receiver migrate`` or
``service.migrations.upgrade(url)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import (
    DATABASE_ENV,
    run_like_service,
    secret_from_env,
    serve_parser,
    verify_hex_signature,
)
from service.config import async_url
from service.models import (
    Delivery,
    DeliveryBody,
    FrameActivity,
    Job,
    MediaItem,
    OcrText,
    Person,
    PersonScene,
    Scene,
    Section,
    SectionSegment,
    Tag,
)


def create_engine(database_url: str) -> AsyncEngine:
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        return create_async_engine(url, pool_size=10, max_overflow=0,
                                   connect_args={"timeout": 30})
    return create_async_engine(url, pool_size=10, max_overflow=10)


def _len(value: Any) -> int | None:
    return None if value is None else len(value)


def _embedding(values: list[float] | None) -> bytes | None:
    return None if values is None else struct.pack(f"<{len(values)}d", *values)


def _error(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _seg(segment: dict[str, Any] | None, key: str) -> float | None:
    return None if segment is None else segment.get(key)


def _person(job_pk: int, item: int, index: int, scene: int | None,
            person: dict[str, Any]) -> Person:
    return Person(job_pk=job_pk, item_index=item, person_index=index, scene_index=scene,
                  age=person.get("age"), gender=person.get("gender"),
                  face_embedding=_embedding(person.get("face_embedding")),
                  face_thumbnail=person.get("face_thumbnail"),
                  allowlisted=person.get("allowlisted"),
                  relative_prominence=person.get("relative_prominence"))


def _ocr(job_pk: int, item: int, index: int, ocr: dict[str, Any]) -> OcrText:
    segment = ocr.get("time_segment")
    return OcrText(job_pk=job_pk, item_index=item, ocr_index=index,
                   language_code=ocr.get("language_code"), full_text=ocr.get("full_text"),
                   has_time_segment=segment is not None,
                   start_seconds=_seg(segment, "start_seconds"),
                   end_seconds=_seg(segment, "end_seconds"))


def _video_rows(job: Job, result: dict[str, Any]) -> list[SQLModel]:
    assert job.id is not None
    pk = job.id
    scenes = result.get("raw_scenes")
    activity = result.get("frame_activity_diffs")
    sections = result.get("sections")
    ocr = result.get("ocr_results")
    person_scenes = result.get("person_constellation_scenes")
    rows: list[SQLModel] = [MediaItem(
        job_pk=pk, item_index=0, media_type="video", has_result=True,
        n_scenes=_len(scenes), n_activity=_len(activity), n_sections=_len(sections),
        n_ocr=_len(ocr), n_person_scenes=_len(person_scenes))]
    for i, scene in enumerate(scenes or []):
        rows.append(Scene(job_pk=pk, item_index=0, scene_index=i,
                          start_seconds=scene.get("start_seconds"),
                          end_seconds=scene.get("end_seconds")))
    if activity is not None:  # the series is one row of packed little-endian doubles
        rows.append(FrameActivity(job_pk=pk, item_index=0, frame_count=len(activity),
                                  diffs=struct.pack(f"<{len(activity)}d", *activity)))
    for i, section in enumerate(sections or []):
        segments = section.get("time_segments")
        rows.append(Section(job_pk=pk, item_index=0, section_index=i,
                            section_tag=section.get("section_tag"),
                            thumbnail_timestamp=section.get("thumbnail_timestamp"),
                            confidence=section.get("confidence"),
                            is_critical=section.get("is_critical"),
                            relative_activity=section.get("relative_activity"),
                            n_segments=_len(segments)))
        for j, segment in enumerate(segments or []):
            rows.append(SectionSegment(job_pk=pk, item_index=0, section_index=i,
                                       segment_index=j,
                                       start_seconds=segment.get("start_seconds"),
                                       end_seconds=segment.get("end_seconds")))
    rows.extend(_ocr(pk, 0, i, line) for i, line in enumerate(ocr or []))
    person_index = 0
    for i, scene in enumerate(person_scenes or []):
        segment = scene.get("time_segment")
        persons = scene.get("person_ids")
        rows.append(PersonScene(job_pk=pk, item_index=0, scene_index=i,
                                has_time_segment=segment is not None,
                                start_seconds=_seg(segment, "start_seconds"),
                                end_seconds=_seg(segment, "end_seconds"),
                                n_persons=_len(persons)))
        for person in persons or []:
            rows.append(_person(pk, 0, person_index, i, person))
            person_index += 1
    return rows


def _image_rows(job: Job, items: list[dict[str, Any]]) -> list[SQLModel]:
    assert job.id is not None
    pk = job.id
    rows: list[SQLModel] = []
    for index, item in enumerate(items):
        result = item.get("result")
        tags = result.get("tags") if result else None
        persons = result.get("person_ids") if result else None
        ocr = result.get("ocr_results") if result else None
        rows.append(MediaItem(job_pk=pk, item_index=index, media_type="image",
                              external_id=item.get("external_id"), status=item.get("status"),
                              error=_error(item.get("error")), has_result=result is not None,
                              n_tags=_len(tags), n_persons=_len(persons), n_ocr=_len(ocr)))
        for i, tag in enumerate(tags or []):
            rows.append(Tag(job_pk=pk, item_index=index, tag_index=i, tag=tag.get("tag"),
                            probability=tag.get("probability"),
                            is_critical=tag.get("is_critical")))
        rows.extend(_person(pk, index, i, None, p) for i, p in enumerate(persons or []))
        rows.extend(_ocr(pk, index, i, line) for i, line in enumerate(ocr or []))
    return rows


def _counts(rows: list[SQLModel]) -> dict[str, int]:
    names = {Scene: "scene_count", FrameActivity: "activity_count", Section: "section_count",
             SectionSegment: "segment_count", OcrText: "ocr_count",
             PersonScene: "person_scene_count", Person: "person_count", Tag: "tag_count",
             MediaItem: "item_count"}
    counts = dict.fromkeys(names.values(), 0)
    for row in rows:
        counts[names[type(row)]] += 1
    return counts


async def _store(session: AsyncSession, data: dict[str, Any], body: bytes,
                 sha: str, now: datetime) -> str:
    job_id = data["job_id"]
    if await session.get(DeliveryBody, sha) is None:
        session.add(DeliveryBody(sha256=sha, body=body))
    existing = (await session.exec(select(Job).where(Job.job_id == job_id))).first()
    outcome = "duplicate" if existing is not None else "stored"
    if existing is None:
        result, items = data.get("result"), data.get("items")
        kind = "video" if result is not None else "image_batch" if items is not None else None
        job = Job(job_id=job_id, kind=kind, status=data["status"],
                  error=_error(data.get("error")), content_sha256=sha, n_items=_len(items),
                  received_at=now, updated_at=now)
        session.add(job)
        await session.flush()  # the job's id, for its rows
        rows = (_video_rows(job, result) if result is not None
                else _image_rows(job, items) if items is not None else [])
        for name, count in _counts(rows).items():
            setattr(job, name, count)
        # The tables have foreign keys but the models no relationships, so the unit of work
        # does not order the inserts: flush parents first (items, then their rows, then
        # segments, which point at sections).
        levels: list[list[SQLModel]] = [[], [], []]
        for row in rows:
            level = 0 if isinstance(row, MediaItem) else 2 if isinstance(
                row, SectionSegment) else 1
            levels[level].append(row)
        for level_rows in levels:
            for row in level_rows:
                session.add(row)
            await session.flush()
    session.add(Delivery(job_id=job_id, received_at=now, outcome=outcome,
                         signature_scheme="hmac-sha256", size=len(body), body_sha256=sha,
                         content_sha256=sha))
    await session.commit()
    return outcome


def create_app(database_url: str, secret: bytes) -> Starlette:
    state: dict[str, AsyncEngine] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["engine"] = create_engine(database_url)
        try:
            yield
        finally:
            await state["engine"].dispose()

    async def receive(request: Request) -> Response:
        body = await request.body()
        if not verify_hex_signature(secret, body, request.headers.get("x-webhook-signature")):
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            data = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if not isinstance(data, dict) or not isinstance(data.get("job_id"), str):
            return JSONResponse({"error": "invalid payload"}, status_code=422)
        sha = hashlib.sha256(body).hexdigest()
        now = datetime.now(UTC)
        try:
            async with AsyncSession(state["engine"]) as session:
                outcome = await _store(session, data, body, sha, now)
        except IntegrityError:
            # A concurrent copy of this delivery may have committed first; anything else is
            # a real error (a 500 that the load driver counts).
            async with AsyncSession(state["engine"]) as session:
                found = await session.exec(select(Job.id).where(Job.job_id == data["job_id"]))
                if found.first() is None:
                    raise
            outcome = "duplicate"
        return JSONResponse({"job_id": data["job_id"], "outcome": outcome})

    async def healthz(_request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(routes=[
        Route("/webhooks/analysis", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ], lifespan=lifespan)


def app_from_env() -> Starlette:
    database_url = os.environ.get(DATABASE_ENV)
    if not database_url:
        raise SystemExit(f"{DATABASE_ENV} is not set")
    return create_app(database_url, secret_from_env())


def main() -> None:
    args = serve_parser("the naive peer: one ORM object per row").parse_args()
    run_like_service("bench.naive:app_from_env", host=args.host, port=args.port,
                     workers=args.workers)


if __name__ == "__main__":
    main()
