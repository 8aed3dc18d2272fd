"""A device whose clock ran fast while offline: the server refuses its writes (CLOCK_SKEW);
the replica keeps the edits and writes them again at the server's time (real engine, SQLite
and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

from pycrdt import Map

from conflict_rules.hlc import parse_ts
from schema.db import create_engine
from schema.documents import parse_key
from server import policy
from syncd.engine import SyncEngine
from syncd.local_transport import LocalTransport
from syncd.protocol import Principal

FAST_MS = 20 * 60 * 1000  # the server allows 5 minutes


def _latest_stamp(doc: Any) -> int:
    """The greatest wall time (ms) of any write key in a job document."""
    walls = [parse_ts(parse_key(root, k).ts).wall_ms for root in ("fields", "materials", "notes")
             for k in doc.get(root, type=Map).keys()]
    return max(walls)


async def test_writes_stamped_by_a_fast_clock_are_restamped_not_lost(db_url, open_replica, office_users):
    db = create_engine(db_url)
    try:
        async with SyncEngine(db, authorizer=policy.authorize_writes) as engine:
            ua, ub = await office_users(db, 2)
            fast = await open_replica("fast", role="office", user_id=ua,
                                      clock=lambda: time.time_ns() // 1_000_000 + FAST_MS)
            other = await open_replica("other", role="office", user_id=ub)
            to_fast = LocalTransport(engine, Principal(ua, "office", fast.device_id))
            to_other = LocalTransport(engine, Principal(ub, "office", other.device_id))

            # hours offline with a clock 20 minutes fast: a customer, a job, edits, a material,
            # a removed material and a note, all stamped in the server's future
            cid = await fast.create_customer(name="Ann", phone="555 0101")
            jid = await fast.create_job(cid, "Deck")
            await fast.update_job(jid, title="Deck and stairs", estimate=4200.0)
            mid = await fast.add_material(jid, "2x4 studs", quantity=20)
            gone = await fast.add_material(jid, "wrong screws", quantity=1)
            await fast.remove_material(jid, gone)
            await fast.add_note(jid, "gate code 1234")
            seen_offline = fast.job(jid)
            job_doc = f"job:{jid}"
            assert _latest_stamp(fast.doc(job_doc)) > time.time_ns() // 1_000_000 + 5 * 60 * 1000

            report = await fast.push(to_fast)
            assert report.ok, report.errors
            assert sorted(report.restamped) == sorted([job_doc, f"customer:{cid}"])
            assert await fast.pending() == []  # every edit acknowledged

            # the server holds the same edits, at times it accepts
            server_now = time.time_ns() // 1_000_000
            view = await engine.view(job_doc)
            assert view is not None
            assert _latest_stamp(engine._docs[job_doc].doc) <= server_now + 1000
            assert _latest_stamp(fast.doc(job_doc)) <= server_now + 1000
            assert fast.hlc.offset_ms < 1000  # the device's clock now follows the server's

            # the edits are intact on the device and reach another device unchanged
            mine = fast.job(jid)
            for k in ("title", "estimate", "customer_id"):
                assert mine[k] == seen_offline[k]
            assert [m["id"] for m in mine["materials"]] == [mid]
            assert [n["body"] for n in mine["notes"]] == ["gate code 1234"]
            assert (await other.pull(to_other)).ok
            theirs = other.job(jid)
            assert theirs["title"] == "Deck and stairs" and theirs["estimate"] == 4200.0
            assert [m["name"] for m in theirs["materials"]] == ["2x4 studs"]
            assert [n["body"] for n in theirs["notes"]] == ["gate code 1234"]
            assert other.customer(cid)["name"] == "Ann"

            # a later edit of the other device wins as usual (the old future stamps are gone)
            await other.update_job(jid, title="Stairs only")
            assert (await other.push(to_other)).ok and (await fast.pull(to_fast)).ok
            assert fast.job(jid)["title"] == "Stairs only"
    finally:
        await db.dispose()
