"""Database URLs, engines and migrations.

Two backends, one schema (``schema.tables``):

* **SQLite** (embedded default, zero setup): ``sqlite+aiosqlite``, one file.
* **PostgreSQL** (production, several server processes): ``postgresql+psycopg`` (psycopg 3,
  async).

Typical use::

    url = normalize_url(os.environ.get("DATABASE_URL"))
    await migrate(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        ...
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = [
    "DEFAULT_URL",
    "SQLITE_BEGIN_OPTION",
    "normalize_url",
    "create_engine",
    "is_postgres",
    "migrate",
    "migrate_sync",
    "alembic_config",
    "MIGRATIONS_DIR",
]

#: Used when no URL is configured: a file under ``./var`` (relative to the working directory).
DEFAULT_URL = "sqlite+aiosqlite:///var/syncd.sqlite3"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Execution option naming how SQLite transactions begin: ``"IMMEDIATE"`` (default) or
#: ``"DEFERRED"``. See :func:`create_engine`.
SQLITE_BEGIN_OPTION = "sqlite_begin"
_SQLITE_BEGIN_MODES = ("IMMEDIATE", "DEFERRED")

# Key of a transaction-scoped advisory lock serializing concurrent `migrate` runs on PostgreSQL
# (several server processes starting at once). Arbitrary, stable: b"syncdmig" as an int64.
_PG_MIGRATION_LOCK = 0x73796E63646D6967


def normalize_url(url: str | None) -> str:
    """Turn a configured database URL into the async-driver URL SQLAlchemy needs.

    * ``None`` or empty: :data:`DEFAULT_URL`.
    * ``postgres://``, ``postgresql://``, ``postgresql+psycopg://`` -> ``postgresql+psycopg://``.
    * ``sqlite://...``, ``sqlite+aiosqlite://...`` -> ``sqlite+aiosqlite://...``.

    For a file-backed SQLite URL the parent directory of the file is created. Any other
    scheme or driver raises ``ValueError``.
    """
    raw = (url or "").strip() or DEFAULT_URL
    try:
        parsed = make_url(raw)
    except Exception as e:  # sqlalchemy.exc.ArgumentError
        raise ValueError(f"invalid database URL: {e}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        target = "postgresql+psycopg"
    elif backend == "sqlite" and driver in ("", "aiosqlite", "pysqlite"):
        target = "sqlite+aiosqlite"
        _ensure_sqlite_parent(parsed)
    else:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use postgresql:// (psycopg) or sqlite:///path"
        )
    # Rewrite only the scheme: SQLAlchemy 2.1's URL rendering percent-escapes the database
    # part (":memory:" -> "%3Amemory%3A"), which is equivalent but surprising to read.
    return target + raw[raw.index("://"):]


def _ensure_sqlite_parent(url: URL) -> None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("mode") == "memory":
        return
    Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str | None, **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` (normalized with :func:`normalize_url`).

    **SQLite.** Every new connection runs::

        PRAGMA journal_mode=WAL      readers never block the writer nor the writer readers
        PRAGMA synchronous=FULL      fsync at every commit: an acknowledged commit survives
                                     power loss (NORMAL in WAL mode may lose the last commits)
        PRAGMA foreign_keys=ON       SQLite ignores foreign keys unless asked
        PRAGMA busy_timeout=5000     wait up to 5 s for a lock instead of failing at once

    and transactions are begun explicitly with ``BEGIN IMMEDIATE`` (the driver's own implicit
    ``BEGIN`` is turned off). Python's sqlite3 would otherwise begin a transaction only at
    the first INSERT/UPDATE/DELETE, so reads before it were not part of the transaction; and
    a ``BEGIN DEFERRED`` transaction that reads and then writes fails with ``SQLITE_BUSY``
    (no waiting) when another connection committed in between. ``IMMEDIATE`` takes the write
    lock up front, so transactions on one database are serialized and ``busy_timeout``
    applies. Read-only work that wants WAL's concurrent readers can opt into deferred
    transactions per engine or connection::

        reader = engine.execution_options(sqlite_begin="DEFERRED")

    Throughput with ``synchronous=FULL`` is a few thousand commits per second: batch writes
    into one transaction.

    **PostgreSQL.** psycopg 3 async driver, a pool of 10 connections (plus the default
    overflow of 10), ``pool_pre_ping`` so connections dropped by a server restart or a load
    balancer are replaced instead of failing a request. Default isolation (READ COMMITTED).

    Extra keyword arguments go to :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    normalized = normalize_url(url)
    if make_url(normalized).get_backend_name() == "postgresql":
        opts: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 10}
        opts.update(kwargs)
        return create_async_engine(normalized, **opts)
    # each pooled SQLite connection is a thread of aiosqlite: keep enough of them that bursts
    # of reads do not open and close overflow connections (a thread and 4 PRAGMAs each)
    opts = {"pool_size": 10}
    opts.update(kwargs)
    engine = create_async_engine(normalized, **opts)
    _install_sqlite_hooks(engine.sync_engine)
    return engine


SQLITE_BUSY_TIMEOUT_MS = 5000


def _enable_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL`` (kept in the file: a no-op once any connection set it).

    Switching a new file to WAL needs its exclusive lock, and SQLite answers "database is
    locked" at once, without the busy handler, while another connection holds a read lock
    (several processes or engines opening one fresh file together). That is retried here
    within the busy timeout; any other error, or a lock held longer, is raised.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def _install_sqlite_hooks(sync_engine: Engine) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Disable the driver's implicit BEGIN; we emit our own in `_on_begin`.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")).upper()
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be one of {_SQLITE_BEGIN_MODES}, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def is_postgres(bind: AsyncEngine | AsyncConnection | Engine | Connection) -> bool:
    """Whether ``bind`` (engine or connection, sync or async) talks to PostgreSQL."""
    return bind.dialect.name == "postgresql"


def alembic_config(url: str | None = None) -> Any:
    """An ``alembic.config.Config`` for our migrations, configured without an ini file.

    ``url`` (normalized) is handed to ``env.py`` through ``config.attributes``, so passwords
    containing ``%`` need no escaping.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.attributes["url"] = normalize_url(url)
    return cfg


async def migrate(url: str | None, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the latest).

    Runs in one transaction on both backends (SQLite and PostgreSQL have transactional DDL),
    so a failed migration leaves the schema as it was. Concurrent callers are serialized (an
    advisory lock on PostgreSQL, the write lock on SQLite); the later ones find the database
    already upgraded.
    """
    from alembic import command

    cfg = alembic_config(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            if is_postgres(conn):
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")

            def _upgrade(sync_conn: Connection) -> None:
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, revision)

            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()


def migrate_sync(url: str | None, revision: str = "head") -> None:
    """:func:`migrate` for synchronous callers (the CLI); not from inside a running loop."""
    asyncio.run(migrate(url, revision))
