"""The acceptance path: durable, idempotent, validated, and nothing changes on refusal."""

from __future__ import annotations

import os
import uuid

import pytest
from pycrdt import Doc, Map
from sqlalchemy import func, select

from conflict_rules.hlc import format_ts
from schema import documents as D
from schema import tables as t
from syncd.errors import (ClientIdConflict, ClockSkew, Forbidden, MalformedUpdate, MissingDependencies,
                          SchemaViolation, UpdateTooLarge)

from engine_helpers import BareDevice, job_doc, customer_doc  # type: ignore[import-not-found]


async def count(db, table) -> int:
    async with db.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def rows(db, table):
    async with db.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(select(table))).all()]


async def test_push_is_durable_projected_and_evented(engine, db_engine, office):
    doc_id = job_doc()
    cust = str(uuid.uuid4())
    u = office.set_fields(doc_id, customer_id=cust, title="Kitchen remodel", status="scheduled",
                          owner_id=office.principal.user_id, estimate=12000)
    ack = await engine.push(office.principal, doc_id, u)
    assert ack.seq > 0 and not ack.duplicate
    jobs = await rows(db_engine, t.jobs)
    assert len(jobs) == 1
    assert jobs[0]["title"] == "Kitchen remodel" and jobs[0]["status"] == "scheduled"
    assert jobs[0]["estimate"] == 12000 and jobs[0]["customer_id"] == cust
    events = await rows(db_engine, t.events)
    assert [e["type"] for e in events] == ["job.created"]
    assert events[0]["actor"] == office.principal.user_id
    heads = await rows(db_engine, t.doc_heads)
    assert heads[0]["last_seq"] == heads[0]["projected_seq"] == ack.seq


async def test_same_update_twice_gives_one_entry_and_the_same_answer(engine, db_engine, office):
    doc_id = job_doc()
    u = office.set_fields(doc_id, title="Deck")
    a1 = await engine.push(office.principal, doc_id, u)
    a2 = await engine.push(office.principal, doc_id, u)
    assert a2.seq == a1.seq and a2.duplicate
    assert await count(db_engine, t.oplog) == 1


async def test_status_change_and_material_events(engine, db_engine, office):
    doc_id = job_doc()
    mid = D.new_id()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Bath", status="scheduled"))
    await engine.push(office.principal, doc_id, office.edit(doc_id, lambda d, s: (
        D.write_material_field(d, mid, "name", "2x4 studs", **s),
        D.write_material_field(d, mid, "quantity", 12, **s))))
    await engine.push(office.principal, doc_id, office.edit(doc_id, lambda d, s: D.write_material_field(
        d, mid, "purchased", True, **s)))
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, status="in_progress"))
    types = [e["type"] for e in await rows(db_engine, t.events)]
    assert types == ["job.created", "material.added", "material.purchased", "job.status_changed"]
    mats = await rows(db_engine, t.materials)
    assert mats[0]["purchased"] is True and mats[0]["quantity"] == 12


@pytest.mark.parametrize("bad", [b"", b"\x01", os.urandom(64), b"\xff" * 40])
async def test_malformed_bytes_are_refused_and_change_nothing(engine, db_engine, office, bad):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Roof"))
    before = await count(db_engine, t.oplog)
    with pytest.raises(MalformedUpdate):
        await engine.push(office.principal, doc_id, bad)
    assert await count(db_engine, t.oplog) == before
    assert (await engine.view(doc_id)).record["title"] == "Roof"


