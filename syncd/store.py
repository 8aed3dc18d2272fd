"""The engine's SQL access: op log, heads, snapshots, bindings, acks and projection writes.

One code path for SQLite and PostgreSQL (SQLAlchemy 2 Core, async); upserts use each
dialect's ``INSERT .. ON CONFLICT``. Nothing here decides anything: the engine does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import orjson
from sqlalchemy import and_, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from schema import tables as t

from .projection import Delta, Event

__all__ = ["LogEntry", "Store"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    doc_id: str
    digest: bytes
    update: bytes
    user_id: str
    device_id: str


class Store:
    """Stateless helpers bound to a dialect name ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str, *, local_ids: bool = False) -> None:
        self.dialect = dialect
        #: SQLite with one writing process: ids are handed out from memory after the first
        #: read of the high-water mark (two queries per table per batch otherwise)
        self.local_ids = local_ids and dialect == "sqlite"
        self._next_ids: dict[str, int] = {}
        self.last_event_ids: list[int] = []
        self._upserts: dict[tuple[str, tuple[str, ...]], Any] = {}  # ids of the events the last write_deltas inserted
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # Statements of the hot path, built once: building an upsert (its ``excluded`` alias)
        # or an IN-list select costs more than executing it on a one-update batch; expanding
        # bind parameters keep one cached compilation for any list length.
        ids = bindparam("ids", expanding=True)
        self._heads_of = select(t.doc_heads.c.doc_id, t.doc_heads.c.last_seq).where(t.doc_heads.c.doc_id.in_(ids))
        self._snapshots = select(t.doc_snapshots.c.doc_id, t.doc_snapshots.c.state,
                                 t.doc_snapshots.c.upto_seq).where(t.doc_snapshots.c.doc_id.in_(ids))
        self._entries_many = (select(t.oplog).where(t.oplog.c.doc_id.in_(ids))
                              .order_by(t.oplog.c.doc_id, t.oplog.c.seq))
        self._bindings_of = select(t.client_bindings.c.client_id, t.client_bindings.c.device_id).where(
            t.client_bindings.c.client_id.in_(ids))
        heads = self._insert(t.doc_heads)
        self._upsert_heads = heads.on_conflict_do_update(
            index_elements=[t.doc_heads.c.doc_id],
            set_={"last_seq": heads.excluded.last_seq, "projected_seq": heads.excluded.projected_seq,
                  "updated_at": heads.excluded.updated_at})
        acks = self._insert(t.device_doc_acks)
        self._upsert_acks = acks.on_conflict_do_update(
            index_elements=[t.device_doc_acks.c.device_id, t.device_doc_acks.c.doc_id],
            set_={"acked_seq": acks.excluded.acked_seq, "updated_at": acks.excluded.updated_at})
        self._oplog_insert = t.oplog.insert()

    # --- log -------------------------------------------------------------------------
    async def append(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
        """Append log entries in order; return their sequence numbers (same order).

        The caller holds the write lock for these documents, so the numbers are reserved
        first (one round trip) and the rows inserted with a plain executemany, which is
        several times cheaper than INSERT .. RETURNING per row.
        """
        seqs = await self._reserve(conn, "oplog", "seq", len(rows))
        now = _now()
        await conn.execute(self._oplog_insert, [{**r, "seq": s, "received_at": now} for r, s in zip(rows, seqs)])
        return seqs

    async def _reserve(self, conn: AsyncConnection, table: str, column: str, n: int) -> list[int]:
        """``n`` new ids of an autoincrement column, taken before inserting (the caller holds
        the write lock: PostgreSQL sequences are safe anyway; SQLite has one writer)."""
        from sqlalchemy import text
        if self.dialect == "postgresql":
            res = await conn.execute(text(f"SELECT nextval(pg_get_serial_sequence('{table}', '{column}')) "
                                          "FROM generate_series(1, :n)"), {"n": n})
            return [r[0] for r in res.all()]
        top = self._next_ids.get(table) if self.local_ids else None
        if top is None:
            res = await conn.execute(text("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = :t"),
                                     {"t": table})
            top = res.scalar_one() or 0
            col = t.metadata.tables[table].c[column]
            top = max(top, (await conn.execute(select(func.coalesce(func.max(col), 0)))).scalar_one())
        if self.local_ids:
            self._next_ids[table] = top + n
        return list(range(top + 1, top + n + 1))

    def forget_ids(self) -> None:
        """A transaction failed: read the high-water marks again before the next one."""
        self._next_ids.clear()

    async def find_digests(self, conn: AsyncConnection, doc_id: str, digests: Sequence[bytes]) -> dict[bytes, int]:
        if not digests:
            return {}
        res = await conn.execute(select(t.oplog.c.digest, t.oplog.c.seq).where(
            t.oplog.c.doc_id == doc_id, t.oplog.c.digest.in_(list(digests))))
        return {bytes(d): s for d, s in res.all()}

    async def entries(self, conn: AsyncConnection, doc_id: str, after_seq: int = 0,
                      upto_seq: int | None = None, exclude_device: str | None = None) -> list[LogEntry]:
        q = select(t.oplog).where(t.oplog.c.doc_id == doc_id, t.oplog.c.seq > after_seq)
        if upto_seq is not None:
            q = q.where(t.oplog.c.seq <= upto_seq)
        if exclude_device is not None:
            q = q.where(t.oplog.c.device_id != exclude_device)
        res = await conn.execute(q.order_by(t.oplog.c.seq))
        return [LogEntry(r.seq, r.doc_id, bytes(r.digest), bytes(r.update), r.user_id, r.device_id)
                for r in res.all()]

    async def entries_many(self, conn: AsyncConnection, doc_ids: Sequence[str],
                           after: dict[str, int]) -> dict[str, list[LogEntry]]:
        """The log of several documents (each after its snapshot's ``after`` seq), in order."""
        out: dict[str, list[LogEntry]] = {}
        if not doc_ids:
            return out
        res = await conn.execute(self._entries_many, {"ids": list(doc_ids)})
        for r in res.all():
            if r.seq > after.get(r.doc_id, 0):
                out.setdefault(r.doc_id, []).append(
                    LogEntry(r.seq, r.doc_id, bytes(r.digest), bytes(r.update), r.user_id, r.device_id))
        return out

    async def snapshots(self, conn: AsyncConnection, doc_ids: Sequence[str]) -> dict[str, tuple[bytes, int]]:
        if not doc_ids:
            return {}
        res = await conn.execute(self._snapshots, {"ids": list(doc_ids)})
        return {d: (bytes(st), up) for d, st, up in res.all()}

    async def heads_of(self, conn: AsyncConnection, doc_ids: Sequence[str]) -> dict[str, int]:
        """doc_id -> last_seq of these documents (absent: no such document)."""
        if not doc_ids:
            return {}
        res = await conn.execute(self._heads_of, {"ids": list(doc_ids)})
        return {d: last for d, last in res.all()}

    async def snapshot(self, conn: AsyncConnection, doc_id: str) -> tuple[bytes, int] | None:
        r = (await conn.execute(select(t.doc_snapshots.c.state, t.doc_snapshots.c.upto_seq).where(
            t.doc_snapshots.c.doc_id == doc_id))).first()
        return None if r is None else (bytes(r[0]), r[1])

    async def head(self, conn: AsyncConnection, doc_id: str) -> dict[str, Any] | None:
        r = (await conn.execute(select(t.doc_heads).where(t.doc_heads.c.doc_id == doc_id))).first()
        return None if r is None else dict(r._mapping)

    async def heads(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        res = await conn.execute(select(t.doc_heads).order_by(t.doc_heads.c.doc_id))
        return [dict(r._mapping) for r in res.all()]

    async def lock_heads(self, conn: AsyncConnection, doc_ids: list[str]) -> dict[str, int]:
        """Serialize writers of these documents across processes for this transaction and
        return their committed heads (doc_id -> last_seq; absent = new document).

        PostgreSQL: transaction-scoped advisory locks taken in sorted order (no deadlock);
        SQLite: the transaction already holds the database write lock (BEGIN IMMEDIATE).
        """
        if self.dialect == "postgresql" and doc_ids:
            from sqlalchemy import text
            # one round trip; the sorted subquery fixes the order locks are taken in
            await conn.execute(text(
                "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(d, 0) AS h "
                "FROM unnest(CAST(:ids AS text[])) AS d ORDER BY h) AS s"), {"ids": sorted(doc_ids)})
        return await self.heads_of(conn, doc_ids)

    async def upsert_heads(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        now = _now()
        await conn.execute(self._upsert_heads, [{**r, "updated_at": now} for r in rows])

    # --- devices and client ids --------------------------------------------------------
    async def user_exists(self, conn: AsyncConnection, user_id: str) -> bool:
        return (await conn.execute(select(t.users.c.id).where(t.users.c.id == user_id))).first() is not None

    async def device_owner(self, conn: AsyncConnection, device_id: str) -> str | None:
        r = (await conn.execute(select(t.devices.c.user_id).where(t.devices.c.id == device_id))).first()
        return None if r is None else r[0]

    async def add_device(self, conn: AsyncConnection, device_id: str, user_id: str) -> None:
        now = _now()
        ins = self._insert(t.devices).values(id=device_id, user_id=user_id, created_at=now, last_seen_at=now)
        await conn.execute(ins.on_conflict_do_nothing(index_elements=[t.devices.c.id]))

    async def touch_devices(self, conn: AsyncConnection, device_ids: Iterable[str]) -> None:
        ids = sorted(set(device_ids))
        if ids:
            await conn.execute(t.devices.update().where(t.devices.c.id.in_(ids)).values(last_seen_at=_now()))

    async def client_bindings(self, conn: AsyncConnection, client_ids: Sequence[int]) -> dict[int, str]:
        if not client_ids:
            return {}
        res = await conn.execute(self._bindings_of, {"ids": list(client_ids)})
        return {c: d for c, d in res.all()}

    async def bind_clients(self, conn: AsyncConnection, bindings: dict[int, str]) -> None:
        if bindings:
            now = _now()
            await conn.execute(t.client_bindings.insert(),
                               [{"client_id": c, "device_id": d, "created_at": now} for c, d in bindings.items()])

    async def record_ack(self, conn: AsyncConnection, device_id: str, doc_id: str, seq: int) -> None:
        await conn.execute(self._upsert_acks, [{"device_id": device_id, "doc_id": doc_id, "acked_seq": seq,
                                                "updated_at": _now()}])

    async def record_acks(self, conn: AsyncConnection, device_id: str, acks: list[tuple[str, int]]) -> None:
        """Several documents' acknowledgements of one device (one executemany)."""
        if not acks:
            return
        now = _now()
        await conn.execute(self._upsert_acks,
                           [{"device_id": device_id, "doc_id": d, "acked_seq": s, "updated_at": now} for d, s in acks])

    async def min_ack(self, conn: AsyncConnection, doc_id: str) -> int | None:
        r = (await conn.execute(select(func.min(t.device_doc_acks.c.acked_seq)).where(
            t.device_doc_acks.c.doc_id == doc_id))).first()
        return None if r is None else r[0]

    # --- projection -------------------------------------------------------------------
    async def write_deltas(self, conn: AsyncConnection, deltas: list[tuple[str, Delta, int]]) -> int:
        """Write the projection deltas of several documents; return the number of rows written."""
        by_table: dict[str, list[dict[str, Any]]] = {}
        ins_assign: list[dict[str, str]] = []
        del_assign: list[tuple[str, str]] = []
        events: list[dict[str, Any]] = []
        now = _now()
        for doc_id, d, seq in deltas:
            for table, rows in d.upserts.items():
                for r in rows:
                    by_table.setdefault(table, []).append({**r, "last_seq": seq} if table != "notes" else r)
            ins_assign += [{"job_id": j, "user_id": u} for j, u in d.assignment_inserts]
            del_assign += d.assignment_deletes
            events += [self._event_row(doc_id, e, seq, now) for e in d.events]
        n = 0
        for table, rows in by_table.items():
            await conn.execute(self._upsert(table, tuple(c for c in rows[0] if c != "id")), rows)
            n += len(rows)
        if del_assign:
            await conn.execute(delete(t.job_assignments).where(
                tuple_(t.job_assignments.c.job_id, t.job_assignments.c.user_id).in_(del_assign)))
            n += len(del_assign)
        if ins_assign:
            ins = self._insert(t.job_assignments)
            await conn.execute(ins.on_conflict_do_nothing(), ins_assign)
            n += len(ins_assign)
        self.last_event_ids = []
        if events:
            ids = await self._reserve(conn, "events", "id", len(events))
            for e, i in zip(events, ids):
                e["id"] = i
            await conn.execute(t.events.insert(), events)
            self.last_event_ids = ids
            n += len(events)
        return n

    def _upsert(self, table: str, cols: tuple[str, ...]) -> Any:
        """``INSERT .. ON CONFLICT (id) DO UPDATE`` for these columns, built once per shape
        (rebuilding it for every batch showed up in the server's profile)."""
        key = (table, cols)
        stmt = self._upserts.get(key)
        if stmt is None:
            tbl = t.metadata.tables[table]
            ins = self._insert(tbl)
            stmt = ins.on_conflict_do_update(index_elements=[tbl.c.id],
                                             set_={c: getattr(ins.excluded, c) for c in cols})
            self._upserts[key] = stmt
        return stmt

    @staticmethod
    def _event_row(doc_id: str, e: Event, seq: int, now: datetime) -> dict[str, Any]:
        return {"doc_id": doc_id, "record_type": e.record_type, "record_id": e.record_id, "type": e.type,
                "payload": orjson.loads(orjson.dumps(e.payload)), "actor": e.actor, "ts": e.ts, "seq": seq,
                "created_at": now}

    async def projected_rows(self, conn: AsyncConnection, kind: str, record_id: str) -> dict[str, Any]:
        """The rows currently in the tables for one document (for verify)."""
        out: dict[str, Any] = {}
        if kind == "customer":
            r = (await conn.execute(select(t.customers).where(t.customers.c.id == record_id))).first()
            out["customers"] = {} if r is None else {record_id: dict(r._mapping)}
            return out
        r = (await conn.execute(select(t.jobs).where(t.jobs.c.id == record_id))).first()
        out["jobs"] = {} if r is None else {record_id: dict(r._mapping)}
        res = await conn.execute(select(t.job_assignments).where(t.job_assignments.c.job_id == record_id))
        out["job_assignments"] = {(a.job_id, a.user_id) for a in res.all()}
        res = await conn.execute(select(t.materials).where(t.materials.c.job_id == record_id))
        out["materials"] = {m.id: dict(m._mapping) for m in res.all()}
        res = await conn.execute(select(t.notes).where(t.notes.c.job_id == record_id))
        out["notes"] = {m.id: dict(m._mapping) for m in res.all()}
        return out

    # --- compaction -------------------------------------------------------------------
    async def write_snapshot(self, conn: AsyncConnection, doc_id: str, state: bytes, upto_seq: int,
                             folded: int) -> int:
        ins = self._insert(t.doc_snapshots).values(doc_id=doc_id, state=state, upto_seq=upto_seq,
                                                   folded_entries=folded, updated_at=_now())
        await conn.execute(ins.on_conflict_do_update(
            index_elements=[t.doc_snapshots.c.doc_id],
            set_={"state": ins.excluded.state, "upto_seq": ins.excluded.upto_seq,
                  "folded_entries": t.doc_snapshots.c.folded_entries + ins.excluded.folded_entries,
                  "updated_at": ins.excluded.updated_at}))
        res = await conn.execute(delete(t.oplog).where(and_(t.oplog.c.doc_id == doc_id, t.oplog.c.seq <= upto_seq)))
        return res.rowcount or 0

    async def log_bytes(self, conn: AsyncConnection, doc_id: str) -> tuple[int, int]:
        """(bytes of log entries, bytes of snapshot) for one document."""
        a = (await conn.execute(select(func.coalesce(func.sum(func.length(t.oplog.c.update)), 0)).where(
            t.oplog.c.doc_id == doc_id))).scalar_one()
        b = (await conn.execute(select(func.coalesce(func.sum(func.length(t.doc_snapshots.c.state)), 0)).where(
            t.doc_snapshots.c.doc_id == doc_id))).scalar_one()
        return int(a), int(b)
