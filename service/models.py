"""The relational schema: SQLModel tables, created and changed only by Alembic migrations.

Layout. A job has media items: a video is one item, each image of a batch is one item. Every
entity row is keyed by ``(job_pk, item_index, <position>)``, so ingest never needs generated ids
back from the database and a result's order is its primary-key order. Nullable ``n_*`` columns
record whether an optional list was present (NULL: absent or null; 0: an empty list) so that a
payload can be rebuilt exactly. Times and scores are double precision. Dense vectors (a face
embedding, a video's frame activity series) are packed arrays of little-endian doubles.

Deliveries keep every authenticated request; their raw bytes live once per distinct body in
``delivery_bodies`` (a retried delivery adds a log row, not another copy of the body).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = SQLModel.metadata


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing rowid alias.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Ids that users see (API, logs, cursors) are never handed out twice, even after the row with
# the highest id is deleted: SQLite needs AUTOINCREMENT for that (a plain rowid reuses
# max(id) + 1); PostgreSQL's sequences never go back.
NEVER_REUSE_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


def _double() -> Any:
    return Field(default=None, sa_type=sa.Double, nullable=True)


def _count() -> Any:
    return Field(default=None, sa_type=sa.Integer, nullable=True)


def _key() -> Any:
    return Field(primary_key=True, sa_type=sa.Integer, sa_column_kwargs={"autoincrement": False})


def _job_pk() -> Any:
    return Field(primary_key=True, sa_type=BigId, sa_column_kwargs={"autoincrement": False})


def _item_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["job_pk", "item_index"], ["media_items.job_pk", "media_items.item_index"],
        ondelete="CASCADE", name=f"fk_{table}_job_pk_item_index_media_items",
    )


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_received_at_id", "received_at", "id"),
        sa.Index("ix_jobs_status_received_at_id", "status", "received_at", "id"),
        sa.Index("ix_jobs_kind_received_at_id", "kind", "received_at", "id"),
        NEVER_REUSE_IDS,
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    job_id: str = Field(sa_type=sa.String(512), unique=True)
    kind: str | None = Field(default=None, sa_type=sa.String(16))
    status: str = Field(sa_type=sa.String(16))
    error: str | None = Field(default=None, sa_type=sa.Text)
    content_sha256: str = Field(sa_type=sa.String(64))
    n_items: int | None = _count()
    received_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    # Rows per entity, written with the rows; the summary reads them without counting.
    scene_count: int = Field(default=0, sa_type=sa.Integer)
    activity_count: int = Field(default=0, sa_type=sa.Integer)
    section_count: int = Field(default=0, sa_type=sa.Integer)
    segment_count: int = Field(default=0, sa_type=sa.Integer)
    ocr_count: int = Field(default=0, sa_type=sa.Integer)
    person_scene_count: int = Field(default=0, sa_type=sa.Integer)
    person_count: int = Field(default=0, sa_type=sa.Integer)
    tag_count: int = Field(default=0, sa_type=sa.Integer)
    item_count: int = Field(default=0, sa_type=sa.Integer)
    # The data key the current result's sealed values are under (see ``data_keys``).
    data_key_id: str | None = Field(default=None, sa_type=sa.String(32))
    # Biometric fields left out by a ``drop`` policy when the result was stored (comma list).
    withheld: str | None = Field(default=None, sa_type=sa.Text)


class MediaItem(SQLModel, table=True):
    __tablename__ = "media_items"
    __table_args__ = (
        sa.ForeignKeyConstraint(["job_pk"], ["jobs.id"], ondelete="CASCADE",
                                name="fk_media_items_job_pk_jobs"),
        sa.Index("ix_media_items_external_id", "external_id"),
    )

    job_pk: int = _job_pk()
    item_index: int = _key()
    media_type: str = Field(sa_type=sa.String(8))  # "video" | "image"
    external_id: str | None = Field(default=None, sa_type=sa.String(512))
    status: str | None = Field(default=None, sa_type=sa.Text)
    error: str | None = Field(default=None, sa_type=sa.Text)
    has_result: bool = Field(default=True, sa_type=sa.Boolean)
    n_scenes: int | None = _count()
    n_activity: int | None = _count()
    n_sections: int | None = _count()
    n_ocr: int | None = _count()
    n_person_scenes: int | None = _count()
    n_tags: int | None = _count()
    n_persons: int | None = _count()


class Scene(SQLModel, table=True):
    __tablename__ = "scenes"
    __table_args__ = (_item_fk("scenes"),)

    job_pk: int = _job_pk()
    item_index: int = _key()
    scene_index: int = _key()
    start_seconds: float | None = _double()
    end_seconds: float | None = _double()


class FrameActivity(SQLModel, table=True):
    """A video's frame activity diffs: a dense series, one value per frame, stored like a face
    embedding as packed little-endian doubles (one row per video, not one per frame: a long
    video has ~100,000 frames). An empty series has no row."""

    __tablename__ = "frame_activity"
    __table_args__ = (_item_fk("frame_activity"),)

    job_pk: int = _job_pk()
    item_index: int = _key()
    frame_count: int = Field(sa_type=sa.Integer)
    diffs: bytes = Field(sa_type=sa.LargeBinary)


class Section(SQLModel, table=True):
    __tablename__ = "sections"
    __table_args__ = (
        _item_fk("sections"),
        sa.Index("ix_sections_section_tag_job_pk", "section_tag", "job_pk"),
        sa.Index("ix_sections_confidence", "confidence"),
        sa.Index("ix_sections_is_critical_job_pk", "is_critical", "job_pk"),
    )

    job_pk: int = _job_pk()
    item_index: int = _key()
    section_index: int = _key()
    section_tag: str | None = Field(default=None, sa_type=sa.Text)
    thumbnail_timestamp: float | None = _double()
    confidence: float | None = _double()
    is_critical: bool | None = Field(default=None, sa_type=sa.Boolean)
    relative_activity: float | None = _double()
    n_segments: int | None = _count()


class SectionSegment(SQLModel, table=True):
    __tablename__ = "section_segments"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index", "section_index"],
            ["sections.job_pk", "sections.item_index", "sections.section_index"],
            ondelete="CASCADE", name="fk_section_segments_job_pk_item_index_section_index_sections",
        ),
    )

    job_pk: int = _job_pk()
    item_index: int = _key()
    section_index: int = _key()
    segment_index: int = _key()
    start_seconds: float | None = _double()
    end_seconds: float | None = _double()


class OcrText(SQLModel, table=True):
    """OCR lines carry a surrogate ``id``: the full-text indexes refer to rows by it.

    ``search_terms`` holds the extra search terms of a text containing CJK (see
    :mod:`service.cjk`), NULL for any other text; it is indexed with ``full_text`` and never
    part of the payload."""

    __tablename__ = "ocr_texts"
    __table_args__ = (
        _item_fk("ocr_texts"),
        sa.UniqueConstraint("job_pk", "item_index", "ocr_index"),
        sa.Index("ix_ocr_texts_language_code", "language_code"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    job_pk: int = Field(sa_type=BigId)
    item_index: int = Field(sa_type=sa.Integer)
    ocr_index: int = Field(sa_type=sa.Integer)
    language_code: str | None = Field(default=None, sa_type=sa.String(64))
    full_text: str | None = Field(default=None, sa_type=sa.Text)
    has_time_segment: bool = Field(default=False, sa_type=sa.Boolean)
    start_seconds: float | None = _double()
    end_seconds: float | None = _double()
    search_terms: str | None = Field(default=None, sa_type=sa.Text)


class PersonScene(SQLModel, table=True):
    __tablename__ = "person_scenes"
    __table_args__ = (_item_fk("person_scenes"),)

    job_pk: int = _job_pk()
    item_index: int = _key()
    scene_index: int = _key()
    has_time_segment: bool = Field(default=False, sa_type=sa.Boolean)
    start_seconds: float | None = _double()
    end_seconds: float | None = _double()
    n_persons: int | None = _count()


class Person(SQLModel, table=True):
    __tablename__ = "persons"
    __table_args__ = (
        _item_fk("persons"),
        # The erased faces only (few): which faces of some jobs are live is then read from
        # the indexes alone, never from the rows, whose ``erased`` comes after kilobytes of
        # sealed embedding and thumbnail (SQLite walks the overflow pages to reach it).
        sa.Index("ix_persons_erased", "job_pk", "item_index", "person_index",
                 sqlite_where=sa.text("erased = 1"), postgresql_where=sa.text("erased")),
    )

    job_pk: int = _job_pk()
    item_index: int = _key()
    person_index: int = _key()
    # The person scene it appears in (videos); NULL for a person of an image.
    scene_index: int | None = Field(default=None, sa_type=sa.Integer)
    age: float | None = _double()
    gender: str | None = Field(default=None, sa_type=sa.String(64))
    face_embedding: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    face_thumbnail: str | None = Field(default=None, sa_type=sa.Text)
    # Under the ``encrypt`` policy the values above stay NULL and these hold them sealed
    # under the job's data key (``jobs.data_key_id``): packed doubles, the thumbnail's text,
    # and ``[age, gender]`` as JSON.
    face_embedding_sealed: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    face_thumbnail_sealed: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    demographics_sealed: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    # Its biometric fields were erased (one person's erasure or the retention purge).
    erased: bool = Field(default=False, sa_type=sa.Boolean)
    allowlisted: bool | None = Field(default=None, sa_type=sa.Boolean)
    relative_prominence: float | None = _double()


class Tag(SQLModel, table=True):
    __tablename__ = "tags"
    __table_args__ = (
        _item_fk("tags"),
        sa.Index("ix_tags_tag_job_pk", "tag", "job_pk"),
        sa.Index("ix_tags_probability", "probability"),
        sa.Index("ix_tags_is_critical_job_pk", "is_critical", "job_pk"),
    )

    job_pk: int = _job_pk()
    item_index: int = _key()
    tag_index: int = _key()
    tag: str | None = Field(default=None, sa_type=sa.Text)
    probability: float | None = _double()
    is_critical: bool | None = Field(default=None, sa_type=sa.Boolean)


class DeliveryBody(SQLModel, table=True):
    __tablename__ = "delivery_bodies"

    sha256: str = Field(primary_key=True, sa_type=sa.String(64))  # of the bytes received
    body: bytes = Field(sa_type=sa.LargeBinary)
    # How ``body`` is stored: ``identity`` (the bytes received) or ``zstd`` (compressed);
    # sealed under ``data_key_id`` when that is set (compressed first, then sealed).
    codec: str = Field(default="identity", sa_type=sa.String(8),
                       sa_column_kwargs={"server_default": "identity"})
    data_key_id: str | None = Field(default=None, sa_type=sa.String(32))
    # Biometric fields removed from the stored body (a ``drop`` policy, an erasure), as JSON;
    # NULL when the stored body is the exact bytes received.
    withheld: str | None = Field(default=None, sa_type=sa.Text)


class DataKey(SQLModel, table=True):
    """A random AES-256 data key, stored only wrapped by a master key (``key_id``).

    Every sealed value of a job is under one of its data keys; erasing the job deletes them,
    which makes every copy of those ciphertexts (rows, WAL, backups) unreadable."""

    __tablename__ = "data_keys"
    __table_args__ = (
        sa.Index("ix_data_keys_job_id", "job_id"),
        sa.Index("ix_data_keys_key_id", "key_id"),
    )

    id: str = Field(primary_key=True, sa_type=sa.String(32))
    job_id: str | None = Field(default=None, sa_type=sa.String(512))
    key_id: str = Field(sa_type=sa.String(32))
    wrapped: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(sa_type=UtcDateTime)


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        sa.Index("ix_deliveries_job_id_id", "job_id", "id"),
        sa.Index("ix_deliveries_outcome_id", "outcome", "id"),
        sa.Index("ix_deliveries_body_sha256", "body_sha256"),
        NEVER_REUSE_IDS,
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    job_id: str | None = Field(default=None, sa_type=sa.String(512))
    received_at: datetime = Field(sa_type=UtcDateTime)
    outcome: str = Field(sa_type=sa.String(16))
    error_code: str | None = Field(default=None, sa_type=sa.String(32))
    error: str | None = Field(default=None, sa_type=sa.Text)
    signature_scheme: str = Field(sa_type=sa.String(32))
    size: int = Field(sa_type=sa.BigInteger)
    body_sha256: str = Field(
        sa_type=sa.String(64), foreign_key="delivery_bodies.sha256", ondelete="RESTRICT")
    content_sha256: str | None = Field(default=None, sa_type=sa.String(64))
    request_id: str | None = Field(default=None, sa_type=sa.String(64))
    client_ip: str | None = Field(default=None, sa_type=sa.String(64))


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    __table_args__ = (
        sa.Index("uq_api_tokens_active_name", "name", unique=True,
                 sqlite_where=sa.text("revoked_at IS NULL"),
                 postgresql_where=sa.text("revoked_at IS NULL")),
        NEVER_REUSE_IDS,
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    name: str = Field(sa_type=sa.String(100))
    scope: str = Field(sa_type=sa.String(16))
    token_hash: str = Field(sa_type=sa.String(64), unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class UiSession(SQLModel, table=True):
    """A signed-in session of the results explorer (see :mod:`service.ui.sessions`).

    The browser's cookie holds a random secret; only its SHA-256 is stored. A session belongs
    to the query-API token it signed in with: it is looked up joined to that token while the
    token is active, so revoking the token ends its sessions at once. ``last_seen_at`` drives
    the idle expiry."""

    __tablename__ = "ui_sessions"
    __table_args__ = (
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="CASCADE",
                                name="fk_ui_sessions_token_id_api_tokens"),
        sa.Index("ix_ui_sessions_token_id", "token_id"),
        sa.Index("ix_ui_sessions_last_seen_at", "last_seen_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    session_hash: str = Field(sa_type=sa.String(64), unique=True)
    token_id: int = Field(sa_type=BigId)
    created_at: datetime = Field(sa_type=UtcDateTime)
    last_seen_at: datetime = Field(sa_type=UtcDateTime)


class AuditRecord(SQLModel, table=True):
    """One privacy-relevant action (see :mod:`service.privacy.audit`, the only writer). Never a
    biometric value, a secret, a token or a body: ``counts`` is a JSON object of integers and
    ``details`` a JSON object of short non-sensitive strings, both stored as JSON text."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_action_id", "action", "id"),
        NEVER_REUSE_IDS,
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    at: datetime = Field(sa_type=UtcDateTime)
    action: str = Field(sa_type=sa.String(32))
    token_name: str = Field(sa_type=sa.String(100))
    job_id: str | None = Field(default=None, sa_type=sa.String(512))
    counts: str = Field(sa_type=sa.Text)
    details: str = Field(sa_type=sa.Text)