async def test_truncated_update_is_refused(engine, office):
    doc_id = job_doc()
    u = office.set_fields(doc_id, title="Garage", description="x" * 100)
    for cut in (1, len(u) // 2, len(u) - 1):
        with pytest.raises(MalformedUpdate):
            await engine.push(office.principal, doc_id, u[:cut])


async def test_oversize_update_is_refused(engine, office):
    with pytest.raises(UpdateTooLarge):
        await engine.push(office.principal, job_doc(), b"\x00" * (engine.config.max_update_bytes + 1))


async def test_schema_violation_refused_whole_and_document_rebuilt(engine, db_engine, office):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Porch", status="lead"))
    n = await count(db_engine, t.oplog)
    bad = BareDevice(office.principal.user_id, "office", office.principal.device_id, office.client_id)
    bad.docs = office.docs  # same device, same replica
    u = office.set_fields(doc_id, title="Porch v2", status="teleported")
    with pytest.raises(SchemaViolation) as ei:
        await engine.push(office.principal, doc_id, u)
    assert ei.value.details and ei.value.details[0]["field"] == "job.status"
    assert await count(db_engine, t.oplog) == n
    view = await engine.view(doc_id)
    assert view.record["title"] == "Porch" and view.record["status"] == "lead"
    # the server's copy holds no trace of the refused content
    assert "teleported" not in str((engine._docs[doc_id]).to_json())


async def test_forged_author_is_refused(engine, db_engine, office, crew, owner):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Fence", status="scheduled"))
    crew.apply(doc_id, (await engine.pull(crew.principal, doc_id)).update)
    forged = crew.edit(doc_id, lambda d, s: D.write_field(
        d, "status", "on_hold", ts=s["ts"], device=s["device"], author=owner.principal.user_id, role="owner"))
    with pytest.raises(Forbidden):
        await engine.push(crew.principal, doc_id, forged)
    assert (await engine.view(doc_id)).record["status"] == "scheduled"
    # claiming another device id in the key is refused too (from a clean replica: the first
    # device's own document still holds its refused edit, which the server never accepted)
    crew = BareDevice(crew.principal.user_id, "crew")
    crew.apply(doc_id, (await engine.pull(crew.principal, doc_id)).update)
    other_dev = crew.edit(doc_id, lambda d, s: D.write_field(
        d, "title", "Fence!", ts=s["ts"], device="someone-elses-phone", author=s["author"], role=s["role"]))
    with pytest.raises(Forbidden):
        await engine.push(crew.principal, doc_id, other_dev)


async def test_deleting_a_write_without_rewriting_the_field_is_refused(engine, office):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Shed", address="1 Main St"))

    def vandal(d, s):
        from pycrdt import Map
        m = d.get("fields", type=Map)
        for k in [k for k in m.keys() if k.startswith("address/")]:
            del m[k]
    with pytest.raises(Forbidden):
        await engine.push(office.principal, doc_id, office.edit(doc_id, vandal))
    assert (await engine.view(doc_id)).record["address"] == "1 Main St"


async def test_out_of_order_updates_are_held_back_not_lost(engine, db_engine, office):
    doc_id = job_doc()
    u1 = office.set_fields(doc_id, title="A")
    u2 = office.set_fields(doc_id, title="B", address="2 Oak Ave")
    u3 = office.set_fields(doc_id, description="third")
    with pytest.raises(MissingDependencies) as ei:
        await engine.push(office.principal, doc_id, u2)
    assert ei.value.details["state_vector"] is not None
    assert await count(db_engine, t.oplog) == 0
    await engine.push(office.principal, doc_id, u1)
    with pytest.raises(MissingDependencies):
        await engine.push(office.principal, doc_id, u3)
    await engine.push(office.principal, doc_id, u2)
    await engine.push(office.principal, doc_id, u3)
    rec = (await engine.view(doc_id)).record
    assert rec == {"title": "B", "address": "2 Oak Ave", "description": "third"}


async def test_client_id_bound_to_one_device(engine, office, db_engine):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="X"))
    thief = BareDevice(office.principal.user_id, "office", client_id=office.client_id)
    other_doc = job_doc()
    with pytest.raises(ClientIdConflict):
        await engine.push(thief.principal, other_doc, thief.set_fields(other_doc, title="Y"))


async def test_clock_a_day_fast_is_refused(engine, office):
    doc_id = job_doc()
    fast = format_ts(office.hlc.physical_ms() + 24 * 3600 * 1000, 0)
    u = office.edit(doc_id, lambda d, s: D.write_field(d, "title", "From the future", **{**s, "ts": fast}))
    with pytest.raises(ClockSkew) as ei:
        await engine.push(office.principal, doc_id, u)
    assert "server_time_ms" in ei.value.details


async def test_unknown_user_is_refused(engine):
    dev = BareDevice(str(uuid.uuid4()), "owner")
    doc_id = customer_doc()
    with pytest.raises(Forbidden):
        await engine.push(dev.principal, doc_id, dev.set_fields(doc_id, name="Ghost"))


