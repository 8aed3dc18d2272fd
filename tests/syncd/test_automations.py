"""Automations: each rule fires on its event and only then; replays never duplicate a task;
automations never trigger automations."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from schema import documents as D
from schema import tables as t
from schema.db import create_engine
from syncd import automations as A
from syncd.automations import Automation, TaskSpec, event_time, insert_tasks, job_context, task_id, tasks_for
from syncd.engine import EngineConfig, SyncEngine
from syncd.projection import Event

from engine_helpers import BareDevice, add_user, job_doc  # type: ignore[import-not-found]

JOB = "6f1c2d3e-0000-4000-8000-000000000001"
MAT = "6f1c2d3e-0000-4000-8000-0000000000aa"
TS = "1763784000000.00003"  # 2025-11-22T04:00:00Z
T0 = datetime(2025, 11, 22, 4, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def job(status="scheduled", crew=("u1",), title="Kitchen remodel", deleted=False):
    return {"title": title, "status": status, "crew": list(crew), "deleted": deleted}


def status_changed(to, frm="estimate", ts=TS):
    return Event("job", JOB, "job.status_changed", {"from": frm, "to": to}, "u-office", ts)


def material_added(purchased=False, name="2x4 studs", quantity=24.0, unit="pcs", ts=TS):
    return Event("material", MAT, "material.added",
                 {"job_id": JOB, "name": name, "quantity": quantity, "unit": unit, "purchased": purchased,
                  "cost": None}, "u-crew", ts)


def created(status):
    return Event("job", JOB, "job.created", {"title": "Kitchen remodel", "status": status, "deleted": False},
                 "u-office", TS)


def fired(events, ctx):
    return [(r["title"], r["due_at"]) for r in tasks_for([(i + 1, e) for i, e in enumerate(events)], ctx, now=NOW)]


# --- each rule on its event, and only then --------------------------------------------------------

CASES = [
    # (event, job context, expected (title, due) list)
    (status_changed("completed", "in_progress"), job("completed"), [("Invoice Kitchen remodel", T0 + timedelta(days=3))]),
    (status_changed("scheduled"), job("scheduled", crew=()), [("Assign a crew to Kitchen remodel", T0 + timedelta(days=1))]),
    (created("scheduled"), job("scheduled", crew=()), [("Assign a crew to Kitchen remodel", T0 + timedelta(days=1))]),
    (status_changed("scheduled"), job("scheduled", crew=("u1",)), []),  # crew assigned: nothing to do
    (created("scheduled"), job("scheduled", crew=("u1",)), []),
    (created("lead"), job("lead", crew=()), []),
    (material_added(), job("in_progress"), [("Buy 2x4 studs (24 pcs) for Kitchen remodel", T0 + timedelta(days=1))]),
    (material_added(purchased=True), job("in_progress"), []),  # already bought
    (material_added(), job("scheduled"), []),  # job not started: the list is still being planned
    (material_added(quantity=2.5, unit=None, name="grout"), job("in_progress"),
     [("Buy grout (2.5) for Kitchen remodel", T0 + timedelta(days=1))]),
    (status_changed("on_hold", "in_progress"), job("on_hold"),
     [("Follow up on Kitchen remodel (on hold)", T0 + timedelta(days=7))]),
    (status_changed("in_progress", "scheduled"), job("in_progress"), []),
    (status_changed("invoiced", "completed"), job("invoiced"), []),
    (status_changed("completed", "in_progress"), job("completed", deleted=True), []),  # deleted job: no tasks
    (Event("job", JOB, "job.updated", {"changes": {"status": ["a", "completed"]}}, None, TS), job("completed"), []),
    (Event("material", MAT, "material.purchased", {"job_id": JOB, "name": "x"}, None, TS), job("in_progress"), []),
    (Event("note", "n1", "note.added", {"job_id": JOB, "body": "completed"}, None, TS), job("completed"), []),
    (Event("job", JOB, "job.assigned", {"crew": [], "added": [], "removed": ["u1"]}, None, TS),
     job("scheduled", crew=()), []),
]


@pytest.mark.parametrize("event,ctx,expected", CASES, ids=[f"{c[0].type}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_fires_on_its_event_and_only_then(event, ctx, expected):
    assert fired([event], {JOB: ctx}) == expected


def test_the_rows_fit_the_tasks_table():
    [row] = tasks_for([(42, status_changed("completed"))], {JOB: job("completed")}, now=NOW)
    assert set(row) == {c.name for c in t.tasks.c}
    assert row["job_id"] == JOB and row["source_event_id"] == 42 and row["done"] is False
    assert row["created_at"] == NOW and row["due_at"] == T0 + timedelta(days=3)
    assert uuid.UUID(row["id"]).version == 5


def test_a_job_missing_from_the_context_gets_only_rules_that_need_no_job():
    assert fired([status_changed("completed")], {}) == [("Invoice untitled job", T0 + timedelta(days=3))]
    assert fired([status_changed("scheduled"), material_added()], {}) == []


def test_an_event_without_a_time_is_due_from_now_and_titles_are_clipped():
    e = status_changed("completed", ts=None)
    [(title, due)] = fired([e], {JOB: job("completed", title="x" * 300)})
    assert due == NOW + timedelta(days=3)
    assert len(title) == 200 and title.endswith("…")
    assert event_time(status_changed("completed", ts="garbage")) is None


# --- determinism --------------------------------------------------------------------------------

def test_the_same_event_always_gives_the_same_task():
    events = [status_changed("completed"), material_added()]
    ctx = {JOB: job("in_progress")}
    first = tasks_for(list(enumerate(events)), {JOB: job("completed")}, now=NOW)
    again = tasks_for([(None, e) for e in events], {JOB: job("completed")}, now=NOW + timedelta(days=9))
    assert [r["id"] for r in first] == [r["id"] for r in again]
    assert [r["due_at"] for r in first] == [r["due_at"] for r in again]  # counted from the event, not the clock
    # a later occurrence of the same kind of event is a new task
    later = status_changed("completed", ts="1763870400000.00000")
    assert task_id("invoice_completed_job", later) != first[0]["id"]
    # the same event listed twice in one call gives one task
    assert len(tasks_for([(1, events[1]), (2, events[1])], ctx)) == 1
    # the rule is part of the identity
    assert task_id("a", events[0]) != task_id("b", events[0])


async def test_replays_do_not_duplicate_tasks(db_url):
    db = create_engine(db_url)
    try:
        events = [(1, status_changed("completed")), (2, material_added()), (3, status_changed("on_hold"))]
        ctx = {JOB: job("in_progress")}
        for _ in range(3):  # a replay, a restore, a retried commit: the same rows again
            async with db.begin() as conn:
                await insert_tasks(conn, tasks_for(events, ctx))
        async with db.connect() as conn:
            rows = (await conn.execute(select(t.tasks.c.title).order_by(t.tasks.c.title))).scalars().all()
        assert rows == ["Buy 2x4 studs (24 pcs) for Kitchen remodel", "Follow up on Kitchen remodel (on hold)",
                        "Invoice Kitchen remodel"]
        async with db.begin() as conn:
            assert await insert_tasks(conn, []) == 0
    finally:
        await db.dispose()


# --- no recursion ---------------------------------------------------------------------------------

def test_automations_never_react_to_tasks():
    # tasks are not events: no rule may watch a task.* event, so a task can never trigger a rule
    assert all(not trig.startswith("task.") for r in A.RULES for trig in r.on)
    for bad in (("task.created",), ("job.status_changed", "task.done"), ("",), ()):
        with pytest.raises(ValueError):
            A.register_automation(Automation(f"bad-{bad}", bad, lambda e, j: True, lambda e, j: TaskSpec("x")))
    with pytest.raises(ValueError):
        A.register_automation(Automation("s", "job.created", lambda e, j: True, lambda e, j: TaskSpec("x")))  # type: ignore[arg-type]
    assert not any(n.startswith("bad-") for n in A.automation_names())
    # even events that look like tasks produce nothing
    task_like = Event("task", "t1", "task.created", {"job_id": JOB, "title": "Invoice"}, None, TS)
    assert tasks_for([(1, task_like)], {JOB: job("completed")}) == []
    # what tasks_for returns is task rows only, never events to feed back in
    rows = tasks_for([(1, status_changed("completed"))], {JOB: job("completed")})
    assert rows and all(not isinstance(r, Event) and set(r) == {c.name for c in t.tasks.c} for r in rows)


def test_rules_are_declared_in_one_place_and_a_new_one_registers_through_the_same_door():
    assert A.automation_names()[:4] == ["invoice_completed_job", "assign_crew_when_scheduled", "buy_material",
                                        "follow_up_on_hold"]
    rule = A.register_automation(Automation("photo_on_note", ("note.added",), lambda e, j: "photo" in e.payload["body"],
                                            lambda e, j: TaskSpec("Upload the photos", timedelta(hours=4))))
    try:
        with pytest.raises(ValueError):
            A.register_automation(rule)  # names are unique
        note = Event("note", "n1", "note.added", {"job_id": JOB, "body": "photo of the wall"}, None, TS)
        assert fired([note], {JOB: job()}) == [("Upload the photos", T0 + timedelta(hours=4))]
    finally:
        A.unregister_automation("photo_on_note")
    assert fired([note], {JOB: job()}) == []


# --- on real engine events ------------------------------------------------------------------------

def _event(row) -> Event:
    return Event(row["record_type"], row["record_id"], row["type"], row["payload"], row["actor"], row["ts"])


async def test_the_rules_read_the_events_the_engine_really_records(db_url):
    """The wiring the engine will use, simulated with a commit listener: after each commit, the
    events of that commit (with their ids) and the job's committed view go to tasks_for."""
    db = create_engine(db_url)
    try:
        office = BareDevice(await add_user(db, "office"), "office")
        crew = BareDevice(await add_user(db, "crew"), "crew")
        doc = job_doc()
        rid = D.parse_doc_id(doc)[1]
        proposed: list[dict] = []
        async with SyncEngine(db, EngineConfig(paranoid=True)) as eng:
            async def on_commit(doc_id, update, seq, principal):
                async with db.connect() as conn:
                    rows = (await conn.execute(select(t.events).where(
                        t.events.c.doc_id == doc_id, t.events.c.seq == seq).order_by(t.events.c.id))).mappings().all()
                ctx = {rid: job_context(eng._docs[doc_id].view)}
                proposed.extend(tasks_for([(r["id"], _event(r)) for r in rows], ctx))

            eng.add_listener(on_commit)
            await eng.push(office.principal, doc, office.set_fields(doc, title="Deck", status="estimate"))
            await eng.push(office.principal, doc, office.set_fields(doc, status="scheduled"))  # no crew yet
            await eng.push(office.principal, doc, office.set_fields(doc, crew=[crew.principal.user_id]))
            await eng.push(office.principal, doc, office.set_fields(doc, status="in_progress"))
            mid, bought = str(uuid.uuid4()), str(uuid.uuid4())
            await eng.push(office.principal, doc, office.edit(doc, lambda d, s: (
                D.write_material_field(d, mid, "name", "deck screws", **s),
                D.write_material_field(d, mid, "quantity", 3, **s),
                D.write_material_field(d, mid, "unit", "box", **s),
                D.write_material_field(d, bought, "name", "stain", **s),
                D.write_material_field(d, bought, "quantity", 1, **s),
                D.write_material_field(d, bought, "purchased", True, **s))))
            await eng.push(office.principal, doc, office.set_fields(doc, status="on_hold"))
            await eng.push(office.principal, doc, office.set_fields(doc, status="completed"))
            await eng.push(office.principal, doc, office.set_fields(doc, status="scheduled"))  # crew assigned now
        titles = [r["title"] for r in proposed]
        assert titles == ["Assign a crew to Deck", "Buy deck screws (3 box) for Deck",
                          "Follow up on Deck (on hold)", "Invoice Deck"]
        async with db.connect() as conn:
            types = dict((await conn.execute(select(t.events.c.id, t.events.c.type))).all())
        assert [types[r["source_event_id"]] for r in proposed] == [
            "job.status_changed", "material.added", "job.status_changed", "job.status_changed"]
        async with db.begin() as conn:
            await insert_tasks(conn, proposed)
            await insert_tasks(conn, proposed)  # replayed
        async with db.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(t.tasks))).scalar_one() == 4
            assert (await conn.execute(select(func.count()).select_from(t.events).where(
                t.events.c.type.like("task.%")))).scalar_one() == 0
    finally:
        await db.dispose()


def test_job_context_reads_a_resolved_view():
    from schema.view import DocView
    v = DocView(kind="job", record={"title": "Roof", "status": "scheduled", "crew": ["u2"], "owner_id": "o"})
    assert job_context(v) == {"title": "Roof", "status": "scheduled", "crew": ["u2"], "deleted": False}
    assert job_context(None) == {"title": None, "status": None, "crew": [], "deleted": False}
