"""Backup and restore of the source of truth (``syncd backup`` / ``syncd restore``).

What is saved
-------------
The engine state and the history, read in **one** read transaction (``REPEATABLE READ``,
read-only, on PostgreSQL; one deferred read transaction on SQLite's WAL snapshot), so a
backup taken while the server keeps committing is a consistent cut of the database::

    users (password hashes included), devices, client_bindings,
    oplog (seq, doc_id, digest, update bytes, user_id, device_id, received_at),
    doc_snapshots, doc_heads, device_doc_acks, events, tasks, audit_log

What is not saved
-----------------
* The projection (``customers``, ``jobs``, ``job_assignments``, ``materials``, ``notes``): it is a
  one-way function of the log, and ``restore`` rebuilds it from the snapshots and the log.
  (``last_seq`` of a rebuilt row is its document's head, not the commit that last changed it.)
* Sessions (``refresh_tokens``): after a restore everyone signs in again. The token signing
  key lives in ``$SYNCD_DATA_DIR/keys``, not in the database; keep it with the backup if access
  tokens issued before the restore should stay valid for their last minutes.

Format (version 1)
------------------
A gzip file of JSON lines (UTF-8):

1. header: ``{"format": "syncd-backup", "version": 1, "created_at", "source": {"dialect",
   "schema_revision"}, "tables": [...], "columns": {table: [...]}, "counts": {table: n},
   "sequences": {"oplog"|"events"|"audit_log": high-water mark}, "not_included": [...]}``;
2. one line per row, tables in ``tables`` order: ``{"t": table, "r": {column: value}}``; bytes
   are base64, timestamps ISO 8601 with offset, JSON columns as JSON;
3. trailer: ``{"end": true, "rows": n, "sha256": hex}``, the SHA-256 of every byte (after
   decompression) before the trailer line.

Restore
-------
Into an empty, migrated database with no server running on it (``NotEmpty`` otherwise, unless
``force``, which first deletes every row of the engine and projection tables; on PostgreSQL the
tables are locked against writers until the restore commits). The file is checked completely (gzip CRC,
trailer checksum, row counts) before anything is written; then, in one transaction, the rows
are inserted, the projection of every document is rebuilt from snapshot + log (no events are
emitted: the events come from the backup), the document heads are set, and the id sequences of
``oplog``, ``events`` and ``audit_log`` are moved past every number the source had handed out.
The op log sequence additionally skips ``seq_gap`` numbers (default 1,000,000): a device that
synced with the source *after* the backup holds a cursor the restored log never reached, and
the gap keeps new entries from being numbered below that cursor (such a device would skip them
in its next log-tail pull). Any failure rolls everything back.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import os
import time
import zlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Protocol

import orjson
from sqlalchemy import LargeBinary, Table, delete, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema import tables as t
from schema.documents import parse_doc_id

from .livedoc import LiveDoc
from .projection import Delta, rows_for_view
from .store import Store

__all__ = [
    "FORMAT",
    "VERSION",
    "BACKED_UP",
    "NOT_BACKED_UP",
    "DEFAULT_SEQ_GAP",
    "BackupError",
    "CorruptBackup",
    "NotEmpty",
    "NotMigrated",
    "Progress",
    "backup",
    "check_backup",
    "restore",
]

FORMAT = "syncd-backup"
VERSION = 1

#: Saved tables, in insertion order (foreign keys: users <- devices <- client_bindings).
BACKED_UP: tuple[Table, ...] = (
    t.users, t.devices, t.client_bindings, t.oplog, t.doc_snapshots, t.doc_heads, t.device_doc_acks,
    t.events, t.tasks, t.audit_log,
)
PROJECTION: tuple[Table, ...] = (t.customers, t.jobs, t.job_assignments, t.materials, t.notes)
#: Not saved: the projection (rebuilt from the log) and sessions.
NOT_BACKED_UP: tuple[Table, ...] = (*PROJECTION, t.refresh_tokens)
#: Autoincrement columns whose sequence a restore moves past the restored ids.
SEQUENCES: dict[str, str] = {"oplog": "seq", "events": "id", "audit_log": "id"}
DEFAULT_SEQ_GAP = 1_000_000

_INSERT_BATCH = 1000
_REBUILD_BATCH = 200


class BackupError(Exception):
    """A backup could not be written or restored; nothing was changed."""


class CorruptBackup(BackupError):
    """The file is not a complete, intact syncd backup."""


class NotEmpty(BackupError):
    """The target database holds data (restore needs an empty one, or ``force``)."""


class NotMigrated(BackupError):
    """The target database has no (or an older) schema: run ``syncd migrate`` first."""


class Progress(Protocol):
    """What backup/restore report while they work (the CLI draws a progress bar)."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


