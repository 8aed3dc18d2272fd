"""``syncd backup`` / ``syncd restore``: a consistent cut of the source of truth, checked before
anything is written, restored in one transaction with the projection rebuilt from the log.

Every database test runs on SQLite and on PostgreSQL (``db_url``), and one moves a backup
between the two backends."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import click
import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from schema import documents as D
from schema import tables as t
from schema.db import create_engine, migrate, migrate_sync
from syncd import backup as B
from syncd.automations import insert_tasks, tasks_for
from syncd.demo import seed_demo
from syncd.engine import EngineConfig, SyncEngine
from syncd.projection import Event
from syncd.verify import verify

from engine_helpers import BareDevice, add_user, customer_doc, job_doc  # type: ignore[import-not-found]

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ENGINE_TABLES = [tbl.name for tbl in B.BACKED_UP]
PROJECTION_TABLES = ["customers", "jobs", "job_assignments", "materials", "notes"]


# --- databases ------------------------------------------------------------------------------

@asynccontextmanager
async def another_database(like_url: str, tmp_path: Path, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new database on the same backend as ``like_url`` (dropped afterwards)."""
    if like_url.startswith("postgres"):
        import psycopg
        name = f"test_{uuid.uuid4().hex[:16]}"
        async with await psycopg.AsyncConnection.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
        try:
            if migrated:
                await migrate(url)
            yield url
        finally:
            async with await psycopg.AsyncConnection.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / f'other-{uuid.uuid4().hex[:8]}.sqlite3'}"
        if migrated:
            await migrate(url)
        yield url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Any]:
    db = create_engine(url)
    try:
        yield db
    finally:
        await db.dispose()


def _plain(v: Any) -> Any:
    return bytes(v) if isinstance(v, (bytes, memoryview, bytearray)) else v


