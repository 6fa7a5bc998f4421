"""The columns the writers fill, derived from the table metadata in :mod:`service.models`, so
a new column reaches every statement of both databases."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any

from service import models
from service.rows import PreparedResult

JOB_COUNT_COLUMNS: tuple[str, ...] = tuple(e.column for e in models.ENTITY_COUNTS)
JOB_VALUE_COLUMNS: tuple[str, ...] = ("kind", "status", "error", "content_sha256", "n_items",
                                      "updated_at", "data_key_id", "withheld",
                                      *JOB_COUNT_COLUMNS)
"""The columns of ``jobs`` that a (new or replacing) result sets, in :func:`job_values` order."""
JOB_INSERT_COLUMNS: tuple[str, ...] = ("job_id", "received_at", *JOB_VALUE_COLUMNS)


def job_values(prepared: PreparedResult, now: datetime) -> tuple[Any, ...]:
    counts = prepared.counts()
    return (prepared.kind, prepared.status, prepared.error, prepared.content_sha256,
            prepared.n_items, now, prepared.data_key_id, prepared.withheld,
            *(counts[c] for c in JOB_COUNT_COLUMNS))


@functools.cache
def entity_columns(table_name: str) -> tuple[str, ...]:
    """The columns ``prepare`` fills for an entity table, in table order (no job_pk, no id)."""
    table = models.metadata.tables[table_name]
    return tuple(c.name for c in table.columns if c.name not in ("job_pk", "id"))


@functools.cache
def row_getter(table_name: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A function from a prepared row (a dict) to its values in :func:`entity_columns` order."""
    columns = entity_columns(table_name)
    getter = operator.itemgetter(*columns)
    if len(columns) == 1:
        return lambda row: (getter(row),)
    return getter


ENTITY_TABLES_PARENTS_FIRST: tuple[str, ...] = tuple(
    t.name for t in reversed(models.ENTITY_TABLES))
"""The order to insert entity rows in (foreign keys point to earlier tables)."""