# --- row codec ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Codec:
    table: Table
    binary: frozenset[str]
    times: frozenset[str]
    columns: tuple[str, ...]

    @classmethod
    def of(cls, table: Table) -> "_Codec":
        return cls(table,
                   frozenset(str(c.name) for c in table.c if isinstance(c.type, LargeBinary)),
                   frozenset(str(c.name) for c in table.c if isinstance(c.type, t.UtcDateTime)),
                   tuple(str(c.name) for c in table.c))

    def encode(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            k = str(k)  # column names may be str subclasses (quoted_name), which orjson refuses
            if v is None:
                out[k] = None
            elif k in self.binary:
                out[k] = base64.b64encode(bytes(v)).decode("ascii")
            elif k in self.times:
                out[k] = v.astimezone(timezone.utc).isoformat()
            else:
                out[k] = v
        return out

    def decode(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if v is None:
                out[k] = None
            elif k in self.binary:
                out[k] = base64.b64decode(v, validate=True)
            elif k in self.times:
                out[k] = datetime.fromisoformat(v)
            else:
                out[k] = v
        return out


_CODECS = {str(tbl.name): _Codec.of(tbl) for tbl in BACKED_UP}


def _line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


# --- backup ---------------------------------------------------------------------------------

@asynccontextmanager
async def _read_snapshot(db: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One read-only transaction that sees one consistent state of the whole database."""
    async with db.connect() as conn:
        if db.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:  # WAL: a deferred transaction reads one snapshot from its first read on
            await conn.execution_options(sqlite_begin="DEFERRED")
        async with conn.begin():
            yield conn


async def _schema_revision(conn: AsyncConnection) -> str | None:
    names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    if "alembic_version" not in names:
        return None
    return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def _sequence_values(conn: AsyncConnection) -> dict[str, int]:
    """How far each id sequence has gone (0: never used), outside any transaction's view."""
    out: dict[str, int] = {}
    for table, col in SEQUENCES.items():
        if conn.dialect.name == "postgresql":
            v = (await conn.execute(text("SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence(:t, :c) AS regclass))"),
                                    {"t": table, "c": col})).scalar()
        else:
            v = (await conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})).scalar()
        out[table] = int(v or 0)
    return out


async def _high_water(conn: AsyncConnection) -> dict[str, int]:
    """Per sequence: the greatest number the database has handed out or refers to."""
    seqs = await _sequence_values(conn)
    for table, col in SEQUENCES.items():
        top = (await conn.execute(select(func.max(t.metadata.tables[table].c[col])))).scalar()
        seqs[table] = max(seqs[table], int(top or 0))
    for c in (t.doc_heads.c.last_seq, t.doc_snapshots.c.upto_seq, t.device_doc_acks.c.acked_seq):
        seqs["oplog"] = max(seqs["oplog"], int((await conn.execute(select(func.max(c)))).scalar() or 0))
    return seqs


class _HashingWriter:
    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.lines = 0

    def write(self, data: bytes) -> None:
        self.raw.write(data)
        self.sha.update(data)
        self.lines += 1


async def _dump_table(conn: AsyncConnection, table: Table, out: _HashingWriter, progress: Progress,
                      batch_rows: int) -> int:
    name = str(table.name)
    codec = _CODECS[name]
    n = 0
    result = await conn.stream(select(table).order_by(*table.primary_key.columns)
                               .execution_options(yield_per=batch_rows))
    async for part in result.mappings().partitions(batch_rows):
        for row in part:
            out.write(_line({"t": name, "r": codec.encode(dict(row))}))
        n += len(part)
        progress.advance(len(part))
    return n


async def backup(db: AsyncEngine, path: str | os.PathLike[str], *, progress: Progress | None = None,
                 batch_rows: int = 1000) -> dict[str, Any]:
    """Write a backup of ``db`` to ``path`` (replaced atomically); return a summary."""
    progress = progress or _NoProgress()
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    started = time.monotonic()
    try:
        with open(tmp, "wb") as f:
            async with _read_snapshot(db) as conn:
                counts = {str(tbl.name): int((await conn.execute(select(func.count()).select_from(tbl))).scalar_one())
                          for tbl in BACKED_UP}
                header = {
                    "format": FORMAT, "version": VERSION,
                    "created_at": datetime.now(timezone.utc).isoformat(),
                    "source": {"dialect": db.dialect.name, "schema_revision": await _schema_revision(conn)},
                    "tables": list(_CODECS),
                    "columns": {name: list(codec.columns) for name, codec in _CODECS.items()},
                    "counts": counts,
                    "sequences": await _high_water(conn),
                    "not_included": [str(tbl.name) for tbl in NOT_BACKED_UP],
                }
                progress.start("backing up", sum(counts.values()))
                with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as gz:
                    out = _HashingWriter(gz)
                    out.write(_line(header))
                    for tbl in BACKED_UP:
                        n = await _dump_table(conn, tbl, out, progress, batch_rows)
                        if n != counts[tbl.name]:  # cannot happen inside one snapshot
                            raise BackupError(f"{tbl.name}: counted {counts[tbl.name]} rows but read {n}: "
                                              "the read was not consistent")
                    digest = out.sha.hexdigest()
                    rows = out.lines - 1
                    gz.write(_line({"end": True, "rows": rows, "sha256": digest}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        progress.finish()
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest, "rows": rows,
            "counts": header["counts"], "sequences": header["sequences"], "created_at": header["created_at"],
            "source": header["source"], "not_included": header["not_included"],
            "seconds": round(time.monotonic() - started, 3)}


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reading a backup -----------------------------------------------------------------------

def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ("header", h), ("row", (table, row))..., then ("end", trailer) after checking the
    checksum, the row count and the per-table counts; CorruptBackup on anything wrong."""
    try:
        f = gzip.open(path, "rb")
    except OSError as e:
        raise BackupError(f"cannot open {path}: {e.strerror or e}") from None
    sha = hashlib.sha256()
    prev: bytes | None = None
    header: dict[str, Any] | None = None
    seen: dict[str, int] = {}
    order: list[str] = []
    rows = 0
    try:
        with f:
            for line in f:
                if prev is not None:
                    sha.update(prev)
                    obj = _parse(prev)
                    if header is None:
                        header = _check_header(obj, path)
                        order = list(header["tables"])
                        yield "header", header
                    else:
                        table, row = _check_row(obj, header, order, seen)
                        rows += 1
                        yield "row", (table, row)
                prev = line
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CorruptBackup(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
    except OSError as e:  # gzip reports a CRC/length mismatch as a BadGzipFile (OSError)
        raise CorruptBackup(f"{path} is truncated or corrupt ({e})") from None
    if prev is None or header is None:
        raise CorruptBackup(f"{path} is empty or truncated: no header and trailer")
    trailer = _parse(prev)
    if not (isinstance(trailer, dict) and trailer.get("end") is True and isinstance(trailer.get("sha256"), str)):
        raise CorruptBackup(f"{path} is truncated: the checksum line at its end is missing")
    if trailer["sha256"] != sha.hexdigest():
        raise CorruptBackup(f"{path} is corrupt: its SHA-256 does not match the checksum it carries")
    if trailer.get("rows") != rows or any(seen.get(n, 0) != c for n, c in header["counts"].items()):
        raise CorruptBackup(f"{path} is corrupt: its rows do not match the counts in its header")
    yield "end", trailer


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raise CorruptBackup("a line of the backup is not valid JSON (the file is corrupt)") from None


def _check_header(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CorruptBackup(f"{path} is not a syncd backup")
    if obj.get("version") != VERSION:
        raise BackupError(f"{path} is a version {obj.get('version')!r} backup; this syncd reads version {VERSION}")
    tables, counts, columns = obj.get("tables"), obj.get("counts"), obj.get("columns")
    if (not isinstance(tables, list) or not isinstance(counts, dict) or not isinstance(columns, dict)
            or any(n not in _CODECS for n in tables) or set(counts) != set(tables)):
        raise CorruptBackup(f"{path} has a malformed header")
    return obj


def _check_row(obj: Any, header: dict[str, Any], order: list[str], seen: dict[str, int]) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("r"), dict) or obj.get("t") not in order:
        raise CorruptBackup("a row line of the backup is malformed")
    table = obj["t"]
    idx = order.index(table)
    if any(seen.get(n) for n in order[idx + 1:]):
        raise CorruptBackup(f"rows of {table} appear out of order")
    seen[table] = seen.get(table, 0) + 1
    try:
        return table, _CODECS[table].decode(obj["r"])
    except (ValueError, TypeError) as e:
        raise CorruptBackup(f"a {table} row of the backup cannot be decoded: {e}") from None


def check_backup(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a whole backup file and check it (gzip, checksum, counts); return its header.

    Raises CorruptBackup (or BackupError) when it is not a complete, intact backup.
    """
    header: dict[str, Any] = {}
    for kind, value in _records(Path(path)):
        if kind == "header":
            header = value
    return header


# --- restore --------------------------------------------------------------------------------

async def _check_target(conn: AsyncConnection, header: dict[str, Any]) -> None:
    def inspect_columns(c: Any) -> dict[str, set[str]]:
        insp = inspect(c)
        names = set(insp.get_table_names())
        return {n: {col["name"] for col in insp.get_columns(n)} for n in names}

    have = await conn.run_sync(inspect_columns)
    missing = [tbl.name for tbl in (*BACKED_UP, *NOT_BACKED_UP) if tbl.name not in have]
    if len(missing) == len(BACKED_UP) + len(NOT_BACKED_UP):
        raise NotMigrated("the database has no syncd schema: run `syncd migrate` first")
    if missing or "alembic_version" not in have:
        raise NotMigrated("the database schema is incomplete (missing: " + ", ".join(missing or ["alembic_version"])
                          + "): run `syncd migrate` first")
    for table, cols in header["columns"].items():
        extra = sorted(set(cols) - have.get(table, set()))
        if extra:
            raise NotMigrated(f"the backup's {table} has columns this database lacks ({', '.join(extra)}): "
                              "upgrade with `syncd migrate`")


async def _row_counts(conn: AsyncConnection, tables: tuple[Table, ...]) -> dict[str, int]:
    out = {}
    for tbl in tables:
        n = int((await conn.execute(select(func.count()).select_from(tbl))).scalar_one())
        if n:
            out[tbl.name] = n
    return out


async def _insert(conn: AsyncConnection, table: str | None, rows: list[dict[str, Any]]) -> None:
    if rows and table:
        await conn.execute(t.metadata.tables[table].insert(), rows)


async def _rebuild_projection(conn: AsyncConnection, store: Store, progress: Progress) -> tuple[int, int]:
    """Project every document from snapshot + log; set its head. (documents, rows written)"""
    doc_ids: set[str] = set()
    for col in (t.doc_heads.c.doc_id, t.doc_snapshots.c.doc_id, t.oplog.c.doc_id):
        doc_ids.update((await conn.execute(select(col).distinct())).scalars().all())
    heads = {h["doc_id"]: h for h in await store.heads(conn)}
    progress.start("rebuilding the projection", len(doc_ids))
    pending: list[tuple[str, Delta, int]] = []
    new_heads: list[dict[str, Any]] = []
    written = 0
    for doc_id in sorted(doc_ids):
        try:
            kind, record_id = parse_doc_id(doc_id)
        except ValueError:
            raise BackupError(f"the backup holds an invalid document id {doc_id!r}") from None
        snap = await store.snapshot(conn, doc_id)
        entries = await store.entries(conn, doc_id, after_seq=snap[1] if snap else 0)
        last = max([snap[1] if snap else 0] + [e.seq for e in entries])
        try:
            live = LiveDoc.build(doc_id, snap[0] if snap else None, [e.update for e in entries])
        except Exception as e:
            raise BackupError(f"document {doc_id} cannot be rebuilt from its log: {e}") from None
        rows = rows_for_view(kind, record_id, live.view)
        # the rows a first commit would write, without its events (the events are restored)
        delta = Delta(upserts={name: list(getattr(rows, name).values())
                               for name in ("customers", "jobs", "materials", "notes") if getattr(rows, name)},
                      assignment_inserts=sorted(rows.job_assignments))
        pending.append((doc_id, delta, last))
        head = heads.get(doc_id)
        if head is None or (head["kind"], head["record_id"], head["last_seq"], head["projected_seq"]) != (
                kind, record_id, last, last):
            new_heads.append({"doc_id": doc_id, "kind": kind, "record_id": record_id, "last_seq": last,
                              "projected_seq": last})
        if len(pending) >= _REBUILD_BATCH:
            written += await store.write_deltas(conn, pending)
            progress.advance(len(pending))
            pending = []
    if pending:
        written += await store.write_deltas(conn, pending)
        progress.advance(len(pending))
    await store.upsert_heads(conn, new_heads)
    return len(doc_ids), written


async def _set_sequences(conn: AsyncConnection, source: dict[str, Any], seq_gap: int) -> dict[str, int]:
    """Move each id sequence past the restored ids and the source's high-water mark; return
    the last value each now stands at (the next id is one more)."""
    here = await _high_water(conn)  # the restored ids, and anything this database handed out before
    out = {}
    for table, col in SEQUENCES.items():
        try:
            src = int(source.get(table) or 0)
        except (TypeError, ValueError):
            src = 0
        top = max(src + (seq_gap if table == "oplog" else 0), here[table])
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT setval(pg_get_serial_sequence(:t, :c), :v, :called)"),
                               {"t": table, "c": col, "v": max(top, 1), "called": top > 0})
        else:
            res = await conn.execute(text("UPDATE sqlite_sequence SET seq = :v WHERE name = :t"), {"t": table, "v": top})
            if not res.rowcount:
                await conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), {"t": table, "v": top})
        out[table] = top
    return out