class PrivacyState(SQLModel, table=True):
    """Small named values the service keeps about its privacy settings, e.g. the biometric
    policy it last started with (see :mod:`service.privacy.startup`)."""

    __tablename__ = "privacy_state"

    name: str = Field(primary_key=True, sa_type=sa.String(64))
    value: str = Field(sa_type=sa.Text)


class People(SQLModel, table=True):
    """A person across jobs: a cluster of face observations (see :mod:`service.faces.people`).
    No centre is stored (it is derived biometric data): it is computed in memory from the
    members' embeddings. ``appearances`` is the member count as the clustering last wrote it."""

    __tablename__ = "people"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    created_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)
    appearances: int = Field(default=0, sa_type=sa.Integer)


class PeopleMember(SQLModel, table=True):
    """A face observation (a person row) in a cluster; gone with its person row, or its
    cluster."""

    __tablename__ = "people_members"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index", "person_index"],
            ["persons.job_pk", "persons.item_index", "persons.person_index"],
            ondelete="CASCADE", name="fk_people_members_job_pk_item_index_person_index_persons"),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"], ondelete="CASCADE",
                                name="fk_people_members_person_id_people"),
        sa.Index("ix_people_members_person_id", "person_id"),
    )

    job_pk: int = _job_pk()
    item_index: int = _key()
    person_index: int = _key()
    person_id: int = Field(sa_type=BigId)
    # Cosine of the face to its cluster's centre when it was assigned.
    similarity: float = Field(sa_type=sa.Double)
    assigned_at: datetime = Field(sa_type=UtcDateTime)


