"""Pull (log tail and state-vector diff), compaction bounds, verify, and the brief's conflict cases."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Map
from sqlalchemy import update

from schema import documents as D
from schema import tables as t
from syncd.verify import verify

from engine_helpers import BareDevice, add_user, job_doc  # type: ignore[import-not-found]

ROOTS = ("fields", "materials", "notes")


def as_json(d: Doc) -> dict:
    return {r: d.get(r, type=Map).to_py() for r in ROOTS}


async def test_pull_log_tail_and_full_diff_give_the_server_document(engine, office, crew):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Attic", status="scheduled"))
    first = await engine.pull(crew.principal, doc_id, None, None)
    crew.apply(doc_id, first.update)
    for i in range(5):
        await engine.push(office.principal, doc_id, office.set_fields(doc_id, description=f"v{i}"))
    tail = await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state(), first.seq)
    crew.apply(doc_id, tail.update)
    assert tail.seq > first.seq
    assert as_json(crew.doc(doc_id)) == as_json(engine._docs[doc_id].doc)
    fresh = BareDevice(crew.principal.user_id, "crew")
    fresh.apply(doc_id, (await engine.pull(fresh.principal, doc_id, None, None)).update)
    assert as_json(fresh.doc(doc_id)) == as_json(engine._docs[doc_id].doc)


async def test_pull_many_answers_each_document_and_records_the_acks_together(engine, db_engine, office, crew):
    from sqlalchemy import select
    from syncd.errors import UnknownDocument
    docs = [job_doc() for _ in range(3)]
    for i, d in enumerate(docs):
        await engine.push(office.principal, d, office.set_fields(d, title=f"Job {i}"))
    missing = job_doc()
    first = await engine.pull_many(crew.principal, [(d, None, None) for d in docs] + [(missing, None, None)])
    assert isinstance(first[-1], UnknownDocument)  # one bad document does not fail the others
    for d, res in zip(docs, first):
        assert res.doc_id == d
        crew.apply(d, res.update)
        assert as_json(crew.doc(d)) == as_json(engine._docs[d].doc)
    await engine.push(office.principal, docs[1], office.set_fields(docs[1], description="new"))
    again = await engine.pull_many(crew.principal, [(d, crew.doc(d).get_state(), r.seq) for d, r in zip(docs, first)])
    for d, res in zip(docs, again):
        crew.apply(d, res.update)
        assert as_json(crew.doc(d)) == as_json(engine._docs[d].doc)
    assert again[1].seq > first[1].seq and again[0].seq == first[0].seq
    async with db_engine.connect() as conn:
        acks = dict((await conn.execute(select(t.device_doc_acks.c.doc_id, t.device_doc_acks.c.acked_seq).where(
            t.device_doc_acks.c.device_id == crew.principal.device_id))).all())
    assert acks == {d: r.seq for d, r in zip(docs, first)}  # what the device said it had
    await engine.compact(docs[0])  # one document from snapshot + log, the others log only
    from syncd.engine import SyncEngine
    async with SyncEngine(db_engine) as cold:  # nothing in memory: loaded together
        fresh = BareDevice(crew.principal.user_id, "crew")
        got = await cold.pull_many(fresh.principal, [(d, None, None) for d in docs] + [(missing, None, None)])
        assert isinstance(got[-1], UnknownDocument)
        for d, res in zip(docs, got):
            fresh.apply(d, res.update)
            assert as_json(fresh.doc(d)) == as_json(engine._docs[d].doc)
            assert res.seq == engine._docs[d].last_seq


async def test_compaction_keeps_what_a_device_has_not_acknowledged(engine, db_engine, office, crew):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Basement"))
    res = await engine.pull(crew.principal, doc_id, None, None)
    crew.apply(doc_id, res.update)
    await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state(), res.seq)  # acknowledges res.seq
    for i in range(30):
        await engine.push(office.principal, doc_id, office.set_fields(doc_id, description=f"rev {i}"))
    out = await engine.compact(doc_id)
    assert out["horizon"] == res.seq  # nothing past the crew's acknowledgement is folded
    # the crew catches up from its cursor through the log tail and lands on the server state
    tail = await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state(), res.seq)
    crew.apply(doc_id, tail.update)
    assert as_json(crew.doc(doc_id)) == as_json(engine._docs[doc_id].doc)
    # once acknowledged, everything folds; the compacted log is within 2x the encoded state
    await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state(), tail.seq)
    out = await engine.compact(doc_id)
    assert out["horizon"] == tail.seq and out["bytes_after"] <= 2 * out["state_bytes"]
    assert (await verify(db_engine)).ok
    # a device behind the horizon gets a full diff, not a broken tail
    late = BareDevice(crew.principal.user_id, "crew")
    late.apply(doc_id, (await engine.pull(late.principal, doc_id, None, 1)).update)
    assert as_json(late.doc(doc_id)) == as_json(engine._docs[doc_id].doc)


async def test_engine_restart_rebuilds_from_snapshot_and_log(engine, db_engine, office):
    from syncd.engine import SyncEngine
    doc_id = job_doc()
    for i in range(10):
        await engine.push(office.principal, doc_id, office.set_fields(doc_id, title=f"T{i}"))
    await engine.compact(doc_id)
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, address="9 Elm"))
    async with SyncEngine(db_engine) as again:
        view = await again.view(doc_id)
        assert view.record == {"title": "T9", "address": "9 Elm"}


async def test_verify_detects_a_tampered_projection(engine, db_engine, office):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, title="Garage", status="lead"))
    assert (await verify(db_engine)).ok
    async with db_engine.begin() as conn:
        await conn.execute(update(t.jobs).values(status="invoiced"))
    report = await verify(db_engine)
    assert not report.ok and report.differences[0].table == "jobs"


async def _job_with_crew(engine, office, crew, owner=None):
    doc_id = job_doc()
    await engine.push(office.principal, doc_id, office.set_fields(
        doc_id, title="Kitchen", status="scheduled", owner_id=office.principal.user_id))
    for dev in [crew] + ([owner] if owner else []):
        dev.apply(doc_id, (await engine.pull(dev.principal, doc_id)).update)
    return doc_id


@pytest.mark.parametrize("owner_first", [True, False])
async def test_case_owner_on_hold_beats_unaware_crew_in_progress(engine, office, crew, owner_first):
    doc_id = await _job_with_crew(engine, office, crew)
    by_owner = office.set_fields(doc_id, status="on_hold")  # the office user is the job's owner
    by_crew = crew.set_fields(doc_id, status="in_progress")  # offline, unaware
    for dev, u in ([(office, by_owner), (crew, by_crew)] if owner_first else [(crew, by_crew), (office, by_owner)]):
        await engine.push(dev.principal, doc_id, u)
    assert (await engine.view(doc_id)).record["status"] == "on_hold"
    exp = await engine.explain(doc_id, "status")
    assert exp["rule"] == "owner_wins" and len(exp["candidates"]) == 2


async def test_case_crew_that_saw_on_hold_then_sets_in_progress_wins(engine, office, crew):
    doc_id = await _job_with_crew(engine, office, crew)
    await engine.push(office.principal, doc_id, office.set_fields(doc_id, status="on_hold"))
    await engine.push(crew.principal, doc_id, crew.set_fields(doc_id, status="in_progress"))
    crew.apply(doc_id, (await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state())).update)
    await engine.push(crew.principal, doc_id, crew.set_fields(doc_id, status="in_progress"))
    assert (await engine.view(doc_id)).record["status"] == "in_progress"


async def test_case_role_owner_beats_newer_office_write(engine, db_engine, office, owner):
    doc_id = await _job_with_crew(engine, office, owner)
    by_owner = owner.set_fields(doc_id, status="cancelled")
    other_office = BareDevice(await add_user(db_engine, "office"), "office")
    other_office.apply(doc_id, (await engine.pull(other_office.principal, doc_id)).update)
    by_office = other_office.set_fields(doc_id, status="scheduled")
    await engine.push(other_office.principal, doc_id, by_office)
    await engine.push(owner.principal, doc_id, by_owner)
    assert (await engine.view(doc_id)).record["status"] == "cancelled"


async def test_case_two_crews_add_drywall_screws_both_kept(engine, db_engine, office, crew):
    doc_id = await _job_with_crew(engine, office, crew)
    crew2 = BareDevice(await add_user(db_engine, "crew"), "crew")
    crew2.apply(doc_id, (await engine.pull(crew2.principal, doc_id)).update)
    for dev in (crew, crew2):
        mid = D.new_id()
        await engine.push(dev.principal, doc_id, dev.edit(doc_id, lambda d, s: (
            D.write_material_field(d, mid, "name", "drywall screws", **s),
            D.write_material_field(d, mid, "quantity", 2, **s))))
    mats = (await engine.view(doc_id)).materials
    assert sorted(m.fields["name"] for m in mats.values() if not m.removed) == ["drywall screws"] * 2


async def test_case_edit_concurrent_with_remove_keeps_the_item(engine, office, crew):
    doc_id = await _job_with_crew(engine, office, crew)
    mid = D.new_id()
    await engine.push(office.principal, doc_id, office.edit(doc_id, lambda d, s: (
        D.write_material_field(d, mid, "name", "tile", **s), D.write_material_field(d, mid, "quantity", 10, **s))))
    crew.apply(doc_id, (await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state())).update)
    removal = office.edit(doc_id, lambda d, s: D.remove_material(d, mid, **s))
    edit = crew.edit(doc_id, lambda d, s: D.write_material_field(d, mid, "quantity", 12, **s))
    await engine.push(office.principal, doc_id, removal)
    await engine.push(crew.principal, doc_id, edit)
    m = (await engine.view(doc_id)).materials[mid]
    assert not m.removed and m.fields == {"name": "tile", "quantity": 12}
