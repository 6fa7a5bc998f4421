"""What travels from the HTTP edge to the writers: the delivery as received, the result as
rows, and the delivery log record. Plain data, no behaviour beyond derived values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from service import models
from service.vocabulary import JobKind, JobStatus, Outcome


@dataclass(frozen=True, slots=True)
class IncomingDelivery:
    """What the HTTP edge knows about one authenticated request.

    ``body`` is released (:meth:`release_body`) once its stored form exists; ``size`` and
    ``body_sha256`` stay."""

    body: bytes
    received_at: datetime
    signature_scheme: str
    request_id: str | None = None
    client_ip: str | None = None
    body_sha256: str = field(init=False, repr=False)
    size: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "body_sha256", hashlib.sha256(self.body).hexdigest())
        object.__setattr__(self, "size", len(self.body))

    def release_body(self) -> None:
        """Let go of the body (only this reference: whoever else holds it keeps it). The
        privacy layer calls it once the body is compressed, so that a large body that nothing
        else holds is freed before its sealed copy is made."""
        object.__setattr__(self, "body", b"")

    @property
    def body_released(self) -> bool:
        return self.size > 0 and not self.body

    def record(self, *, job_id: str | None, outcome: Outcome,
               content_sha256: str | None, error_code: str | None = None,
               error: str | None = None) -> DeliveryRecord:
        """The delivery log row for this delivery."""
        return DeliveryRecord(
            job_id=job_id, received_at=self.received_at, outcome=outcome,
            error_code=error_code, error=error, signature_scheme=self.signature_scheme,
            size=self.size, body_sha256=self.body_sha256, content_sha256=content_sha256,
            request_id=self.request_id, client_ip=self.client_ip)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One row of the delivery log (``deliveries``), field order = :data:`DELIVERY_COLUMNS`."""

    job_id: str | None
    received_at: datetime
    outcome: Outcome
    error_code: str | None
    error: str | None
    signature_scheme: str
    size: int
    body_sha256: str
    content_sha256: str | None
    request_id: str | None
    client_ip: str | None

    def values(self) -> tuple[Any, ...]:
        return (self.job_id, self.received_at, self.outcome, self.error_code, self.error,
                self.signature_scheme, self.size, self.body_sha256, self.content_sha256,
                self.request_id, self.client_ip)


DELIVERY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(DeliveryRecord))
"""The delivery log's columns, in :meth:`DeliveryRecord.values` order."""

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewDataKey:
    """A data key to insert (``data_keys``): only its wrapped form ever leaves the process."""

    id: str
    job_id: str | None
    key_id: str
    wrapped: bytes
    created_at: datetime

    def values(self) -> tuple[Any, ...]:
        return (self.id, self.job_id, self.key_id, self.wrapped, self.created_at)


DATA_KEY_COLUMNS = ("id", "job_id", "key_id", "wrapped", "created_at")
"""The columns of ``data_keys``, in :meth:`NewDataKey.values` order."""


@dataclass(frozen=True, slots=True)
class StoredBody:
    """A raw body as ``delivery_bodies`` keeps it (see :mod:`service.privacy.protect`)."""

    sha256: str  # of the bytes received, whatever is stored
    data: bytes
    codec: str
    data_key_id: str | None
    withheld: str | None
    data_key: NewDataKey | None = None  # to insert with the body (rejected deliveries)

    def values(self) -> tuple[Any, ...]:
        return (self.sha256, self.data, self.codec, self.data_key_id, self.withheld)

    @classmethod
    def plain(cls, sha256: str, body: bytes) -> StoredBody:
        """The bytes received, as they are."""
        return cls(sha256=sha256, data=body, codec="identity", data_key_id=None,
                   withheld=None)


BODY_COLUMNS = ("sha256", "body", "codec", "data_key_id", "withheld")
"""The columns of ``delivery_bodies``, in :meth:`StoredBody.values` order."""


@dataclass(slots=True)
class PreparedResult:
    """A payload as rows, keyed by table name (only tables that get rows)."""

    job_id: str
    status: JobStatus
    kind: JobKind | None
    error: str | None
    content_sha256: str
    n_items: int | None
    rows: dict[str, list[Row]] = field(default_factory=dict)
    # Set by the privacy policy (service.privacy.protect) before the writer sees it.
    data_key: NewDataKey | None = None
    body: StoredBody | None = None
    withheld: str | None = None
    sealed_embeddings: dict[tuple[int, int], bytes] = field(default_factory=dict)
    """The plaintext (packed doubles) of every embedding sealed into its person row, by
    ``(item_index, person_index)``: in memory only, never written, so that the process that
    stores the result can index its faces without reading them back
    (:mod:`service.faces.handoff`)."""

    @property
    def data_key_id(self) -> str | None:
        return None if self.data_key is None else self.data_key.id

    def stored_body(self, delivery: IncomingDelivery) -> StoredBody:
        if self.body is not None:
            return self.body
        if delivery.body_released:
            raise RuntimeError("the delivery's body was released before its stored form was made")
        return StoredBody.plain(delivery.body_sha256, delivery.body)

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def counts(self) -> dict[str, int]:
        """The job's count columns (``jobs.<entity>_count``), by column name."""
        counts = {}
        for entity in models.ENTITY_COUNTS:
            rows = self.rows.get(entity.table, ())
            if entity.table == "frame_activity":
                counts[entity.column] = sum(r["frame_count"] for r in rows)
            else:
                counts[entity.column] = len(rows)
        return counts
