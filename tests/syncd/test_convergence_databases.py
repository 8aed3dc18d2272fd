"""The same updates give the same SQL projection on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timezone

from sqlalchemy import select

from schema import documents as D
from schema import tables as t
from schema.db import create_engine
from syncd.engine import EngineConfig, SyncEngine
from syncd.errors import SyncError, UnknownDocument
from syncd.verify import verify

from test_convergence import Replica, apply_edit, OWNERS  # type: ignore[import-not-found]

TABLES = ("customers", "jobs", "job_assignments", "materials", "notes")


class Recorder:
    """Pushes to an engine and records the exact sequence (principal, doc, update, outcome)."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine, self.log = engine, []

    async def push(self, principal, doc_id: str, update: bytes):
        try:
            ack = await self.engine.push(principal, doc_id, update)
            self.log.append((principal, doc_id, update, "ok"))
            return ack
        except SyncError as e:
            self.log.append((principal, doc_id, update, e.code))
            raise


async def _users(db, team) -> None:
    async with db.begin() as conn:
        for uid, role in team:
            await conn.execute(t.users.insert().values(id=uid, email=f"{uid[:8]}@x.test", name=role, role=role,
                                                       active=True, created_at=datetime.now(timezone.utc)))


async def _tables(db) -> dict[str, list[dict]]:
    out = {}
    async with db.connect() as conn:
        for name in TABLES:
            tbl = t.metadata.tables[name]
            rows = [dict(r._mapping) for r in (await conn.execute(select(tbl))).all()]
            for r in rows:
                r.pop("last_seq", None)  # log positions legitimately differ between databases
            out[name] = sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))
    return out


async def test_one_schedule_projects_identically_on_sqlite_and_postgres(sqlite_url, pg_url):
    rnd = random.Random(20261122)
    team = [(str(uuid.UUID(int=rnd.getrandbits(128), version=4)), r) for r in ("owner", "office", "crew", "crew")]
    dbs = [create_engine(sqlite_url), create_engine(pg_url)]
    try:
        for db in dbs:
            await _users(db, team)
        reps = [Replica(uid, role) for uid, role in team]
        OWNERS[:] = [reps[1].principal.user_id, reps[2].principal.user_id]
        docs = [f"job:{uuid.UUID(int=rnd.getrandbits(128), version=4)}" for _ in range(2)]
        async with SyncEngine(dbs[0], EngineConfig(paranoid=True)) as first:
            rec = Recorder(first)
            for doc_id in docs:
                reps[1].local(doc_id, lambda d, s: D.write_fields(
                    d, {"title": "job", "status": "scheduled", "owner_id": reps[1].principal.user_id}, **s))
            for step in range(120):
                rep = rnd.choice(reps)
                doc_id = rnd.choice(docs)
                if rnd.random() < 0.6:
                    apply_edit(rep, doc_id, rnd.randrange(8), rnd)
                elif rep.outbox:
                    i = rnd.randrange(len(rep.outbox))  # any outbox entry: out of order on purpose
                    d, u = rep.outbox[i]
                    try:
                        await rec.push(rep.principal, d, u)
                        rep.outbox.pop(i)
                    except SyncError:
                        pass
                else:
                    try:
                        res = await first.pull(rep.principal, doc_id, rep.doc(doc_id).get_state())
                    except UnknownDocument:
                        continue  # nobody has pushed this job yet
                    rep.apply(doc_id, res.update)
            for rep in reps:  # reconnect: everything in order
                for d, u in rep.outbox:
                    await rec.push(rep.principal, d, u)
        assert any(o == "ok" for *_, o in rec.log) and any(o != "ok" for *_, o in rec.log)
        async with SyncEngine(dbs[1], EngineConfig(paranoid=True)) as second:
            for principal, doc_id, update, outcome in rec.log:  # the same pushes, in the same order
                try:
                    await second.push(principal, doc_id, update)
                    got = "ok"
                except SyncError as e:
                    got = e.code
                assert got == outcome
        a, b = await _tables(dbs[0]), await _tables(dbs[1])
        assert a["jobs"] and a["materials"]
        assert a == b
        for db in dbs:
            assert (await verify(db)).ok
    finally:
        for db in dbs:
            await db.dispose()
