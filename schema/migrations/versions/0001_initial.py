"""Initial schema: engine state, CRM projection, timeline and security tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

A migration is a frozen snapshot: every operation is spelled out, nothing is imported from
schema.tables (which moves on with later revisions).
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _autoinc() -> sa.types.TypeEngine:
    # SQLite autoincrements only an INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _now() -> sa.sql.elements.ColumnElement:
    return sa.func.now()


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.Column("last_seen_at", _tz(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_devices_user_id_users"),
    )
    op.create_table(
        "client_bindings",
        sa.Column("client_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("client_id", name="pk_client_bindings"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_client_bindings_device_id_devices"),
    )
    op.create_table(
        "oplog",
        sa.Column("seq", _autoinc(), nullable=False, autoincrement=True),
        sa.Column("doc_id", sa.String(80), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("update", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("received_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("seq", name="pk_oplog"),
        sa.UniqueConstraint("doc_id", "digest", name="uq_oplog_doc_id_digest"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_oplog_doc_id_seq", "oplog", ["doc_id", "seq"])
    op.create_table(
        "doc_snapshots",
        sa.Column("doc_id", sa.String(80), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("upto_seq", sa.BigInteger(), nullable=False),
        sa.Column("folded_entries", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("updated_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("doc_id", name="pk_doc_snapshots"),
    )
    op.create_table(
        "doc_heads",
        sa.Column("doc_id", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("projected_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("updated_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("doc_id", name="pk_doc_heads"),
    )
    op.create_table(
        "device_doc_acks",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("doc_id", sa.String(80), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("device_id", "doc_id", name="pk_device_doc_acks"),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("phone", sa.String(40), nullable=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("address", sa.String(500), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
    )
    op.create_index("ix_customers_name", "customers", ["name"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("address", sa.String(500), nullable=True),
        sa.Column("status", sa.String(20), nullable=True),
        sa.Column("scheduled_start", sa.String(40), nullable=True),
        sa.Column("scheduled_end", sa.String(40), nullable=True),
        sa.Column("owner_id", sa.String(36), nullable=True),
        sa.Column("estimate", sa.Float(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_customer_id", "jobs", ["customer_id"])
    op.create_table(
        "job_assignments",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "user_id", name="pk_job_assignments"),
    )
    op.create_index("ix_job_assignments_user_id", "job_assignments", ["user_id"])
    op.create_table(
        "materials",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(20), nullable=True),
        sa.Column("purchased", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("removed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name="pk_materials"),
    )
    op.create_index("ix_materials_job_id", "materials", ["job_id"])
    op.create_table(
        "notes",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("author_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("ts", sa.String(19), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
    )
    op.create_index("ix_notes_job_id", "notes", ["job_id"])
    op.create_table(
        "events",
        sa.Column("id", _autoinc(), nullable=False, autoincrement=True),
        sa.Column("doc_id", sa.String(80), nullable=False),
        sa.Column("record_type", sa.String(20), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(36), nullable=True),
        sa.Column("ts", sa.String(19), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_record_id_id", "events", ["record_id", "id"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("due_at", _tz(), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("source_event_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _autoinc(), nullable=False, autoincrement=True),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("resource", sa.String(120), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("family_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("expires_at", _tz(), nullable=False),
        sa.Column("used_at", _tz(), nullable=True),
        sa.Column("revoked_at", _tz(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])


def downgrade() -> None:
    for table in (
        "refresh_tokens",
        "audit_log",
        "tasks",
        "events",
        "notes",
        "materials",
        "job_assignments",
        "jobs",
        "customers",
        "device_doc_acks",
        "doc_heads",
        "doc_snapshots",
        "oplog",
        "client_bindings",
        "devices",
        "users",
    ):
        op.drop_table(table)
