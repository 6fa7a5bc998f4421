"""The write side of ingest, per database: few round trips, bulk rows, no per-row ORM work.

:func:`service.ingest.store` decides what a delivery does (stored, duplicate, updated,
ignored); a :class:`Writer` carries it out: :mod:`service.writer.postgres` on asyncpg's own
pool, :mod:`service.writer.sqlite` on one connection thread. Both group-commit first
deliveries (:mod:`service.writer.group_commit`), and both build their statements from the
table metadata (:mod:`service.writer.columns`).
"""

from service.writer.base import Created, JobRow, NewJob, Writer
from service.writer.columns import JOB_VALUE_COLUMNS, job_values

__all__ = ["JOB_VALUE_COLUMNS", "Created", "JobRow", "NewJob", "Writer", "job_values"]