async def rows_of(db, names: list[str], *, drop: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with db.connect() as conn:
        for name in names:
            tbl = t.metadata.tables[name]
            res = await conn.execute(select(tbl).order_by(*tbl.primary_key.columns))
            out[name] = [{k: _plain(v) for k, v in r.items() if k not in drop} for r in res.mappings().all()]
    return out


async def engine_rows(db) -> dict[str, list[dict[str, Any]]]:
    return await rows_of(db, ENGINE_TABLES)


async def projection_rows(db) -> dict[str, list[dict[str, Any]]]:
    # last_seq of a rebuilt row is its document's head, not the commit that last changed it
    return await rows_of(db, PROJECTION_TABLES, drop=("last_seq",))


async def total_rows(db) -> int:
    async with db.connect() as conn:
        return sum([(await conn.execute(select(func.count()).select_from(tbl))).scalar_one()
                    for tbl in (*B.BACKED_UP, *B.NOT_BACKED_UP)])


# --- source data ----------------------------------------------------------------------------

async def build_source(db) -> dict[str, Any]:
    """The demo company, then engine pushes covering every backed-up table: a job with crew,
    materials, a note and a crew status change (events), a pull (device ack), a customer
    compacted then edited (snapshot + tail), a customer whose newest entry was compacted away
    (the highest seq lives only in a snapshot), tasks from the automations, an audit row and a
    session (which is not backed up)."""
    await seed_demo(db)
    office = BareDevice(await add_user(db, "office"), "office")
    crew = BareDevice(await add_user(db, "crew"), "crew")
    job = job_doc()
    cust1, cust2 = customer_doc(), customer_doc()
    async with SyncEngine(db, EngineConfig(paranoid=True)) as eng:
        await eng.push(office.principal, job, office.set_fields(
            job, title="Attic conversion", status="scheduled", crew=[crew.principal.user_id], estimate=9000))
        mid = str(uuid.uuid4())
        await eng.push(office.principal, job, office.edit(job, lambda d, s: (
            D.write_material_field(d, mid, "name", "joists", **s),
            D.write_material_field(d, mid, "quantity", 8, **s),
            D.write_material_field(d, mid, "unit", "pcs", **s))))
        await eng.push(office.principal, job, office.edit(job, lambda d, s: D.add_note(d, str(uuid.uuid4()),
                                                                                          "bring the long ladder", **s)))
        res = await eng.pull(crew.principal, job, None, None)
        crew.apply(job, res.update)
        await eng.pull(crew.principal, job, crew.doc(job).get_state(), res.seq)  # acknowledges res.seq
        await eng.push(crew.principal, job, crew.set_fields(job, status="in_progress"))
        await eng.push(office.principal, job, office.edit(job, lambda d, s: D.write_material_field(
            d, mid, "purchased", True, **s)))
        for i in range(4):
            await eng.push(office.principal, cust1, office.set_fields(cust1, name=f"Customer v{i}"))
        await eng.compact(cust1)
        await eng.push(office.principal, cust1, office.set_fields(cust1, phone="+1 555 0101"))
        await eng.push(office.principal, cust2, office.set_fields(cust2, name="Compacted Co"))
        await eng.compact(cust2)
    async with db.begin() as conn:
        evs = (await conn.execute(select(t.events).order_by(t.events.c.id))).mappings().all()
        jobs = (await conn.execute(select(t.jobs))).mappings().all()
        crews = (await conn.execute(select(t.job_assignments))).all()
        ctx = {j["id"]: {"title": j["title"], "status": j["status"], "deleted": j["deleted"],
                         "crew": [u for jid, u in crews if jid == j["id"]]} for j in jobs}
        rows = tasks_for([(e["id"], Event(e["record_type"], e["record_id"], e["type"], e["payload"], e["actor"], e["ts"]))
                          for e in evs], ctx)
        await insert_tasks(conn, rows)
        await conn.execute(t.audit_log.insert().values(user_id=crew.principal.user_id, device_id=crew.principal.device_id,
                                                       action="push.refused", resource=job, reason="test",
                                                       ip="127.0.0.1", created_at=datetime.now(timezone.utc)))
        now = datetime.now(timezone.utc)
        await conn.execute(t.refresh_tokens.insert().values(id="tok-" + uuid.uuid4().hex, family_id="fam",
                                                            user_id=office.principal.user_id,
                                                            expires_at=now + timedelta(days=30), created_at=now))
        heads = (await conn.execute(select(func.max(t.doc_heads.c.last_seq)))).scalar_one()
        top_log = (await conn.execute(select(func.max(t.oplog.c.seq)))).scalar_one()
    assert top_log < heads, "the newest log entry should live only in a snapshot"
    return {"office": office, "job": job, "cust1": cust1, "max_seq": heads, "tasks": len(rows)}


@pytest.fixture
async def source(db_url):
    db = create_engine(db_url)
    info = await build_source(db)
    yield db, info
    await db.dispose()


# --- round trip -----------------------------------------------------------------------------

async def test_backup_then_restore_gives_the_same_truth_and_projection(source, db_url, tmp_path):
    src, info = source
    assert info["tasks"] >= 1
    path = tmp_path / "company.syncd.gz"
    summary = await B.backup(src, path)
    assert summary["counts"]["oplog"] > 0 and summary["counts"]["doc_snapshots"] == 2
    assert summary["counts"]["device_doc_acks"] >= 1 and summary["counts"]["tasks"] == info["tasks"]
    assert summary["sequences"]["oplog"] == info["max_seq"]
    assert not path.with_name(path.name + ".partial").exists()

    # the format: gzip'd JSON lines, header first, checksum last
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    assert header["format"] == "syncd-backup" and header["version"] == 1
    assert header["source"]["dialect"] == src.dialect.name and header["counts"] == summary["counts"]
    assert set(header["not_included"]) == {*PROJECTION_TABLES, "refresh_tokens"}
    import hashlib
    assert trailer == {"end": True, "rows": len(lines) - 2, "sha256": hashlib.sha256(b"".join(lines[:-1])).hexdigest()}
    assert B.check_backup(path)["counts"] == summary["counts"]

    async with another_database(db_url, tmp_path) as url, opened(url) as dst:
        out = await B.restore(dst, path)
        assert out["restored"] == summary["counts"] and out["documents"] == summary["counts"]["doc_heads"]
        report = await verify(dst)
        assert report.ok, report.to_json()
        assert await engine_rows(dst) == await engine_rows(src)  # op log, users, events, tasks... identical
        assert await projection_rows(dst) == await projection_rows(src)
        async with dst.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(t.refresh_tokens))).scalar_one() == 0

        # the restored database keeps working: new entries are numbered past every old one
        async with SyncEngine(dst, EngineConfig(paranoid=True)) as eng:
            office = info["office"]
            ack = await eng.push(office.principal, info["job"], office.set_fields(info["job"], address="4 Loft St"))
            assert ack.seq == info["max_seq"] + B.DEFAULT_SEQ_GAP + 1
            ack2 = await eng.push(office.principal, info["cust1"], office.set_fields(info["cust1"], email="c@example.com"))
            assert ack2.seq == ack.seq + 1
        async with dst.connect() as conn:
            ev_ids = (await conn.execute(select(t.events.c.id).order_by(t.events.c.id))).scalars().all()
        assert ev_ids[-1] > max(e["id"] for e in (await engine_rows(src))["events"])
        assert (await verify(dst)).ok


