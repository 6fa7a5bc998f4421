"""Read the database directly in tests: row counts of every table, rows, kept bodies."""

from __future__ import annotations

import sqlalchemy as sa

from service import models
from service.config import Settings
from service.db import Database
from service.privacy.reveal import Revealer

ALL_TABLES = ("jobs", "media_items", "scenes", "frame_activity", "sections", "section_segments",
              "ocr_texts", "person_scenes", "persons", "tags", "deliveries", "delivery_bodies")


async def table_counts(settings: Settings, *, job_pk: int | None = None) -> dict[str, int]:
    database = Database.from_settings(settings)
    try:
        async with database.read() as conn:
            counts = {}
            for name in ALL_TABLES:
                table = models.metadata.tables[name]
                query = sa.select(sa.func.count()).select_from(table)
                if job_pk is not None and "job_pk" in table.c:
                    query = query.where(table.c.job_pk == job_pk)
                counts[name] = (await conn.execute(query)).scalar_one()
            return counts
    finally:
        await database.dispose()


async def fetch_all(settings: Settings, statement: sa.Executable) -> list[sa.Row]:
    database = Database.from_settings(settings)
    try:
        async with database.read() as conn:
            return list(await conn.execute(statement))
    finally:
        await database.dispose()


async def stored_bodies(settings: Settings) -> list[bytes]:
    """Every kept raw body as received, opened with the settings' keys, in table order."""
    database = Database.from_settings(settings)
    table = models.delivery_bodies

    def read(conn: sa.Connection) -> list[bytes]:
        revealer = Revealer(settings.encryption_keys)
        opened = [revealer.body(conn, row) for row in conn.execute(sa.select(table))]
        return [body.data for body in opened if body is not None]

    try:
        return await database.run_read(read)
    finally:
        await database.dispose()
