"""Read queries behind the query API (the repository for reads)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service import models, payloads

_jobs = models.jobs
_deliveries = models.deliveries

COUNT_COLUMNS = {
    "items": "item_count",
    "scenes": "scene_count",
    "activity": "activity_count",
    "sections": "section_count",
    "segments": "segment_count",
    "ocr": "ocr_count",
    "person_scenes": "person_scene_count",
    "persons": "person_count",
    "tags": "tag_count",
}


async def job_summary(conn: AsyncConnection, job_id: str) -> dict[str, Any] | None:
    deliveries = (
        sa.select(sa.func.count())
        .select_from(_deliveries)
        .where(_deliveries.c.job_id == _jobs.c.job_id)
        .scalar_subquery()
    )
    row = (await conn.execute(
        sa.select(_jobs, deliveries.label("deliveries")).where(_jobs.c.job_id == job_id)
    )).one_or_none()
    if row is None:
        return None
    return {
        "job_id": row.job_id,
        "kind": row.kind,
        "status": row.status,
        "error": payloads.decode_error(row.error),
        "received_at": row.received_at,
        "updated_at": row.updated_at,
        "deliveries": row.deliveries,
        "counts": {name: getattr(row, column) for name, column in COUNT_COLUMNS.items()},
    }
