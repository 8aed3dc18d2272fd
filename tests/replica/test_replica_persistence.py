"""What survives a restart, what is durable when an edit returns, and compaction."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from pycrdt import Doc, Map

from replica import IntegrityError, Replica
from replica import core as replica_core
from replica.crdt import RemoteCheck, check_remote

from replica_relay import Relay  # type: ignore[import-not-found]


def rows(path, sql, args=()):
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


async def test_reopen_restores_documents_outbox_and_identity(open_replica, tmp_path):
    r = await open_replica("crew1", role="crew")
    cid = await r.create_customer(name="Ann")
    jid = await r.create_job(cid, "Deck")
    mid = await r.add_material(jid, "studs", quantity=4)
    await r.add_note(jid, "hello")
    view, outbox, ident = r.job(jid), await r.pending(), (r.device_id, r.client_id)
    assert len(outbox) == 4
    await r.close()

    r2 = await open_replica("crew1", role="crew")
    assert (r2.device_id, r2.client_id) == ident
    assert r2.job(jid) == view and r2.customer(cid)["name"] == "Ann"
    assert await r2.pending() == outbox  # the outbox survives a restart, same ids and bytes
    await r2.update_material(jid, mid, purchased=True)
    assert {r2.doc(d).client_id for d in r2.doc_ids()} == {r2.client_id}
    assert len(await r2.pending()) == 5


async def test_edit_is_durable_when_the_call_returns(open_replica, tmp_path):
    r = await open_replica("office")
    cid = await r.create_customer(name="Ann")
    db = str(tmp_path / "office.db")
    (data,) = rows(db, "SELECT data FROM updates WHERE origin = 'local' AND acked = 0")[0]
    doc = Doc()
    doc.apply_update(data)
    assert [v["v"] for v in doc.get("fields", type=Map).to_py().values()] == ["Ann"]
    assert dict(rows(db, "SELECT key, value FROM meta"))["hlc_last"] == r.hlc.last
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert cid


async def test_clock_is_monotonic_across_restart(open_replica):
    now = [5_000_000]
    r = await open_replica("crew1", clock=lambda: now[0])
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    await r.add_note(jid, "one")
    last = r.hlc.last
    await r.close()
    now[0] -= 60_000  # the device clock went back a minute while it was off
    r2 = await open_replica("crew1", clock=lambda: now[0])
    await r2.add_note(jid, "two")
    notes = r2.job(jid)["notes"]
    assert notes[0]["time"] <= last < notes[1]["time"]
    assert [n["body"] for n in notes] == ["one", "two"]


async def test_reopen_with_another_device_id_is_refused(open_replica):
    r = await open_replica("crew1", device_id="tablet-1")
    assert r.device_id == "tablet-1"
    await r.close()
    with pytest.raises(ValueError, match="tablet-1"):
        await open_replica("crew1", device_id="tablet-2")


async def test_failed_commit_leaves_document_as_stored(open_replica, monkeypatch):
    r = await open_replica("office")
    cid = await r.create_customer(name="Ann")

    async def broken(*a, **kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(r._store, "append_local", broken)
    with pytest.raises(sqlite3.OperationalError):
        await r.update_customer(cid, name="Bob")
    with pytest.raises(sqlite3.OperationalError):
        await r.create_customer(name="Carl")
    assert r.customer(cid)["name"] == "Ann"
    assert r.doc_ids() == [f"customer:{cid}"]


async def test_compaction_keeps_unacked_outbox(open_replica, relay: Relay, tmp_path):
    r = await open_replica("office", compact_after=5)
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    for i in range(8):
        await r.add_note(jid, f"note {i}")
    report = await r.push(relay.transport(r.device_id))
    assert report.pushed == {f"job:{jid}": 9}
    db = str(tmp_path / "office.db")
    assert rows(db, "SELECT COUNT(*), SUM(acked) FROM updates") == [(1, 1)]  # 9 acked -> 1 row
    await r.add_note(jid, "offline 1")
    await r.add_note(jid, "offline 2")
    outbox = await r.pending()
    # Remote updates pile up until the doc is compacted again; the outbox stays apart.
    other = await open_replica("other")
    await other.pull(relay.transport(other.device_id))
    for i in range(5):
        await other.add_note(jid, f"remote {i}")
        await other.push(relay.transport(other.device_id))
        await r.pull(relay.transport(r.device_id))
        assert await r.pending() == outbox
        assert rows(db, "SELECT COUNT(*) FROM updates WHERE acked = 1") == [(1 if i == 4 else 2 + i,)]
    view = r.job(jid)
    assert len(view["notes"]) == 15
    await r.close()
    r2 = await open_replica("office")
    assert r2.job(jid) == view and await r2.pending() == outbox


async def test_update_left_pending_is_refused_and_not_stored(open_replica, monkeypatch, tmp_path):
    """If the scan wrongly said "integrable", the post-apply check still catches the gap."""
    src = Doc(client_id=77)
    ups = []
    src.observe(lambda e: ups.append(e.update))
    jid = str(uuid.uuid4())
    for i in range(3):
        with src.transaction():
            src.get("notes", type=Map)[f"{uuid.uuid4()}/000000000000{i}.00000/dev"] = {"v": "x", "a": "u", "r": "crew"}
    r = await open_replica("office")
    await r._apply_remote(f"job:{jid}", ups[0], 1, None)
    before = r.job(jid)
    monkeypatch.setattr(replica_core, "check_remote",
                        lambda doc, u: RemoteCheck(check_remote(doc, u).scan, []))  # lie: "nothing missing"
    with pytest.raises(IntegrityError, match="pending"):
        await r._apply_remote(f"job:{jid}", ups[2], 3, None)
    assert r.job(jid) == before
    assert await r.cursor(f"job:{jid}") == 1
    assert rows(str(tmp_path / "office.db"), "SELECT COUNT(*) FROM updates") == [(1,)]
