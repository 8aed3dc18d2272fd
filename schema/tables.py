"""The SQL schema: engine state and the one-way projection of the CRM documents.

SQLAlchemy Core only. Table and column names are a contract with the rest of the code base;
change them only together with a new migration in ``schema/migrations/versions``.

Engine state (written by ``syncd``)::

    users, devices, client_bindings         accounts, devices, Yjs client id -> device
    oplog                                   accepted updates, append-only, compacted
    doc_snapshots, doc_heads                compacted state; per-document last/projected seq
    device_doc_acks                         what each device has received (compaction floor)
    events, tasks, audit_log, refresh_tokens

Projection (rebuildable from the log at any time)::

    customers, jobs, job_assignments, materials, notes

Portability notes:

* Autoincrement keys are ``BigInteger`` on PostgreSQL (``BIGSERIAL``) and ``INTEGER`` on SQLite
  (only ``INTEGER PRIMARY KEY`` is a rowid alias there). ``oplog``, ``events`` and
  ``audit_log`` are created with SQLite's ``AUTOINCREMENT``: without it SQLite reuses the
  numbers of deleted tail rows, and compaction deletes log rows, so a device cursor could
  point at a sequence number that is later handed out again.
* Timestamps use :class:`UtcDateTime`: always timezone-aware UTC datetimes in Python, on both
  backends (plain ``DateTime(timezone=True)`` comes back naive from SQLite).
* ``oplog.update`` and ``events.type`` are SQL keywords; SQLAlchemy quotes them, hand-written
  SQL must too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "metadata",
    "NAMING_CONVENTION",
    "UtcDateTime",
    "users",
    "devices",
    "client_bindings",
    "oplog",
    "doc_snapshots",
    "doc_heads",
    "device_doc_acks",
    "customers",
    "jobs",
    "job_assignments",
    "materials",
    "notes",
    "events",
    "tasks",
    "audit_log",
    "refresh_tokens",
]

#: Deterministic constraint and index names, so migrations can refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always yields aware UTC datetimes.

    Naive datetimes given to it are taken to be UTC. SQLite has no time zone storage, so the
    value is stored there as naive UTC text (string order is time order); PostgreSQL stores
    ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _autoinc() -> BigInteger:
    # SQLite only autoincrements an INTEGER PRIMARY KEY (a rowid alias), never BIGINT.
    return BigInteger().with_variant(Integer(), "sqlite")  # type: ignore[return-value]


def _created_at(name: str = "created_at") -> Column[datetime]:
    return Column(name, UtcDateTime(), nullable=False, server_default=func.now())


def _seq(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default=text("0"))


# --- accounts and devices -------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=True),
    Column("active", Boolean, nullable=False, server_default=true()),
    _created_at(),
    UniqueConstraint("email"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("name", String(200), nullable=True),
    _created_at(),
    Column("last_seen_at", UtcDateTime(), nullable=True),
)

client_bindings = Table(
    "client_bindings",
    metadata,
    # A Yjs client id (uint53) belongs to exactly one device.
    Column("client_id", BigInteger, primary_key=True, autoincrement=False),
    Column("device_id", String(64), ForeignKey("devices.id"), nullable=False),
    _created_at(),
)

# --- the log and per-document state ---------------------------------------------------

oplog = Table(
    "oplog",
    metadata,
    Column("seq", _autoinc(), primary_key=True, autoincrement=True),
    Column("doc_id", String(80), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),  # sha256 of the update: idempotent re-send
    Column("update", LargeBinary, nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False, server_default=func.now()),
    UniqueConstraint("doc_id", "digest"),
    Index("ix_oplog_doc_id_seq", "doc_id", "seq"),
    sqlite_autoincrement=True,
)

doc_snapshots = Table(
    "doc_snapshots",
    metadata,
    Column("doc_id", String(80), primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("upto_seq", BigInteger, nullable=False),
    Column("folded_entries", Integer, nullable=False, server_default=text("0")),
    _created_at("updated_at"),
)

doc_heads = Table(
    "doc_heads",
    metadata,
    Column("doc_id", String(80), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("record_id", String(36), nullable=False),
    _seq("last_seq"),
    _seq("projected_seq"),
    _created_at("updated_at"),
)

device_doc_acks = Table(
    "device_doc_acks",
    metadata,
    Column("device_id", String(64), nullable=False),
    Column("doc_id", String(80), nullable=False),
    Column("acked_seq", BigInteger, nullable=False),
    _created_at("updated_at"),
    PrimaryKeyConstraint("device_id", "doc_id"),
)

# --- projection -----------------------------------------------------------------------

customers = Table(
    "customers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("phone", String(40), nullable=True),
    Column("email", String(254), nullable=True),
    Column("address", String(500), nullable=True),
    Column("notes", Text, nullable=True),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    _seq("last_seq"),
    Index("ix_customers_name", "name"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    # No foreign key: documents are projected in any order, a job may precede its customer.
    Column("customer_id", String(36), nullable=True),
    Column("title", String(200), nullable=True),
    Column("description", Text, nullable=True),
    Column("address", String(500), nullable=True),
    Column("status", String(20), nullable=True),
    Column("scheduled_start", String(40), nullable=True),
    Column("scheduled_end", String(40), nullable=True),
    Column("owner_id", String(36), nullable=True),
    Column("estimate", Float, nullable=True),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    _seq("last_seq"),
    Index("ix_jobs_status", "status"),
    Index("ix_jobs_customer_id", "customer_id"),
)

job_assignments = Table(
    "job_assignments",
    metadata,
    Column("job_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=False),
    PrimaryKeyConstraint("job_id", "user_id"),
    Index("ix_job_assignments_user_id", "user_id"),
)

materials = Table(
    "materials",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), nullable=False),
    Column("name", String(200), nullable=True),
    Column("quantity", Float, nullable=True),
    Column("unit", String(20), nullable=True),
    Column("purchased", Boolean, nullable=False, server_default=false()),
    Column("cost", Float, nullable=True),
    Column("removed", Boolean, nullable=False, server_default=false()),
    _seq("last_seq"),
    Index("ix_materials_job_id", "job_id"),
)

notes = Table(
    "notes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), nullable=False),
    Column("author_id", String(36), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("ts", String(19), nullable=False),  # hybrid logical clock, conflict_rules.hlc
    Index("ix_notes_job_id", "job_id"),
)

# --- timeline, automations, security ---------------------------------------------------

events = Table(
    "events",
    metadata,
    Column("id", _autoinc(), primary_key=True, autoincrement=True),
    Column("doc_id", String(80), nullable=False),
    Column("record_type", String(20), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("type", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("actor", String(36), nullable=True),
    Column("ts", String(19), nullable=True),
    Column("seq", BigInteger, nullable=False),
    _created_at(),
    Index("ix_events_record_id_id", "record_id", "id"),
    Index("ix_events_type", "type"),
    sqlite_autoincrement=True,
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), nullable=True),
    Column("title", String(200), nullable=False),
    Column("due_at", UtcDateTime(), nullable=True),
    Column("done", Boolean, nullable=False, server_default=false()),
    Column("source_event_id", BigInteger, nullable=True),
    _created_at(),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _autoinc(), primary_key=True, autoincrement=True),
    Column("user_id", String(36), nullable=True),
    Column("device_id", String(64), nullable=True),
    Column("action", String(80), nullable=False),
    Column("resource", String(120), nullable=True),
    Column("reason", String(500), nullable=True),
    Column("ip", String(64), nullable=True),
    _created_at(),
    Index("ix_audit_log_created_at", "created_at"),
    sqlite_autoincrement=True,
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("family_id", String(64), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("used_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    _created_at(),
    Index("ix_refresh_tokens_family_id", "family_id"),
)