async def restore(db: AsyncEngine, path: str | os.PathLike[str], *, force: bool = False,
                  progress: Progress | None = None, seq_gap: int = DEFAULT_SEQ_GAP) -> dict[str, Any]:
    """Restore a backup into ``db`` (empty and migrated, or ``force``); return a summary.

    Raises CorruptBackup (file damaged: nothing written), NotEmpty, NotMigrated or BackupError;
    on any error the database is unchanged.
    """
    if seq_gap < 0:
        raise ValueError("seq_gap must be >= 0")
    progress = progress or _NoProgress()
    path = Path(path)
    started = time.monotonic()
    try:
        header = await asyncio.to_thread(check_backup, path)  # the whole file, before any write
        store = Store(db.dialect.name)
        async with db.begin() as conn:
            await _check_target(conn, header)
            if db.dialect.name == "postgresql":  # keep writers out until the restore commits
                names = ", ".join(tbl.name for tbl in (*BACKED_UP, *NOT_BACKED_UP))
                await conn.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
            present = await _row_counts(conn, (*BACKED_UP, *NOT_BACKED_UP))
            if present and not force:
                raise NotEmpty("the database is not empty (it holds rows in "
                               + ", ".join(f"{k} ({v})" for k, v in present.items())
                               + "); restore into an empty, migrated database, or pass --force to delete "
                                 "everything in it first")
            deleted = 0
            if present:
                for tbl in reversed(t.metadata.sorted_tables):
                    if tbl.name in present:
                        deleted += (await conn.execute(delete(tbl))).rowcount or 0
            progress.start("restoring rows", sum(header["counts"].values()))
            batch: list[dict[str, Any]] = []
            current: str | None = None
            for kind, value in _records(path):  # read again, checked again, inside the transaction
                if kind != "row":
                    continue
                table, row = value
                if batch and (table != current or len(batch) >= _INSERT_BATCH):
                    await _insert(conn, current, batch)
                    progress.advance(len(batch))
                    batch = []
                current = table
                batch.append(row)
            if batch:
                await _insert(conn, current, batch)
                progress.advance(len(batch))
            documents, projected = await _rebuild_projection(conn, store, progress)
            sequences = await _set_sequences(conn, header.get("sequences") or {}, seq_gap)
    finally:
        progress.finish()
    return {"path": str(path), "restored": header["counts"], "documents": documents, "projection_rows": projected,
            "deleted_rows": deleted, "sequences": sequences, "source": header["source"],
            "backup_created_at": header["created_at"], "not_included": header.get("not_included", []),
            "seconds": round(time.monotonic() - started, 3)}
