"""The replica's domain API on one device: writes, reads, validation, identity."""

from __future__ import annotations

import re
import uuid

import pytest
from pycrdt import Map

from schema.documents import parse_key
from schema.models import FieldError

from replica import NotAllowed, Replica, UnknownRecord
from replica.identity import MAX_CLIENT_ID


async def test_customer_round_trip(open_replica):
    r: Replica = await open_replica("office")
    cid = await r.create_customer(name="Ann Lee", phone="555 0101", address="1 Main St")
    assert r.customer(cid) == {"id": cid, "name": "Ann Lee", "phone": "555 0101", "address": "1 Main St"}
    await r.update_customer(cid, phone="555 0202", email="ann@example.com")
    c = r.customer(cid)
    assert (c["phone"], c["email"], c["name"]) == ("555 0202", "ann@example.com", "Ann Lee")
    other = await r.create_customer(name="Bob")
    assert [c["name"] for c in r.customers()] == ["Ann Lee", "Bob"]
    await r.delete_customer(other)
    assert [c["id"] for c in r.customers()] == [cid]
    assert r.customer(other)["deleted"] is True
    assert {c["id"] for c in r.customers(include_deleted=True)} == {cid, other}


async def test_job_defaults_and_updates(open_replica):
    r = await open_replica("office", role="office")
    cid = await r.create_customer(name="Ann")
    jid = await r.create_job(cid, "Kitchen remodel", address="1 Main St")
    job = r.job(jid)
    assert job["status"] == "lead"
    assert job["owner_id"] == r.user_id
    assert (job["customer_id"], job["title"], job["address"]) == (cid, "Kitchen remodel", "1 Main St")
    assert job["materials"] == [] and job["notes"] == []
    await r.update_job(jid, description="new cabinets", estimate=12000)
    await r.set_status(jid, "scheduled")
    crew = [str(uuid.uuid4()), str(uuid.uuid4())]
    await r.assign(jid, crew)
    job = r.job(jid)
    assert (job["description"], job["estimate"], job["status"], job["crew"]) == ("new cabinets", 12000.0,
                                                                                  "scheduled", crew)
    assert [j["id"] for j in r.jobs()] == [jid]
    await r.update_job(jid, deleted=True)
    assert r.jobs() == [] and [j["id"] for j in r.jobs(include_deleted=True)] == [jid]


async def test_crew_job_has_no_default_owner(open_replica):
    r = await open_replica("crew1", role="crew")
    jid = await r.create_job(str(uuid.uuid4()), "Porch")
    assert "owner_id" not in r.job(jid)


async def test_materials_add_edit_remove(open_replica):
    r = await open_replica("office")
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    studs = await r.add_material(jid, "2x4 studs", quantity=20, unit="pcs", cost=3.5)
    screws = await r.add_material(jid, "Deck screws")
    mats = {m["id"]: m for m in r.job(jid)["materials"]}
    assert mats[studs] == {"id": studs, "name": "2x4 studs", "quantity": 20.0, "unit": "pcs", "cost": 3.5,
                           "purchased": False}
    assert mats[screws] == {"id": screws, "name": "Deck screws", "quantity": 1.0, "purchased": False}
    await r.update_material(jid, studs, purchased=True, quantity=3)
    mats = {m["id"]: m for m in r.job(jid)["materials"]}
    assert (mats[studs]["purchased"], mats[studs]["quantity"]) == (True, 3.0)
    await r.remove_material(jid, screws)
    assert [m["id"] for m in r.job(jid)["materials"]] == [studs]
    with pytest.raises(UnknownRecord):  # editing a removed item would resurrect it
        await r.update_material(jid, screws, purchased=True)
    with pytest.raises(UnknownRecord):
        await r.remove_material(jid, str(uuid.uuid4()))


