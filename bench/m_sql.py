"""Raw database limits: PostgreSQL batched upserts and commit rates, SQLite commit rates.

Every PostgreSQL measurement works in scratch tables named ``bench_<what>_<pid>_<random>``
that are dropped at the end (also on error).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Iterator

from .registry import Context, Skip, measurement, row

COLUMNS = ("id", "customer_id", "status", "title", "price", "qty", "done", "scheduled_at", "data")
DDL = """CREATE TABLE {t} (
    id text PRIMARY KEY,
    customer_id text NOT NULL,
    status text NOT NULL,
    title text,
    price numeric(12, 2),
    qty integer,
    done boolean NOT NULL DEFAULT false,
    scheduled_at timestamptz,
    data jsonb
)"""
UPSERT = (
    "INSERT INTO {t} (" + ", ".join(COLUMNS) + ") VALUES (" + ", ".join(["%s"] * len(COLUMNS)) + ") "
    "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
)
BATCH = 1_000


def _scratch(what: str) -> str:
    return f"bench_{what}_{os.getpid()}_{secrets.token_hex(3)}"


def _connect(ctx: Context, **kw: Any):
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover
        raise Skip(f"psycopg not installed: {e}") from e
    try:
        return psycopg.connect(ctx.pg_dsn, connect_timeout=5, **kw)
    except psycopg.OperationalError as e:
        raise Skip(f"PostgreSQL unreachable at {ctx.pg_dsn}: {str(e).strip()[:160]}") from e


@contextmanager
def _tables(ctx: Context, *names: str) -> Iterator[None]:
    """Drop the scratch tables at the end, whatever happens."""
    try:
        yield
    finally:
        with _connect(ctx, autocommit=True) as conn:
            for n in names:
                conn.execute(f"DROP TABLE IF EXISTS {n}")


def _rows(n: int, rng: random.Random, ids: list[str]) -> list[tuple]:
    from psycopg.types.json import Jsonb

    base = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    out = []
    for i in range(n):
        out.append((
            ids[i],
            f"cust-{rng.randrange(5_000):05d}",
            rng.choice(("new", "scheduled", "in_progress", "done")),
            f"Job {i} " + "x" * rng.randrange(30),
            Decimal(rng.randrange(1, 5_000_000)) / 100,
            rng.randrange(1_000),
            rng.random() < 0.3,
            base + dt.timedelta(minutes=rng.randrange(500_000)),
            Jsonb({"crew": [f"user{rng.randrange(30)}"], "rev": rng.randrange(100)}),
        ))
    return out


def _workload(n: int, kind: str, rng: random.Random) -> tuple[list[tuple], list[tuple]]:
    """(pre-existing rows, rows to upsert). ``update``: 95% of the upserted ids pre-exist."""
    if kind == "insert":
        ids = [f"job-{i:08d}" for i in range(n)]
        return [], _rows(n, rng, ids)
    existing = [f"job-{i:08d}" for i in range(n)]
    n_new = n // 20
    ids = rng.sample(existing, n - n_new) + [f"job-new-{i:08d}" for i in range(n_new)]
    rng.shuffle(ids)
    return _rows(n, rng, existing), _rows(n, rng, ids)


def _fresh_table(ctx: Context, table: str, pre: list[tuple]) -> None:
    with _connect(ctx, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(DDL.format(t=table))
        if pre:
            conn.autocommit = False
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as cp:
                for r in pre:
                    cp.write_row(r)
            conn.commit()
            conn.autocommit = True
        conn.execute(f"VACUUM ANALYZE {table}")
        if _is_superuser(conn):
            conn.execute("CHECKPOINT")  # start every variant with no dirty buffers of the last one


def _is_superuser(conn) -> bool:
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]


def _count(ctx: Context, table: str) -> int:
    with _connect(ctx) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _psycopg_executemany(ctx: Context, table: str, rows: list[tuple]) -> float:
    sql = UPSERT.format(t=table)
    with _connect(ctx) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for k in range(0, len(rows), BATCH):
                cur.executemany(sql, rows[k:k + BATCH])
                conn.commit()
        return time.perf_counter() - t0


def _copy_merge(ctx: Context, table: str, rows: list[tuple]) -> float:
    cols = ", ".join(COLUMNS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    with _connect(ctx) as conn:
        conn.execute(f"CREATE TEMP TABLE stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for k in range(0, len(rows), BATCH):
                with cur.copy(f"COPY stage ({cols}) FROM STDIN") as cp:
                    for r in rows[k:k + BATCH]:
                        cp.write_row(r)
                cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage ON CONFLICT (id) DO UPDATE SET {sets}")
                conn.commit()
        return time.perf_counter() - t0


def _sa_url(dsn: str) -> str:
    if dsn.startswith("postgresql://"):
        return "postgresql+psycopg://" + dsn[len("postgresql://"):]
    if dsn.startswith("postgres://"):
        return "postgresql+psycopg://" + dsn[len("postgres://"):]
    return dsn


def _sa_table(table: str):
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql as pg

    md = sa.MetaData()
    return sa.Table(
        table, md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("qty", sa.Integer),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True)),
        sa.Column("data", pg.JSONB),
    )


async def _sa_async(ctx: Context, table: str, rows: list[tuple], values_list: bool) -> float:
    from sqlalchemy.dialects.postgresql import insert
    from sqlalchemy.ext.asyncio import create_async_engine

    t = _sa_table(table)
    dicts = [dict(zip(COLUMNS, r[:-1] + (r[-1].obj,))) for r in rows]  # plain dict for JSONB
    engine = create_async_engine(_sa_url(ctx.pg_dsn), pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:  # warm up the connection, outside the timing
            await conn.exec_driver_sql("SELECT 1")
        t0 = time.perf_counter()
        async with engine.connect() as conn:
            for k in range(0, len(dicts), BATCH):
                chunk = dicts[k:k + BATCH]
                if values_list:
                    stmt = insert(t).values(chunk)
                    stmt = stmt.on_conflict_do_update(index_elements=[t.c.id],
                                                      set_={c: stmt.excluded[c] for c in COLUMNS[1:]})
                    await conn.execute(stmt)
                else:
                    stmt = insert(t)
                    stmt = stmt.on_conflict_do_update(index_elements=[t.c.id],
                                                      set_={c: stmt.excluded[c] for c in COLUMNS[1:]})
                    await conn.execute(stmt, chunk)  # executemany
                await conn.commit()
        return time.perf_counter() - t0
    finally:
        await engine.dispose()


@measurement("sql.pg_batched_upsert_raw", group="sql")
def pg_batched_upsert_raw(ctx: Context):
    """PostgreSQL batched upsert (1,000 rows per commit) into a projection-shaped table:
    psycopg executemany, SQLAlchemy 2 async executemany, COPY to temp + INSERT..SELECT."""
    _connect(ctx).close()  # Skip early if unreachable
    n = ctx.size(50_000, 3_000)
    n_values = ctx.size(10_000, 1_000)
    rng = random.Random(ctx.seed)
    variants: list[tuple[str, str, Any]] = [
        ("psycopg executemany", "pipeline mode (psycopg 3 default for executemany)",
         lambda tbl, rows: _psycopg_executemany(ctx, tbl, rows)),
        ("SQLAlchemy async executemany", "Core insert().on_conflict_do_update(), conn.execute(stmt, [dicts])",
         lambda tbl, rows: asyncio.run(_sa_async(ctx, tbl, rows, values_list=False))),
        ("COPY to temp + INSERT..SELECT", "temp table ON COMMIT DELETE ROWS",
         lambda tbl, rows: _copy_merge(ctx, tbl, rows)),
        ("SQLAlchemy insert().values(list)", f"one multi-VALUES statement per 1,000 rows; {n_values:,} rows only",
         lambda tbl, rows: asyncio.run(_sa_async(ctx, tbl, rows[:n_values], values_list=True))),
    ]
    table = _scratch("upsert")
    out = []
    with _tables(ctx, table):
        for kind in ("update", "insert"):
            pre, rows = _workload(n, kind, rng)
            for label, note, fn in variants:
                _fresh_table(ctx, table, pre)
                s = fn(table, rows)
                partial = "values(list)" in label
                done = n_values if partial else n
                expect = None if partial else (len(pre) + n // 20 if kind == "update" else n)
                got = _count(ctx, table)
                if expect is not None and got != expect:
                    raise RuntimeError(f"{label}/{kind}: expected {expect} rows, found {got}")
                what = "95% updates of existing rows" if kind == "update" else "all new rows"
                out.append(row(f"{kind}: {label}", done / s, "rows/s",
                               f"{done:,} rows, {what}, into {len(pre):,} rows; {note}"))
    return out


async def _commit_loop(ctx: Context, table: str, n_conns: int, per_conn: int) -> float:
    import psycopg

    conns = [await psycopg.AsyncConnection.connect(ctx.pg_dsn, autocommit=True) for _ in range(n_conns)]
    try:
        async def worker(k: int, conn) -> None:
            for i in range(per_conn):
                await conn.execute(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", (k * per_conn + i, "x" * 40))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
        return time.perf_counter() - t0
    finally:
        for c in conns:
            await c.close()


@measurement("sql.pg_commit_rate", group="sql")
def pg_commit_rate(ctx: Context):
    """PostgreSQL commits/s with one small row per commit, 1 and 32 connections."""
    _connect(ctx).close()
    table = _scratch("commit")
    out = []
    with _tables(ctx, table):
        with _connect(ctx, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text)")
            sc = conn.execute("SHOW synchronous_commit").fetchone()[0]
        for n_conns, total in ((1, ctx.size(3_000, 300)), (32, ctx.size(16_000, 640))):
            with _connect(ctx, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {table}")
            s = asyncio.run(_commit_loop(ctx, table, n_conns, total // n_conns))
            out.append(row(f"{n_conns} connection{'s' if n_conns > 1 else ''}", total / s, "commits/s",
                           f"{total:,} autocommit INSERTs (psycopg async), synchronous_commit={sc}"))
    return out


@measurement("sql.sqlite_commit_rate", group="sql")
def sqlite_commit_rate(ctx: Context):
    """SQLite commits/s (one small row per commit), WAL with synchronous=FULL vs NORMAL."""
    n = ctx.size(5_000, 300)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-", dir=ctx.tmpdir) as d:
        for sync in ("FULL", "NORMAL"):
            path = os.path.join(d, f"commit_{sync.lower()}.sqlite3")
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                conn.execute(f"PRAGMA synchronous={sync}")
                conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT NOT NULL, v BLOB NOT NULL)")
                payload = os.urandom(100)
                times = []
                t0 = time.perf_counter()
                for i in range(n):
                    t = time.perf_counter()
                    conn.execute("BEGIN")
                    conn.execute("INSERT INTO t (doc, v) VALUES (?, ?)", (f"job:{i % 50}", payload))
                    conn.execute("COMMIT")
                    times.append(time.perf_counter() - t)
                total = time.perf_counter() - t0
            finally:
                conn.close()
            times.sort()
            p99 = times[int(len(times) * 0.99) - 1]
            out.append(row(f"journal_mode={mode}, synchronous={sync}", n / total, "commits/s",
                           f"{n:,} commits of a 100-byte row; median {statistics.median(times) * 1e6:.0f} us, "
                           f"p99 {p99 * 1e6:.0f} us"))
    return out
