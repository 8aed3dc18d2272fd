"""A device's durable state in one SQLite file (aiosqlite, WAL, synchronous=FULL).

    meta     (key, value)                  identity, clock and schema facts
    updates  (id, doc_id, data, origin, acked, created)
             origin 'local'  = written here; acked = 0 while it waits in the outbox
             origin 'remote' = received from the server (always acked = 1)
    cursors  (doc_id, seq)                 how far each document was pulled

Every method that writes runs exactly one SQLite transaction, so a crash leaves either all
or nothing of it. Writers are serialized by a lock: an edit's update is appended in the
order the edits were made.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Iterable, Mapping

import aiosqlite
from pycrdt import merge_updates

__all__ = ["Store", "OutboxRow", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

#: ``(update_id, doc_id, data)`` of one unacknowledged local update.
OutboxRow = tuple[int, str, bytes]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    data BLOB NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('local', 'remote')),
    acked INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_doc ON updates (doc_id, acked, id);
CREATE TABLE IF NOT EXISTS cursors (doc_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class Store:
    """The SQLite persistence of one replica. Open with :meth:`Store.open`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> "Store":
        """Open (creating if needed) the store at ``path`` (``":memory:"`` for tests)."""
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            async with db.execute("PRAGMA user_version") as cur:
                (version,) = await cur.fetchone()  # type: ignore[misc]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"store schema {version} is newer than this code ({SCHEMA_VERSION})")
            await db.executescript(_SCHEMA)
            await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        """Close the connection (waits for a write in progress)."""
        async with self._lock:
            await self._db.close()

    # --- one-commit writes ----------------------------------------------------------------

    async def _write(self, statements: Iterable[tuple[str, tuple]]) -> list[int | None]:
        """Run ``statements`` in one transaction; return each statement's lastrowid."""
        async with self._lock:
            return await self._write_locked(statements)

    async def _write_locked(self, statements: Iterable[tuple[str, tuple]]) -> list[int | None]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            ids = []
            for sql, args in statements:
                cur = await self._db.execute(sql, args)
                ids.append(cur.lastrowid)
                await cur.close()
            await self._db.execute("COMMIT")
        except BaseException:
            try:
                await self._db.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass  # no transaction left: the COMMIT ran before a cancellation landed
            raise
        return ids

    @staticmethod
    def _meta_sql(meta: Mapping[str, object]) -> list[tuple[str, tuple]]:
        return [("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (k, str(v))) for k, v in meta.items()]

    async def set_meta(self, **meta: object) -> None:
        """Upsert meta keys (values stored as text) in one commit."""
        await self._write(self._meta_sql(meta))

    async def append_local(self, doc_id: str, data: bytes | None, meta: Mapping[str, object]) -> int | None:
        """Append a local update to the outbox together with ``meta`` (the clock) in one commit.

        Returns the update id (None when ``data`` is None: only ``meta`` is written).
        """
        stmts = []
        if data is not None:
            stmts.append(("INSERT INTO updates(doc_id, data, origin, acked, created) VALUES (?, ?, 'local', 0, ?)",
                          (doc_id, data, time.time())))
        ids = await self._write(stmts + self._meta_sql(meta))
        return ids[0] if data is not None else None

    async def append_remote(self, doc_id: str, data: bytes | None, seq: int | None,
                            meta: Mapping[str, object]) -> None:
        """Store a received update, the doc's new cursor and ``meta`` in one commit."""
        stmts = []
        if data is not None:
            stmts.append(("INSERT INTO updates(doc_id, data, origin, acked, created) VALUES (?, ?, 'remote', 1, ?)",
                          (doc_id, data, time.time())))
        if seq is not None:
            stmts.append(("INSERT INTO cursors(doc_id, seq) VALUES (?, ?) "
                          "ON CONFLICT(doc_id) DO UPDATE SET seq = excluded.seq", (doc_id, seq)))
        await self._write(stmts + self._meta_sql(meta))

    async def append_remote_many(self, items: list[tuple[str, bytes | None, int | None]],
                                 meta: Mapping[str, object]) -> None:
        """:meth:`append_remote` for several ``(doc_id, data, seq)`` at once: one commit."""
        stmts: list[tuple[str, tuple]] = []
        now = time.time()
        for doc_id, data, seq in items:
            if data is not None:
                stmts.append(("INSERT INTO updates(doc_id, data, origin, acked, created) VALUES (?, ?, 'remote', 1, ?)",
                              (doc_id, data, now)))
            if seq is not None:
                stmts.append(("INSERT INTO cursors(doc_id, seq) VALUES (?, ?) "
                              "ON CONFLICT(doc_id) DO UPDATE SET seq = excluded.seq", (doc_id, seq)))
        await self._write(stmts + self._meta_sql(meta))

    async def mark_acked(self, ids: Iterable[int], meta: Mapping[str, object]) -> None:
        """Mark outbox updates acknowledged, with ``meta`` (clock offset), in one commit."""
        await self._write([("UPDATE updates SET acked = 1 WHERE id = ? AND origin = 'local'", (i,)) for i in ids]
                          + self._meta_sql(meta))

    async def compact(self, doc_id: str, threshold: int) -> bool:
        """Fold the doc's acked updates into one merged row once there are more than ``threshold``.

        The new row is the merge of every stored row up to the newest acked one (unacked rows
        included, which is harmless: applying content twice changes nothing); the unacked
        outbox rows themselves stay, so they are still pushed. Returns True if it compacted.
        """
        async with self._lock:  # nothing may drop or ack rows of this doc meanwhile
            count, up_to = await self.acked_stats(doc_id)
            if count <= threshold:
                return False
            rows = [bytes(d) for (d,) in await self._rows(
                "SELECT data FROM updates WHERE doc_id = ? AND id <= ? ORDER BY id", (doc_id, up_to))]
            merged = merge_updates(*rows)
            await self._write_locked([
                ("DELETE FROM updates WHERE doc_id = ? AND acked = 1 AND id <= ?", (doc_id, up_to)),
                ("INSERT INTO updates(doc_id, data, origin, acked, created) VALUES (?, ?, 'remote', 1, ?)",
                 (doc_id, merged, time.time())),
            ])
            return True

    async def compact_many(self, doc_ids: Iterable[str], threshold: int) -> list[str]:
        """:meth:`compact` for several documents, counting their acked rows in one read first;
        returns the documents compacted."""
        wanted = sorted(set(doc_ids))
        over: list[str] = []
        for k in range(0, len(wanted), 500):  # within SQLite's bound on parameters
            part = wanted[k:k + 500]
            over += [d for d, n in await self._rows(
                f"SELECT doc_id, COUNT(*) FROM updates WHERE acked = 1 AND doc_id IN ({','.join('?' * len(part))}) "
                "GROUP BY doc_id", tuple(part)) if n > threshold]
        return [d for d in over if await self.compact(d, threshold)]

    async def drop_doc(self, doc_id: str) -> bool:
        """Delete a document's stored updates and cursor in one commit, unless it has
        unacknowledged local updates (then nothing is deleted). Returns True if dropped."""
        async with self._lock:
            if await self._rows("SELECT 1 FROM updates WHERE doc_id = ? AND origin = 'local' AND acked = 0 LIMIT 1",
                                (doc_id,)):
                return False
            await self._write_locked([("DELETE FROM updates WHERE doc_id = ?", (doc_id,)),
                                      ("DELETE FROM cursors WHERE doc_id = ?", (doc_id,))])
            return True

    # --- reads ------------------------------------------------------------------------------

    async def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def meta(self) -> dict[str, str]:
        """Every meta key and value."""
        return dict(await self._rows("SELECT key, value FROM meta"))  # type: ignore[arg-type]

    async def updates_by_doc(self) -> dict[str, list[bytes]]:
        """All stored updates, grouped by document, in storage order."""
        out: dict[str, list[bytes]] = {}
        for doc_id, data in await self._rows("SELECT doc_id, data FROM updates ORDER BY id"):
            out.setdefault(doc_id, []).append(bytes(data))
        return out

    async def doc_updates(self, doc_id: str) -> list[bytes]:
        """The stored updates of one document, in storage order."""
        return [bytes(d) for (d,) in await self._rows("SELECT data FROM updates WHERE doc_id = ? ORDER BY id",
                                                      (doc_id,))]

    async def pending(self, doc_id: str | None = None) -> list[OutboxRow]:
        """Unacknowledged local updates (the outbox), oldest first."""
        sql = "SELECT id, doc_id, data FROM updates WHERE origin = 'local' AND acked = 0"
        args: tuple = ()
        if doc_id is not None:
            sql, args = sql + " AND doc_id = ?", (doc_id,)
        return [(i, d, bytes(b)) for i, d, b in await self._rows(sql + " ORDER BY id", args)]

    async def acked_stats(self, doc_id: str) -> tuple[int, int]:
        """``(count, max id)`` of the doc's acknowledged rows (remote ones included)."""
        rows = await self._rows("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM updates WHERE doc_id = ? AND acked = 1",
                                (doc_id,))
        return rows[0][0], rows[0][1]

    async def cursors(self, doc_ids: Iterable[str] | None = None) -> dict[str, int]:
        """The last pulled sequence numbers of several documents (all when None), in one read."""
        rows = await self._rows("SELECT doc_id, seq FROM cursors")
        if doc_ids is None:
            return {d: s for d, s in rows}
        wanted = set(doc_ids)
        return {d: s for d, s in rows if d in wanted}

    async def cursor(self, doc_id: str) -> int | None:
        """The last pulled sequence number of a document, or None."""
        rows = await self._rows("SELECT seq FROM cursors WHERE doc_id = ?", (doc_id,))
        return rows[0][0] if rows else None