async def test_nested_shared_types_and_foreign_roots_are_refused(engine, office):
    from pycrdt import Map, Text
    doc_id = job_doc()
    d = Doc(client_id=office.client_id + 7)
    with d.transaction():
        d.get("evil", type=Map)["x"] = 1
    dev = BareDevice(office.principal.user_id, "office", office.principal.device_id + "x", office.client_id + 7)
    with pytest.raises(MalformedUpdate):
        await engine.push(dev.principal, doc_id, d.get_update())
    d2 = Doc(client_id=office.client_id + 9)
    with d2.transaction():
        d2.get("fields", type=Map)[f"title/{office.hlc.now()}/{dev.principal.device_id}"] = Text("hi")
    with pytest.raises(MalformedUpdate):
        await engine.push(dev.principal, doc_id, d2.get_update())


async def test_a_note_id_is_written_once(engine, office, crew):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Notes"))
    nid = D.new_id()
    await engine.push(office.principal, doc_id, office.edit(doc_id, lambda d, s: D.add_note(d, nid, "first", **s)))
    crew.apply(doc_id, (await engine.pull(crew.principal, doc_id)).update)
    with pytest.raises(Forbidden):
        await engine.push(crew.principal, doc_id, crew.edit(doc_id, lambda d, s: D.add_note(d, nid, "hijack", **s)))
    assert [n["body"] for n in (await engine.view(doc_id)).notes] == ["first"]


async def test_server_side_edit_is_authored_by_the_principal_and_validated(engine, db_engine, office, crew):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="REST", status="scheduled"))
    ack, _ = await engine.edit(crew.principal, doc_id, lambda d, s: D.write_field(d, "status", "in_progress", **s))
    assert not ack.duplicate
    exp = await engine.explain(doc_id, "status")
    assert exp["value"] == "in_progress" and exp["winner"]["author"] == crew.principal.user_id
    # concurrent server-side edits from one device never collide on Yjs ids
    import asyncio
    await asyncio.gather(*[engine.edit(crew.principal, doc_id, lambda d, s, i=i: D.add_note(d, D.new_id(), f"n{i}", **s))
                           for i in range(5)])
    assert len((await engine.view(doc_id)).notes) == 5
    with pytest.raises(SchemaViolation):
        await engine.edit(crew.principal, doc_id, lambda d, s: D.write_field(d, "status", "bogus", **s))
    assert (await engine.view(doc_id)).record["status"] == "in_progress"


async def test_automations_create_tasks_in_the_same_commit(engine, db_engine, office):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Porch", status="in_progress"))
    u = office.set_fields(doc_id, status="completed")
    await engine.push(office.principal, doc_id, u)
    tasks = await rows(db_engine, t.tasks)
    events = {e["id"]: e for e in await rows(db_engine, t.events)}
    assert [x["title"] for x in tasks] == ["Invoice Porch"]
    assert events[tasks[0]["source_event_id"]]["type"] == "job.status_changed"
    await engine.push(office.principal, doc_id, u)  # a re-sent update creates nothing more
    assert len(await rows(db_engine, t.tasks)) == 1


@pytest.mark.parametrize("ts_suffix, device_suffix", [
    ("\n", ""),                   # a timestamp with a trailing newline
    ("", "\n"),                   # a device id with a trailing newline
    ("ascii->arabic-indic", ""),  # a timestamp in non-ASCII digits
])
async def test_keys_the_typescript_port_refuses_are_refused(engine, db_engine, office, ts_suffix, device_suffix):
    """A write key Python's regexes would once accept but the device's port (JavaScript, ASCII
    \\d, ``$`` at the very end) refuses: accepting it would project a value no device shows."""
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Deck", status="lead"))
    n = await count(db_engine, t.oplog)
    ts = format_ts(1_700_000_000_000, 7)
    if ts_suffix == "ascii->arabic-indic":
        ts = ts.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    else:
        ts += ts_suffix
    key = f"title/{ts}/{office.principal.device_id}{device_suffix}"
    u = office.edit(doc_id, lambda d, s: d.get("fields", type=Map).__setitem__(
        key, D.entry_value("Hostile", author=s["author"], role=s["role"])))
    with pytest.raises((SchemaViolation, Forbidden)):
        await engine.push(office.principal, doc_id, u)
    assert await count(db_engine, t.oplog) == n
    assert (await engine.view(doc_id)).record["title"] == "Deck"
    # the same rule on both sides: conflict_rules' timestamp check and the documents' key parser
    from conflict_rules.hlc import is_valid_ts
    assert not is_valid_ts(ts) or device_suffix
    with pytest.raises(ValueError):
        D.parse_key("fields", key)