async def test_the_sequences_follow_the_source_high_water_mark_without_a_gap(source, db_url, tmp_path):
    src, info = source
    path = tmp_path / "b.gz"
    await B.backup(src, path)
    async with another_database(db_url, tmp_path) as url, opened(url) as dst:
        out = await B.restore(dst, path, seq_gap=0)
        assert out["sequences"]["oplog"] == info["max_seq"]
        async with SyncEngine(dst) as eng:
            office = info["office"]
            ack = await eng.push(office.principal, info["job"], office.set_fields(info["job"], address="1 Main"))
        # the newest entry had been compacted away: its number is still never handed out again
        assert ack.seq == info["max_seq"] + 1
        async with dst.begin() as conn:
            await conn.execute(t.audit_log.insert().values(action="after.restore", created_at=datetime.now(timezone.utc)))
            ids = (await conn.execute(select(t.audit_log.c.id).order_by(t.audit_log.c.id))).scalars().all()
        assert len(ids) == 2 and ids[1] > ids[0]


@pytest.mark.postgres
async def test_a_backup_moves_between_sqlite_and_postgresql(sqlite_url, pg_url, tmp_path):
    async with opened(sqlite_url) as lite, opened(pg_url) as pg:
        await build_source(lite)
        await B.backup(lite, tmp_path / "lite.gz")
        await B.restore(pg, tmp_path / "lite.gz")
        assert (await verify(pg)).ok
        assert await engine_rows(pg) == await engine_rows(lite)
        assert await projection_rows(pg) == await projection_rows(lite)
        # and back
        await B.backup(pg, tmp_path / "pg.gz")
        async with another_database(sqlite_url, tmp_path) as url, opened(url) as lite2:
            await B.restore(lite2, tmp_path / "pg.gz")
            assert (await verify(lite2)).ok
            assert await engine_rows(lite2) == await engine_rows(lite)


# --- refusals -------------------------------------------------------------------------------

async def test_restore_refuses_a_database_that_holds_data_unless_forced(source, db_url, tmp_path):
    src, info = source
    path = tmp_path / "b.gz"
    await B.backup(src, path)
    before = await engine_rows(src)
    with pytest.raises(B.NotEmpty, match="not empty.*--force"):
        await B.restore(src, path)
    assert await engine_rows(src) == before

    async with another_database(db_url, tmp_path) as url, opened(url) as other:
        await other_company(other)
        with pytest.raises(B.NotEmpty, match=r"users \(1\)"):
            await B.restore(other, path)
        out = await B.restore(other, path, force=True)
        assert out["deleted_rows"] > 0
        assert (await verify(other)).ok
        assert await engine_rows(other) == before
        assert await projection_rows(other) == await projection_rows(src)


async def other_company(db) -> None:
    """A database with its own user, document and session."""
    office = BareDevice(await add_user(db, "office", email="someone@else.test"), "office")
    async with SyncEngine(db) as eng:
        doc = job_doc()
        await eng.push(office.principal, doc, office.set_fields(doc, title="Not ours", status="lead"))
    async with db.begin() as conn:
        now = datetime.now(timezone.utc)
        await conn.execute(t.refresh_tokens.insert().values(id="x", family_id="f", user_id=office.principal.user_id,
                                                            expires_at=now, created_at=now))


async def test_restore_refuses_a_database_without_the_schema(source, db_url, tmp_path):
    src, _ = source
    await B.backup(src, tmp_path / "b.gz")
    async with another_database(db_url, tmp_path, migrated=False) as url, opened(url) as bare:
        with pytest.raises(B.NotMigrated, match="syncd migrate"):
            await B.restore(bare, tmp_path / "b.gz")


def _rewrite(path: Path, fn) -> None:
    """Decompress, change the lines with ``fn``, compress again (a valid gzip)."""
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    path.write_bytes(gzip.compress(b"".join(fn(lines))))


def _tamper_row(lines: list[bytes]) -> list[bytes]:
    for i, line in enumerate(lines):
        obj = json.loads(line)
        if obj.get("t") == "users":
            obj["r"]["role"] = "crew" if obj["r"]["role"] == "owner" else "owner"
            lines[i] = orjson.dumps(obj) + b"\n"
            return lines
    raise AssertionError("no users row")


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "truncated_near_the_end": lambda p: p.write_bytes(p.read_bytes()[:-3]),
    "bit_flipped": lambda p: p.write_bytes(_flip(p.read_bytes())),
    "row_tampered": lambda p: _rewrite(p, _tamper_row),
    "checksum_line_missing": lambda p: _rewrite(p, lambda ls: ls[:-1]),
    "rows_missing_at_the_end": lambda p: _rewrite(p, lambda ls: ls[:-3] + ls[-1:]),
    "not_gzip": lambda p: p.write_bytes(b"hello, I am not a backup\n"),
    "empty": lambda p: p.write_bytes(b""),
    "not_a_backup": lambda p: p.write_bytes(gzip.compress(b'{"hello": 1}\n{"end": true}\n')),
}


