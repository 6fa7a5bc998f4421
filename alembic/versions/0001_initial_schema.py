"""Initial schema: jobs, media items and their entities, deliveries, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 08:17:47.455017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(
        "uq_api_tokens_active_name",
        "api_tokens",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "delivery_bodies",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_delivery_bodies")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scene_count", sa.Integer(), nullable=False),
        sa.Column("activity_count", sa.Integer(), nullable=False),
        sa.Column("section_count", sa.Integer(), nullable=False),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("ocr_count", sa.Integer(), nullable=False),
        sa.Column("person_scene_count", sa.Integer(), nullable=False),
        sa.Column("person_count", sa.Integer(), nullable=False),
        sa.Column("tag_count", sa.Integer(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_jobs_job_id")),
    )
    op.create_index(
        "ix_jobs_kind_received_at_id", "jobs", ["kind", "received_at", "id"], unique=False
    )
    op.create_index("ix_jobs_received_at_id", "jobs", ["received_at", "id"], unique=False)
    op.create_index(
        "ix_jobs_status_received_at_id", "jobs", ["status", "received_at", "id"], unique=False
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=512), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("signature_scheme", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["body_sha256"],
            ["delivery_bodies.sha256"],
            name=op.f("fk_deliveries_body_sha256_delivery_bodies"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_body_sha256", "deliveries", ["body_sha256"], unique=False)
    op.create_index("ix_deliveries_job_id_id", "deliveries", ["job_id", "id"], unique=False)
    op.create_index("ix_deliveries_outcome_id", "deliveries", ["outcome", "id"], unique=False)
    op.create_table(
        "media_items",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("media_type", sa.String(length=8), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("has_result", sa.Boolean(), nullable=False),
        sa.Column("n_scenes", sa.Integer(), nullable=True),
        sa.Column("n_activity", sa.Integer(), nullable=True),
        sa.Column("n_sections", sa.Integer(), nullable=True),
        sa.Column("n_ocr", sa.Integer(), nullable=True),
        sa.Column("n_person_scenes", sa.Integer(), nullable=True),
        sa.Column("n_tags", sa.Integer(), nullable=True),
        sa.Column("n_persons", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk"], ["jobs.id"], name="fk_media_items_job_pk_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_pk", "item_index", name=op.f("pk_media_items")),
    )
    op.create_index("ix_media_items_external_id", "media_items", ["external_id"], unique=False)
    op.create_table(
        "frame_activity",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=False),
        sa.Column("diffs", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_frame_activity_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_pk", "item_index", name=op.f("pk_frame_activity")),
    )
    op.create_table(
        "ocr_texts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("ocr_index", sa.Integer(), nullable=False),
        sa.Column("language_code", sa.String(length=64), nullable=True),
        sa.Column("full_text", sa.Text(), nullable=True),
        sa.Column("has_time_segment", sa.Boolean(), nullable=False),
        sa.Column("start_seconds", sa.Double(), nullable=True),
        sa.Column("end_seconds", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_ocr_texts_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ocr_texts")),
        sa.UniqueConstraint(
            "job_pk",
            "item_index",
            "ocr_index",
            name=op.f("uq_ocr_texts_job_pk_item_index_ocr_index"),
        ),
    )
    op.create_index("ix_ocr_texts_language_code", "ocr_texts", ["language_code"], unique=False)
    op.create_table(
        "person_scenes",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("scene_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("has_time_segment", sa.Boolean(), nullable=False),
        sa.Column("start_seconds", sa.Double(), nullable=True),
        sa.Column("end_seconds", sa.Double(), nullable=True),
        sa.Column("n_persons", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_person_scenes_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_pk", "item_index", "scene_index", name=op.f("pk_person_scenes")
        ),
    )
    op.create_table(
        "persons",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("person_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("scene_index", sa.Integer(), nullable=True),
        sa.Column("age", sa.Double(), nullable=True),
        sa.Column("gender", sa.String(length=64), nullable=True),
        sa.Column("face_embedding", sa.LargeBinary(), nullable=True),
        sa.Column("face_thumbnail", sa.Text(), nullable=True),
        sa.Column("allowlisted", sa.Boolean(), nullable=True),
        sa.Column("relative_prominence", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_persons_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_pk", "item_index", "person_index", name=op.f("pk_persons")),
    )
    op.create_table(
        "scenes",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("scene_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("start_seconds", sa.Double(), nullable=True),
        sa.Column("end_seconds", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_scenes_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_pk", "item_index", "scene_index", name=op.f("pk_scenes")),
    )
    op.create_table(
        "sections",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("section_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("section_tag", sa.Text(), nullable=True),
        sa.Column("thumbnail_timestamp", sa.Double(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("is_critical", sa.Boolean(), nullable=True),
        sa.Column("relative_activity", sa.Double(), nullable=True),
        sa.Column("n_segments", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_sections_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_pk", "item_index", "section_index", name=op.f("pk_sections")),
    )
    op.create_index("ix_sections_confidence", "sections", ["confidence"], unique=False)
    op.create_index(
        "ix_sections_is_critical_job_pk", "sections", ["is_critical", "job_pk"], unique=False
    )
    op.create_index(
        "ix_sections_section_tag_job_pk", "sections", ["section_tag", "job_pk"], unique=False
    )
    op.create_table(
        "tags",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tag_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tag", sa.Text(), nullable=True),
        sa.Column("probability", sa.Double(), nullable=True),
        sa.Column("is_critical", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index"],
            ["media_items.job_pk", "media_items.item_index"],
            name="fk_tags_job_pk_item_index_media_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_pk", "item_index", "tag_index", name=op.f("pk_tags")),
    )
    op.create_index("ix_tags_is_critical_job_pk", "tags", ["is_critical", "job_pk"], unique=False)
    op.create_index("ix_tags_probability", "tags", ["probability"], unique=False)
    op.create_index("ix_tags_tag_job_pk", "tags", ["tag", "job_pk"], unique=False)
    op.create_table(
        "section_segments",
        sa.Column(
            "job_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("section_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("segment_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("start_seconds", sa.Double(), nullable=True),
        sa.Column("end_seconds", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_pk", "item_index", "section_index"],
            ["sections.job_pk", "sections.item_index", "sections.section_index"],
            name="fk_section_segments_job_pk_item_index_section_index_sections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_pk",
            "item_index",
            "section_index",
            "segment_index",
            name=op.f("pk_section_segments"),
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Raw bodies are JSON: lz4 compresses them several times faster than the default pglz.
        op.execute("ALTER TABLE delivery_bodies ALTER COLUMN body SET COMPRESSION lz4")


def downgrade() -> None:
    op.drop_table("section_segments")
    op.drop_index("ix_tags_tag_job_pk", table_name="tags")
    op.drop_index("ix_tags_probability", table_name="tags")
    op.drop_index("ix_tags_is_critical_job_pk", table_name="tags")
    op.drop_table("tags")
    op.drop_index("ix_sections_section_tag_job_pk", table_name="sections")
    op.drop_index("ix_sections_is_critical_job_pk", table_name="sections")
    op.drop_index("ix_sections_confidence", table_name="sections")
    op.drop_table("sections")
    op.drop_table("scenes")
    op.drop_table("persons")
    op.drop_table("person_scenes")
    op.drop_index("ix_ocr_texts_language_code", table_name="ocr_texts")
    op.drop_table("ocr_texts")
    op.drop_table("frame_activity")
    op.drop_index("ix_media_items_external_id", table_name="media_items")
    op.drop_table("media_items")
    op.drop_index("ix_deliveries_outcome_id", table_name="deliveries")
    op.drop_index("ix_deliveries_job_id_id", table_name="deliveries")
    op.drop_index("ix_deliveries_body_sha256", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_jobs_status_received_at_id", table_name="jobs")
    op.drop_index("ix_jobs_received_at_id", table_name="jobs")
    op.drop_index("ix_jobs_kind_received_at_id", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("delivery_bodies")
    op.drop_index(
        "uq_api_tokens_active_name",
        table_name="api_tokens",
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.drop_table("api_tokens")