async def test_notes_keep_their_order_and_authorship(open_replica):
    r = await open_replica("crew1", role="crew")
    jid = await r.create_job(str(uuid.uuid4()), "Roof")
    ids = [await r.add_note(jid, body) for body in ("arrived", "tarp on", "left site")]
    notes = r.job(jid)["notes"]
    assert [n["id"] for n in notes] == ids
    assert [n["body"] for n in notes] == ["arrived", "tarp on", "left site"]
    assert {(n["author"], n["role"], n["device"]) for n in notes} == {(r.user_id, "crew", r.device_id)}
    assert [n["time"] for n in notes] == sorted(n["time"] for n in notes)


async def test_writes_carry_author_role_device_and_one_timestamp(open_replica):
    r = await open_replica("office")
    cid = await r.create_customer(name="Ann", phone="555 0101")
    raw = r.doc(f"customer:{cid}").get("fields", type=Map).to_py()
    keys = [parse_key("fields", k) for k in raw]
    assert {k.device for k in keys} == {r.device_id}
    assert len({k.ts for k in keys}) == 1  # one transaction, one timestamp
    assert all(v["a"] == r.user_id and v["r"] == "office" for v in raw.values())


@pytest.mark.parametrize("call", [
    lambda r, jid: r.create_customer(name=""),
    lambda r, jid: r.create_customer(name="Ann", phone="call me"),
    lambda r, jid: r.create_customer(name="Ann", favourite_colour="red"),
    lambda r, jid: r.update_job(jid, status="done"),
    lambda r, jid: r.update_job(jid, title="ok", estimate=-1),
    lambda r, jid: r.assign(jid, ["not-a-uuid"]),
    lambda r, jid: r.add_material(jid, "studs", quantity=-2),
    lambda r, jid: r.add_material(jid, "studs", quantity="2"),
    lambda r, jid: r.add_note(jid, "   "),
    lambda r, jid: r.create_job("not-a-uuid", "Deck"),
])
async def test_invalid_values_are_refused_and_nothing_is_written(open_replica, call):
    r = await open_replica("office")
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    before = (r.doc_ids(), r.job(jid), await r.pending(), r.hlc.last)
    with pytest.raises(FieldError):
        await call(r, jid)
    assert (r.doc_ids(), r.job(jid), await r.pending(), r.hlc.last) == before


async def test_unknown_records_are_refused(open_replica):
    r = await open_replica("office")
    with pytest.raises(UnknownRecord):
        await r.update_customer(str(uuid.uuid4()), name="Ghost")
    with pytest.raises(UnknownRecord):
        r.job(str(uuid.uuid4()))
    with pytest.raises(ValueError):
        r.customer("nope")
    assert r.doc_ids() == [] and await r.pending() == []


async def test_crew_may_only_make_crew_status_moves(open_replica):
    r = await open_replica("crew1", role="crew")
    jid = await r.create_job(str(uuid.uuid4()), "Porch")  # status lead
    with pytest.raises(NotAllowed):
        await r.set_status(jid, "in_progress")
    assert r.job(jid)["status"] == "lead" and len(await r.pending()) == 1
    office = await open_replica("office", role="office")
    jid2 = await office.create_job(str(uuid.uuid4()), "Shed")
    await office.set_status(jid2, "invoiced")  # office may set any status
    assert office.job(jid2)["status"] == "invoiced"


async def test_explain_names_rule_and_winner(open_replica):
    r = await open_replica("office")
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    await r.set_status(jid, "scheduled")
    e = r.explain(f"job:{jid}", "status")
    assert (e["rule"], e["value"], len(e["candidates"])) == ("owner_wins", "scheduled", 1)
    mid = await r.add_material(jid, "studs")
    assert r.explain(f"job:{jid}", f"materials/{mid}/name")["value"] == "studs"


async def test_identity(open_replica):
    r = await open_replica("office")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", r.device_id)
    assert 0 < r.client_id < MAX_CLIENT_ID
    cid = await r.create_customer(name="Ann")
    jid = await r.create_job(cid, "Deck")
    assert {r.doc(d).client_id for d in r.doc_ids()} == {r.client_id}
    assert r.doc_ids() == sorted([f"customer:{cid}", f"job:{jid}"])
    other = await open_replica("other")
    assert (other.device_id, other.client_id) != (r.device_id, r.client_id)
    with pytest.raises(ValueError):
        await open_replica("bad", role="admin")
