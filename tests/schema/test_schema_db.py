"""URLs, engines (SQLite pragmas and transactions), migrations on both backends."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import tables as t
from schema.db import DEFAULT_URL, create_engine, is_postgres, migrate, migrate_sync, normalize_url

EXPECTED_TABLES = {
    "users", "devices", "client_bindings", "oplog", "doc_snapshots", "doc_heads", "device_doc_acks",
    "customers", "jobs", "job_assignments", "materials", "notes", "events", "tasks", "audit_log",
    "refresh_tokens",
}


# --- normalize_url --------------------------------------------------------------------


@pytest.mark.parametrize("given,expected", [
    ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
    ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql+psycopg://u:p%40ss@h/db?sslmode=require"),
    ("sqlite://", "sqlite+aiosqlite://"),
    ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    ("  postgresql://h/db  ", "postgresql+psycopg://h/db"),
])
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["mysql://h/db", "postgresql+asyncpg://h/db", "nonsense", "sqlite+pysqlcipher:///x"])
def test_normalize_url_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(bad)


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_default_url_creates_var_dir(empty: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_url(empty) == DEFAULT_URL == "sqlite+aiosqlite:///var/syncd.sqlite3"
    assert (tmp_path / "var").is_dir()


def test_sqlite_urls_get_parent_dir(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "x.db"
    assert normalize_url(f"sqlite:///{db}") == f"sqlite+aiosqlite:///{db}"
    assert normalize_url(f"sqlite+aiosqlite:///{db}") == f"sqlite+aiosqlite:///{db}"
    assert db.parent.is_dir()


# --- engines --------------------------------------------------------------------------


async def test_sqlite_pragmas(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        assert not is_postgres(engine)
        for _ in range(2):  # every pooled connection, not only the first
            async with engine.connect() as conn:
                got = {p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                       for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
                assert got == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
                assert not is_postgres(conn)
    finally:
        await engine.dispose()


async def test_sqlite_foreign_keys_enforced(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(t.devices.insert().values(id="d1", user_id="missing"))
    finally:
        await engine.dispose()


async def test_sqlite_transactions_are_real(sqlite_url: str) -> None:
    """Reads belong to the transaction (explicit BEGIN) and rollback undoes writes."""
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            assert conn.in_transaction()
            await conn.execute(t.customers.insert().values(id="c1", name="x"))
            await conn.rollback()
        async with engine.connect() as conn:
            assert (await conn.scalar(sa.select(sa.func.count()).select_from(t.customers))) == 0
    finally:
        await engine.dispose()


async def test_sqlite_immediate_serializes_read_modify_write(sqlite_url: str) -> None:
    """Two concurrent read-then-write transactions both succeed (no SQLITE_BUSY_SNAPSHOT)."""
    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(t.doc_heads.insert().values(doc_id="d", kind="job", record_id="r", last_seq=0))

        async def bump() -> None:
            async with engine.begin() as conn:
                seq = await conn.scalar(sa.select(t.doc_heads.c.last_seq).where(t.doc_heads.c.doc_id == "d"))
                await asyncio.sleep(0.01)
                await conn.execute(t.doc_heads.update().values(last_seq=seq + 1))

        await asyncio.gather(*(bump() for _ in range(5)))
        async with engine.connect() as conn:
            assert await conn.scalar(sa.select(t.doc_heads.c.last_seq)) == 5
        reader = engine.execution_options(sqlite_begin="DEFERRED")
        async with reader.connect() as conn:
            assert await conn.scalar(sa.select(t.doc_heads.c.last_seq)) == 5
        bogus = engine.execution_options(sqlite_begin="EXCLUSIVELY")
        with pytest.raises(ValueError):
            async with bogus.connect() as conn:
                await conn.scalar(sa.select(1))
    finally:
        await engine.dispose()


async def test_postgres_engine_options(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        assert is_postgres(engine)
        assert engine.pool.size() == 10  # type: ignore[attr-defined]
        assert engine.sync_engine.pool._pre_ping  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            assert is_postgres(conn)
            assert await conn.scalar(sa.text("SELECT 1")) == 1
    finally:
        await engine.dispose()


async def test_round_trip_on_both_backends(engine: AsyncEngine) -> None:
    """Types behave the same on both backends: tz-aware UTC datetimes, bytes, JSON, bools."""
    uid, now = str(uuid.uuid4()), datetime.now(timezone(timedelta(hours=2)))
    async with engine.begin() as conn:
        await conn.execute(t.users.insert().values(id=uid, email="a@example.com", name="A", role="owner"))
        await conn.execute(t.devices.insert().values(id="dev-1", user_id=uid, last_seen_at=now))
        await conn.execute(t.client_bindings.insert().values(client_id=2**53 - 1, device_id="dev-1"))
        seqs = []
        for i in range(3):
            r = await conn.execute(t.oplog.insert().values(doc_id="job:x", digest=bytes([i]) * 32,
                                                           update=b"\x00\x01" * i, user_id=uid,
                                                           device_id="dev-1"))
            seqs.append(r.inserted_primary_key[0])
        await conn.execute(t.events.insert().values(doc_id="job:x", record_type="job", record_id="x",
                                                    type="job.status_changed", payload={"to": "done", "n": [1]},
                                                    seq=seqs[-1]))
        await conn.execute(t.jobs.insert().values(id="j", estimate=12.5))
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    async with engine.connect() as conn:
        user = (await conn.execute(sa.select(t.users))).one()
        assert user.active is True and user.password_hash is None
        assert user.created_at.tzinfo is not None and user.created_at.utcoffset() == timedelta(0)
        assert abs(user.created_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
        dev = (await conn.execute(sa.select(t.devices))).one()
        assert dev.last_seen_at == now and dev.last_seen_at.utcoffset() == timedelta(0)
        assert (await conn.scalar(sa.select(t.client_bindings.c.client_id))) == 2**53 - 1
        assert (await conn.scalar(sa.select(t.oplog.c.update).where(t.oplog.c.seq == seqs[2]))) == b"\x00\x01" * 2
        assert (await conn.scalar(sa.select(t.events.c.payload))) == {"to": "done", "n": [1]}
        job = (await conn.execute(sa.select(t.jobs))).one()
        assert job.deleted is False and job.last_seq == 0 and job.estimate == 12.5
    with pytest.raises(sa.exc.IntegrityError):  # UniqueConstraint(doc_id, digest): idempotent re-send
        async with engine.begin() as conn:
            await conn.execute(t.oplog.insert().values(doc_id="job:x", digest=bytes([0]) * 32, update=b"",
                                                       user_id=uid, device_id="dev-1"))


async def test_oplog_seq_never_reused_after_compaction(engine: AsyncEngine) -> None:
    def row(i: int) -> dict[str, object]:
        return {"doc_id": "d", "digest": bytes([i]) * 32, "update": b"u", "user_id": "u", "device_id": "v"}

    async with engine.begin() as conn:
        first = (await conn.execute(t.oplog.insert().values(**row(1)))).inserted_primary_key[0]
        last = (await conn.execute(t.oplog.insert().values(**row(2)))).inserted_primary_key[0]
        await conn.execute(t.oplog.delete())  # compaction folded everything
        again = (await conn.execute(t.oplog.insert().values(**row(3)))).inserted_primary_key[0]
    assert first < last < again


# --- migrations -----------------------------------------------------------------------


def _diff(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(ctx, t.metadata)


async def test_migration_matches_metadata(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        names = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        assert names == EXPECTED_TABLES | {"alembic_version"}
        assert await conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0001"


async def test_no_diff_check_sees_differences(engine: AsyncEngine) -> None:
    """The comparison above is not vacuous: a missing table and a missing column show up."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("DROP TABLE tasks"))
        await conn.execute(sa.text("DROP INDEX ix_notes_job_id"))
        diff = await conn.run_sync(_diff)
        await conn.rollback()
    kinds = {d[0] for d in diff if isinstance(d, tuple)}
    assert {"add_table", "add_index"} <= kinds


async def test_migrate_is_idempotent(db_url: str) -> None:
    await migrate(db_url)  # already at head: a no-op
    await asyncio.gather(migrate(db_url), migrate(db_url))


async def test_migrate_concurrently_from_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    await asyncio.gather(*(migrate(url) for _ in range(3)))
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_migrate_concurrently_from_empty_postgres(pg_url: str) -> None:
    from alembic import command

    from schema.db import alembic_config

    await asyncio.to_thread(command.downgrade, alembic_config(pg_url), "base")
    await asyncio.gather(*(migrate(pg_url) for _ in range(3)))  # serialized by an advisory lock
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


def test_migrate_sync_and_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate_sync(url)
    from alembic import command

    from schema.db import alembic_config

    command.downgrade(alembic_config(url), "base")  # env.py runs its own engine here
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as c:
        left = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    c.close()
    assert left <= {"alembic_version", "sqlite_sequence"}
    migrate_sync(url)


def test_alembic_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    db = tmp_path / "cmd.db"
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(root / "schema" / "alembic.ini"), "-x", f"url=sqlite:///{db}",
         "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    import sqlite3

    with sqlite3.connect(db) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
    c.close()