def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x40
    return bytes(b)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_a_damaged_backup_is_refused_and_nothing_is_written(source, db_url, tmp_path, damage):
    src, _ = source
    path = tmp_path / "b.gz"
    await B.backup(src, path)
    DAMAGE[damage](path)
    with pytest.raises(B.CorruptBackup):
        B.check_backup(path)
    async with another_database(db_url, tmp_path) as url, opened(url) as dst:
        with pytest.raises(B.CorruptBackup):
            await B.restore(dst, path)
        assert await total_rows(dst) == 0
    # even --force deletes nothing when the file is bad: the file is checked first
    before = await engine_rows(src)
    with pytest.raises(B.CorruptBackup):
        await B.restore(src, path, force=True)
    assert await engine_rows(src) == before


async def test_a_file_that_changes_during_the_restore_rolls_everything_back(source, db_url, tmp_path, monkeypatch):
    """The rows are checked again while they are inserted: a file swapped after the first check
    fails the checksum inside the transaction, which rolls back."""
    src, _ = source
    path = tmp_path / "b.gz"
    await B.backup(src, path)
    real_check = B.check_backup

    def check_then_swap(p):
        header = real_check(p)
        _rewrite(path, _tamper_row)
        return header

    monkeypatch.setattr(B, "check_backup", check_then_swap)
    async with another_database(db_url, tmp_path) as url, opened(url) as dst:
        with pytest.raises(B.CorruptBackup, match="SHA-256"):
            await B.restore(dst, path)
        assert await total_rows(dst) == 0


# --- consistency while the server writes ------------------------------------------------------

async def test_a_backup_taken_while_writes_continue_is_a_consistent_cut(source, db_url, tmp_path, monkeypatch):
    src, info = source
    office = info["office"]
    isolation: list[tuple[str, str]] = []
    async with SyncEngine(src) as eng:
        stop = asyncio.Event()
        pushed = 0

        async def writer():  # a device that keeps editing throughout the backup
            nonlocal pushed
            doc = job_doc()
            while not stop.is_set():
                await eng.push(office.principal, doc, office.set_fields(doc, title=f"busy {pushed}",
                                                                        status="lead"))
                pushed += 1
                await asyncio.sleep(0)

        real_dump = B._dump_table

        async def dump_with_commits_in_between(conn, table, out, progress, batch_rows):
            if conn.dialect.name == "postgresql" and not isolation:
                isolation.append(((await conn.execute(text("SHOW transaction_isolation"))).scalar_one(),
                                  (await conn.execute(text("SHOW transaction_read_only"))).scalar_one()))
            # several commits land between the tables of one backup (and between its batches)
            target = pushed + 3
            while pushed < target:
                await asyncio.sleep(0.005)
            return await real_dump(conn, table, out, progress, batch_rows)

        monkeypatch.setattr(B, "_dump_table", dump_with_commits_in_between)
        task = asyncio.create_task(writer())
        try:
            await asyncio.sleep(0.01)
            summary = await B.backup(src, tmp_path / "busy.gz", batch_rows=2)
        finally:
            stop.set()
            await task
    if src.dialect.name == "postgresql":
        assert isolation == [("repeatable read", "on")]
    async with src.connect() as conn:
        total = (await conn.execute(select(func.count()).select_from(t.oplog))).scalar_one()
    assert total > summary["counts"]["oplog"], "writes should have committed during the backup"

    async with another_database(db_url, tmp_path) as url, opened(url) as dst:
        await B.restore(dst, tmp_path / "busy.gz")
        report = await verify(dst)
        assert report.ok, report.to_json()
        restored, now = await engine_rows(dst), await engine_rows(src)
        # the restored log is exactly the source's log up to one point in time
        cut = max(r["seq"] for r in restored["oplog"])
        assert restored["oplog"] == [r for r in now["oplog"] if r["seq"] <= cut]
        ev_cut = max(r["id"] for r in restored["events"])
        assert restored["events"] == [r for r in now["events"] if r["id"] <= ev_cut]
        heads = {h["doc_id"]: h for h in restored["doc_heads"]}
        assert all(heads[h["doc_id"]] == h for h in now["doc_heads"] if h["last_seq"] <= cut)
        assert all(h["last_seq"] <= cut for d, h in heads.items() if d.startswith("job:"))


