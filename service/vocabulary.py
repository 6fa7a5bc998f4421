"""The service's closed sets of values, each defined once: job statuses, job kinds, delivery
outcomes and audit actions. Payload validation, the writers, the query API's filters and the OpenAPI
description all derive from these."""

from __future__ import annotations

from typing import Literal, get_args

JobStatus = Literal["finished", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)

JobKind = Literal["video", "image_batch"]
JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)

Outcome = Literal["stored", "duplicate", "updated", "ignored", "rejected"]
"""What a delivery did: ``stored`` (first result of its job), ``duplicate`` (same content as
stored), ``updated`` (replaced the stored result), ``ignored`` (a ``failed`` after a
``finished``), ``rejected`` (authenticated but not a usable payload)."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
ACCEPTED_OUTCOMES: tuple[Outcome, ...] = ("stored", "duplicate", "updated", "ignored")
"""The outcomes of a 200 answer."""

AuditAction = Literal["job_erased", "person_erased", "people_erased", "purge", "key_rotation",
                      "policy_changed", "raw_read"]
"""What an audit record records (see :mod:`service.privacy.audit`): an erasure (of a job, a
person observation, a person across jobs), a retention purge batch, a key rotation, a privacy
policy change seen at start-up, or a read of a raw delivery body."""
AUDIT_ACTIONS: tuple[AuditAction, ...] = get_args(AuditAction)

AwaitedStatus = Literal["pending", "overdue", "expired"]
"""The status of an expected job with no result yet (see :mod:`service.reconcile`): ``pending``
(before its expected arrival), ``overdue`` (past it), ``expired`` (past the upstream's
``Max-Processing-Time``)."""
AWAITED_STATUSES: tuple[AwaitedStatus, ...] = get_args(AwaitedStatus)

Reconciled = Literal["webhook", "poll"]
"""How a job's first result arrived: pushed by the upstream, or fetched by the reconciler."""
RECONCILED: tuple[Reconciled, ...] = get_args(Reconciled)

PollOutcome = Literal["stored", "duplicate", "updated", "ignored", "not_ready", "not_found",
                      "bad_answer", "throttled", "server_error", "unreachable", "store_failed"]
"""What one poll of the upstream's status endpoint came to: the ingest outcome of a result it
fetched, or why it fetched none."""
POLL_OUTCOMES: tuple[PollOutcome, ...] = get_args(PollOutcome)