class ExpectedJob(SQLModel, table=True):
    """A job submitted upstream whose result we expect (see :mod:`service.reconcile`): when it
    should arrive, until when the upstream may process it, and the reconciler's polls.

    Its status is derived when read, never stored: the job's own once a result is stored
    (``jobs``), else ``expired`` past ``deadline_at``, ``overdue`` past ``expected_at``,
    ``pending`` before. ``reconciled`` (``webhook`` or ``poll``: how the first result arrived)
    and ``stored_at`` are set by the reconciler once the result is there; a row with
    ``reconciled`` NULL is still awaited (or its result arrived since the last check)."""

    __tablename__ = "expected_jobs"
    __table_args__ = (
        sa.Index("ix_expected_jobs_reconciled_next_poll_at", "reconciled", "next_poll_at"),
        sa.Index("ix_expected_jobs_reconciled_submitted_at_id", "reconciled", "submitted_at",
                 "id"),
        NEVER_REUSE_IDS,
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    job_id: str = Field(sa_type=sa.String(512), unique=True)
    kind: str = Field(sa_type=sa.String(16))
    submitted_at: datetime = Field(sa_type=UtcDateTime)
    # Seconds of video, or images of a batch.
    media_units: float = Field(sa_type=sa.Double)
    # Seconds; 0: no limit (the upstream's "infinite").
    max_processing_time: int = Field(default=0, sa_type=sa.Integer)
    # The upstream's latency per unit used for expected_at (NULL: unknown, a default used).
    latency_ms_per_unit: float | None = _double()
    expected_at: datetime = Field(sa_type=UtcDateTime)
    deadline_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    recorded_at: datetime = Field(sa_type=UtcDateTime)
    poll_attempts: int = Field(default=0, sa_type=sa.Integer)
    next_poll_at: datetime = Field(sa_type=UtcDateTime)
    last_polled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_poll_outcome: str | None = Field(default=None, sa_type=sa.String(32))
    reconciled: str | None = Field(default=None, sa_type=sa.String(16))
    stored_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table behind a model, for bulk statements."""
    table = getattr(model, "__table__", None)
    assert isinstance(table, sa.Table), model
    return table


jobs = table_of(Job)
media_items = table_of(MediaItem)
deliveries = table_of(Delivery)
delivery_bodies = table_of(DeliveryBody)
data_keys = table_of(DataKey)
api_tokens = table_of(ApiToken)
ui_sessions = table_of(UiSession)
audit_log = table_of(AuditRecord)
privacy_state = table_of(PrivacyState)
people = table_of(People)
people_members = table_of(PeopleMember)
expected_jobs = table_of(ExpectedJob)

ENTITY_TABLES: tuple[sa.Table, ...] = tuple(
    table_of(model)
    for model in (SectionSegment, Section, Scene, FrameActivity, OcrText, Person, PersonScene,
                  Tag, MediaItem)
)
"""Every table under a job, children before parents: the order to delete in."""

@dataclass(frozen=True)
class EntityCount:
    """A count column of ``jobs``: how many rows (or, for frame activity, values) of an entity
    the job holds, written with the rows so a summary never counts."""

    name: str
    """The entity's name in the API (``/v1/jobs/{id}/<name>``, a summary's ``counts``)."""
    table: str
    column: str


ENTITY_COUNTS: tuple[EntityCount, ...] = (
    EntityCount("items", "media_items", "item_count"),
    EntityCount("scenes", "scenes", "scene_count"),
    EntityCount("activity", "frame_activity", "activity_count"),
    EntityCount("sections", "sections", "section_count"),
    EntityCount("segments", "section_segments", "segment_count"),
    EntityCount("ocr", "ocr_texts", "ocr_count"),
    EntityCount("person_scenes", "person_scenes", "person_scene_count"),
    EntityCount("persons", "persons", "person_count"),
    EntityCount("tags", "tags", "tag_count"),
)

POSITION_KEYS: dict[str, tuple[str, ...]] = {
    "media_items": ("item_index",),
    "scenes": ("item_index", "scene_index"),
    "frame_activity": ("item_index",),
    "sections": ("item_index", "section_index"),
    "section_segments": ("item_index", "section_index", "segment_index"),
    "ocr_texts": ("item_index", "ocr_index"),
    "person_scenes": ("item_index", "scene_index"),
    "persons": ("item_index", "person_index"),
    "tags": ("item_index", "tag_index"),
}
"""Within a job, the columns that give each entity row its place in the payload, in order."""


def keyed_rows(table: sa.Table, columns: tuple[str, ...],
               keys: Iterable[tuple[Any, ...]]) -> sa.ColumnElement[bool]:
    """``table``'s rows whose ``columns`` (the first being ``job_pk``) equal one of ``keys``.
    The jobs' primary keys are listed on their own too: SQLite scans the whole table for a
    row-value ``IN`` alone, and searches the index by ``job_pk`` when it is listed (see
    tests/test_sqlite_plans.py)."""
    wanted = list(keys)
    return sa.and_(table.c[columns[0]].in_(sorted({key[0] for key in wanted})),
                   sa.tuple_(*(table.c[c] for c in columns)).in_(wanted))