async def test_an_error_while_indexing_an_applied_update_refuses_it_and_stores_nothing(
        engine, db_engine, office, monkeypatch):
    """The engine observes pycrdt's raw map events; an exception raised while indexing one
    must surface (pycrdt would otherwise swallow it inside its callback) so the update is
    refused, the in-memory document rebuilt from the log, and nothing stored."""
    from syncd.livedoc import LiveDoc

    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Shed", status="lead"))
    n = await count(db_engine, t.oplog)
    real_index = LiveDoc._index

    def broken_index(self, changes):
        changes = list(changes)
        if any(isinstance(c.new_value, dict) and c.new_value.get("v") == "Shed v2" for c in changes):
            raise RuntimeError("indexing failed")
        return real_index(self, changes)

    monkeypatch.setattr(LiveDoc, "_index", broken_index)
    with pytest.raises(MalformedUpdate, match="indexing failed"):
        await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Shed v2"))
    monkeypatch.setattr(LiveDoc, "_index", real_index)
    assert await count(db_engine, t.oplog) == n
    assert (await engine.view(doc_id)).record["title"] == "Shed"
    assert "Shed v2" not in str(engine._docs[doc_id].to_json())


async def test_a_dropped_database_connection_costs_at_most_one_retry(engine, db_engine, office):
    """The batcher keeps its connection between batches. When the database drops it (a
    PostgreSQL restart, a killed backend), the next batch may fail with UNAVAILABLE (nothing
    stored, the pusher retries, as after any storage error); the batch after it runs on a
    fresh connection. Nothing is lost or stored twice."""
    from sqlalchemy import text
    from syncd.errors import Unavailable

    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Before", status="lead"))
    writer = engine._writer
    assert writer is not None and not writer.closed
    if db_engine.dialect.name == "postgresql":
        async with writer.begin():
            pid = (await writer.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with db_engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one()
    else:
        raw = await writer.get_raw_connection()
        await raw.driver_connection.close()  # the database handle under the pool's feet
    u = office.set_fields(doc_id, title="After")
    try:
        ack = await engine.push(office.principal, doc_id, u)
    except Unavailable:
        ack = await engine.push(office.principal, doc_id, u)  # what every client does
    assert not ack.duplicate
    assert engine._writer is not writer  # a fresh connection
    assert (await engine.view(doc_id)).record["title"] == "After"
    assert await count(db_engine, t.oplog) == 2
    # and it keeps working
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Later"))
    assert (await engine.view(doc_id)).record["title"] == "Later"


async def test_sqlite_batch_statements_run_on_the_loop_thread_begin_and_commit_do_not(sqlite_db):
    """SQLite: inside the batch transaction the statements run on the event loop's thread
    (no aiosqlite thread hop each); BEGIN IMMEDIATE (which may wait for a lock) and COMMIT
    (the fsync) stay on aiosqlite's thread. Fails if the inline mode silently stops working
    (e.g. an aiosqlite upgrade without the door it uses)."""
    import threading

    from syncd.engine import EngineConfig, SyncEngine
    from engine_helpers import add_user  # type: ignore[import-not-found]

    office = BareDevice(await add_user(sqlite_db, "office"), "office")
    async with SyncEngine(sqlite_db, EngineConfig(paranoid=True)) as engine:
        doc_id = job_doc()
        await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="First", status="lead"))
        raw = await engine._writer.get_raw_connection()
        sqlite_conn = raw.driver_connection._conn
        seen: list[tuple[int, str]] = []
        sqlite_conn.set_trace_callback(lambda sql: seen.append((threading.get_ident(), sql.split()[0].upper())))
        try:
            await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Second"))
        finally:
            sqlite_conn.set_trace_callback(None)
        loop_thread = threading.get_ident()
        by_verb: dict[str, set[int]] = {}
        for ident, verb in seen:
            by_verb.setdefault(verb, set()).add(ident)
        assert by_verb.get("INSERT") == {loop_thread}, seen
        assert loop_thread not in by_verb["BEGIN"] and loop_thread not in by_verb["COMMIT"], seen
        assert (await engine.view(doc_id)).record["title"] == "Second"
    assert await count(sqlite_db, t.oplog) == 2
