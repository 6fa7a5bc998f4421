"""What every database's writer offers :mod:`service.ingest`."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from service.rows import DeliveryRecord, IncomingDelivery, PreparedResult, StoredBody

JobRow = tuple[int, str, str]
"""(job_pk, status, content_sha256) of a locked job."""

Created = tuple[int, int] | None
"""(job_pk, delivery_id) of a job just stored, or None when the job already existed."""

NewJob = tuple[PreparedResult, IncomingDelivery]


class Writer(Protocol):
    async def insert_new_job(self, prepared: PreparedResult,
                             delivery: IncomingDelivery) -> Created:
        """Atomically, on its own (not inside :meth:`transaction`): if the job is new, write
        it, the body, its rows and a ``stored`` delivery log row, committed on return, and
        return (job_pk, delivery_id); if the job exists, write nothing and return None."""

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Everything written inside commits together when the block ends, or not at all."""

    async def lock_job(self, job_id: str) -> JobRow | None:
        """The job's row, locked until the transaction ends (other writers of it wait)."""

    async def replace_rows(self, job_pk: int, prepared: PreparedResult,
                           now: datetime) -> None:
        """Delete the job's entity rows and write ``prepared``'s instead, with the data key
        they are sealed under."""

    async def save_body(self, body: StoredBody) -> None:
        """Keep a raw body (once per distinct content) and, when it is new, the data key it
        is sealed under (if not there yet)."""

    async def log_delivery(self, record: DeliveryRecord) -> int:
        """Append to the delivery log; returns the delivery's id (never reused)."""

    async def delete_job(self, job_id: str) -> dict[str, int] | None:
        """Remove the job, its rows, its deliveries, bodies no other delivery uses and its
        expectation (``expected_jobs``); returns what was removed (``{"jobs": 1, "deliveries":
        n, "rows": n}``, rows counting every entity row, plus ``"expected": 1`` when an
        expectation went too), or None when there was neither job nor expectation."""

    async def insert_row(self, table: sa.Table, values: Mapping[str, Any]) -> int:
        """Insert one row into ``table`` (whose key is an ``id`` the database assigns);
        returns its id."""


def deletion_counts(removed: dict[str, int] | None, expected: int) -> dict[str, int] | None:
    """What :meth:`Writer.delete_job` returns: the job's counts (None: no job) with the
    expectation removed, if any."""
    if not expected:
        return removed
    counts = removed or {"jobs": 0, "deliveries": 0, "rows": 0}
    return {**counts, "expected": expected}