# --- CLI --------------------------------------------------------------------------------------

def _cli():
    from syncd.cli import cli
    from syncd.cli_backup import backup_commands
    return click.Group("syncd", params=cli.params, callback=cli.callback,
                       commands={**cli.commands, **{c.name: c for c in backup_commands}})


def _sync_db(tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / f'cli-{uuid.uuid4().hex[:8]}.sqlite3'}"
    else:
        import psycopg
        _require_postgres()
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        _CREATED.append(name)
        url = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    migrate_sync(url)
    return url


_CREATED: list[str] = []


def _require_postgres() -> None:
    """Skip without PostgreSQL on a developer machine; fail under CI=true (as tests/conftest.py)."""
    import psycopg
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        if os.environ.get("CI") == "true":
            pytest.fail("postgres is not reachable, and CI=true forbids skipping", pytrace=False)
        pytest.skip("postgres is not reachable")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cli_db(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield lambda: _sync_db(tmp_path, request.param)
    if _CREATED:
        import psycopg
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            while _CREATED:
                conn.execute(f'DROP DATABASE IF EXISTS "{_CREATED.pop()}" WITH (FORCE)')


def test_cli_backup_and_restore(cli_db, tmp_path):
    cli, runner = _cli(), CliRunner()
    src, dst = cli_db(), cli_db()
    r = runner.invoke(cli, ["--database-url", src, "seed-demo", "--json"])
    assert r.exit_code == 0, r.output

    r = runner.invoke(cli, ["--database-url", src, "backup", "demo.gz", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["counts"]["users"] == 4 and out["counts"]["oplog"] == 7 and len(out["sha256"]) == 64
    r = runner.invoke(cli, ["--database-url", src, "backup", "human.gz"])
    assert r.exit_code == 0 and "backup written to human.gz" in r.stdout and "7 log entries" in r.stdout

    r = runner.invoke(cli, ["--database-url", dst, "restore", "demo.gz", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["restored"]["oplog"] == 7 and out["documents"] == 7
    r = runner.invoke(cli, ["--database-url", dst, "verify", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True

    # a database with data is refused (exit 1, clear error), unless --force
    r = runner.invoke(cli, ["--database-url", dst, "restore", "demo.gz", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "NOT_EMPTY"
    r = runner.invoke(cli, ["--database-url", dst, "restore", "demo.gz"])
    assert r.exit_code == 1 and "not empty" in r.stderr and "--force" in r.stderr
    r = runner.invoke(cli, ["--database-url", dst, "restore", "human.gz", "--force"])
    assert r.exit_code == 0, r.output
    assert "restored 7 log entries" in r.stdout and "signs in again" in r.stdout
    r = runner.invoke(cli, ["--database-url", dst, "verify"])
    assert r.exit_code == 0 and "OK" in r.stdout


def test_cli_refuses_damaged_files_and_missing_schema(cli_db, tmp_path):
    cli, runner = _cli(), CliRunner()
    src, dst = cli_db(), cli_db()
    assert runner.invoke(cli, ["--database-url", src, "seed-demo"]).exit_code == 0
    assert runner.invoke(cli, ["--database-url", src, "backup", "demo.gz"]).exit_code == 0
    data = Path("demo.gz").read_bytes()
    Path("cut.gz").write_bytes(data[: len(data) // 2])
    r = runner.invoke(cli, ["--database-url", dst, "restore", "cut.gz", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "CORRUPT_BACKUP"
    r = runner.invoke(cli, ["--database-url", dst, "restore", "cut.gz"])
    assert r.exit_code == 1 and "truncated or corrupt" in r.stderr and "nothing was written" in r.stderr
    r = runner.invoke(cli, ["--database-url", dst, "status", "--json"])
    assert json.loads(r.stdout)["documents"] == 0

    bare = f"sqlite+aiosqlite:///{tmp_path / 'bare.sqlite3'}"
    r = runner.invoke(cli, ["--database-url", bare, "restore", "demo.gz", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "NOT_MIGRATED"

    r = runner.invoke(cli, ["--database-url", src, "backup", str(tmp_path / "no" / "such" / "dir.gz")])
    assert r.exit_code == 1 and "backup failed" in r.stderr
    assert not (tmp_path / "no").exists()
    r = runner.invoke(cli, ["--database-url", dst, "restore", "missing.gz"])
    assert r.exit_code == 2  # usage: the file does not exist


def test_the_readme_documents_backup_and_restore():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for line in ("syncd backup PATH [--json]", "syncd restore PATH [--force] [--json]"):
        assert line in readme
