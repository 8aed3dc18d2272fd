"""Roles through the real HTTP app (SQLite and PostgreSQL): partial replication, verified writes,
refusals audited, and the unassignment hook for live sync."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from pycrdt import Doc, merge_updates
from sqlalchemy import select

from conflict_rules.hlc import HLC
from replica import Replica
from schema import documents as D
from schema import tables as t
from server import policy, replication
from syncd import errors as E
from syncd.protocol import Principal, PullResult, PushAck

from server_testkit import Harness, Session, b64, b64url  # type: ignore[import-not-found]

# --- a device that builds real pycrdt updates ---------------------------------------------------


class Dev:
    """One logged-in device: pycrdt docs, a clock, writes stamped as its user (or forged)."""

    def __init__(self, h: Harness, s: Session) -> None:
        self.h, self.s = h, s
        self.user_id, self.role, self.device_id = s.user["id"], s.user["role"], s.device_id
        self.client_id = (uuid.uuid4().int % (2**52)) + 1
        self.docs: dict[str, Doc] = {}
        self.hlc = HLC()

    def doc(self, doc_id: str) -> Doc:
        if doc_id not in self.docs:
            self.docs[doc_id] = Doc(client_id=self.client_id)
        return self.docs[doc_id]

    def edit(self, doc_id: str, fn: Callable[[Doc, dict[str, str]], Any], **forge: str) -> bytes:
        d = self.doc(doc_id)
        before = d.get_state()
        stamp = {"ts": self.hlc.now(), "device": self.device_id, "author": self.user_id, "role": self.role, **forge}
        with d.transaction(origin="local"):
            fn(d, stamp)
        return d.get_update(before)

    def fields(self, doc_id: str, **values: Any) -> bytes:
        return self.edit(doc_id, lambda d, s: D.write_fields(d, values, **s))

    def material(self, doc_id: str, mid: str, **values: Any) -> bytes:
        return self.edit(doc_id, lambda d, s: [D.write_material_field(d, mid, f, v, **s) for f, v in values.items()])

    async def push(self, doc_id: str, update: bytes) -> httpx.Response:
        return await self.h.client.post("/api/sync/push", headers=self.s.headers,
                                        json={"doc_id": doc_id, "update": b64(update)})

    async def ok(self, doc_id: str, update: bytes) -> int:
        r = await self.push(doc_id, update)
        assert r.status_code == 200, r.text
        return r.json()["data"]["seq"]

    async def pull(self, doc_id: str) -> httpx.Response:
        d = self.doc(doc_id)
        r = await self.h.client.get("/api/sync/pull", headers=self.s.headers,
                                    params={"doc_id": doc_id, "state_vector": b64url(d.get_state())})
        if r.status_code == 200:
            d.apply_update(base64.b64decode(r.json()["data"]["update"]))
        return r

    async def listed(self) -> list[str]:
        r = await self.h.client.get("/api/sync/status", headers=self.s.headers, params={"limit": 1000})
        assert r.status_code == 200, r.text
        return [d["doc_id"] for d in r.json()["data"]["docs"]]


@dataclass
class Company:
    h: Harness
    owner: Dev
    office: Dev  # owner_id of every job
    a: Dev  # crew of J1
    b: Dev  # crew of J2
    c1: str
    c2: str
    j1: str  # customer c1, crew [a], scheduled, material m1 (cost 12.5) and m3
    j2: str  # customer c2, crew [b]
    j3: str  # customer c1, no crew
    m1: str
    m3: str

    @property
    def all_docs(self) -> list[str]:
        return sorted([self.c1, self.c2, self.j1, self.j2, self.j3])

    async def job(self, doc_id: str) -> Any:
        async with self.h.db.connect() as conn:
            return (await conn.execute(select(t.jobs).where(t.jobs.c.id == doc_id.split(":")[1]))).one()

    async def materials(self) -> dict[str, Any]:
        async with self.h.db.connect() as conn:
            return {r.id: r for r in (await conn.execute(select(t.materials))).all()}

    async def audit(self, resource: str | None = None) -> list[dict[str, Any]]:
        rows = await self.h.audit_rows()
        return [r for r in rows if resource is None or r["resource"] == resource]


@pytest.fixture
async def co(harness: Harness) -> Company:
    h = harness
    owner, office, a, b = [Dev(h, await h.user_session(role)) for role in ("owner", "office", "crew", "crew")]
    c1, c2 = (D.doc_id_for("customer", str(uuid.uuid4())) for _ in range(2))
    j1, j2, j3 = (D.doc_id_for("job", str(uuid.uuid4())) for _ in range(3))
    m1, m3 = str(uuid.uuid4()), str(uuid.uuid4())
    await office.ok(c1, office.fields(c1, name="Ann Avery", phone="555 0101", address="1 Elm St"))
    await office.ok(c2, office.fields(c2, name="Bob Bell", phone="555 0202"))
    for j, c, crew in ((j1, c1, [a.user_id]), (j2, c2, [b.user_id]), (j3, c1, [])):
        await office.ok(j, office.fields(j, customer_id=c.split(":")[1], title=f"Job {j[-4:]}", status="scheduled",
                                         owner_id=office.user_id, crew=crew, estimate=1000.0))
    await office.ok(j1, office.material(j1, m1, name="2x4 studs", quantity=10.0, purchased=False, cost=12.5))
    await office.ok(j1, office.material(j1, m3, name="Drywall", quantity=4.0, purchased=False))
    return Company(h, owner, office, a, b, c1, c2, j1, j2, j3, m1, m3)


# --- partial replication -------------------------------------------------------------------------


async def test_office_and_owner_list_and_pull_every_document(co):
    for dev in (co.owner, co.office):
        assert await dev.listed() == co.all_docs
        for d in co.all_docs:
            assert (await dev.pull(d)).status_code == 200


async def test_crew_lists_only_assigned_jobs_and_their_customers(co):
    assert await co.a.listed() == sorted([co.c1, co.j1])
    assert await co.b.listed() == sorted([co.c2, co.j2])
    # filtered in SQL: pages hold only readable documents, the cursor walks them
    r = await co.h.client.get("/api/sync/status", headers=co.a.s.headers, params={"limit": 1})
    assert [d["doc_id"] for d in r.json()["data"]["docs"]] == [co.c1] and r.json()["meta"]["next_cursor"] == co.c1
    r = await co.h.client.get("/api/sync/status", headers=co.a.s.headers, params={"limit": 1, "after": co.c1})
    assert [d["doc_id"] for d in r.json()["data"]["docs"]] == [co.j1] and r.json()["meta"]["next_cursor"] is None
    # the same answer from the functions the WebSocket layer uses
    assert await replication.readable_doc_ids(co.h.db, Principal(co.a.user_id, "crew", co.a.device_id)) \
        == {co.c1, co.j1}
    assert await replication.readable_doc_ids(co.h.app.state.services, Principal(co.office.user_id, "office", "x")) \
        == set(co.all_docs)
    for doc_id in co.all_docs:
        expected = doc_id in (co.c1, co.j1)
        assert await policy.can_read(co.h.app, Principal(co.a.user_id, "crew", co.a.device_id), doc_id) is expected


async def test_crew_pull_outside_its_jobs_is_403_and_audited(co):
    for doc_id in (co.c1, co.j1):
        assert (await co.a.pull(doc_id)).status_code == 200
    ghost = D.doc_id_for("job", str(uuid.uuid4()))
    for doc_id in (co.j2, co.c2, co.j3, ghost, "job:42"):
        r = await co.a.pull(doc_id)
        assert r.status_code == 403, (doc_id, r.text)
        assert r.json()["error"]["code"] == "FORBIDDEN" and doc_id in r.json()["error"]["message"]
        audit = await co.audit(doc_id)
        assert [(x["action"], x["user_id"], x["device_id"]) for x in audit] == [
            ("GET /api/sync/pull", co.a.user_id, co.a.device_id)], doc_id
        assert audit[0]["reason"].startswith("FORBIDDEN")


async def test_crew_push_outside_its_jobs_is_403_audited_and_stores_nothing(co):
    before = await co.h.count(t.oplog)
    await co.a.pull(co.c1)
    new_job = D.doc_id_for("job", str(uuid.uuid4()))
    attempts = [
        (co.j2, co.a.fields(co.j2, status="in_progress")),  # someone else's job
        (co.j3, co.a.fields(co.j3, status="in_progress")),  # an unassigned job
        (co.c1, co.a.fields(co.c1, phone="555 9999")),  # a customer it may read
        (new_job, co.a.fields(new_job, title="Side gig", crew=[co.a.user_id])),  # a new job
    ]
    for doc_id, update in attempts:
        r = await co.a.push(doc_id, update)
        assert r.status_code == 403, (doc_id, r.text)
        assert r.json()["error"]["code"] == "FORBIDDEN"
        assert [x["action"] for x in await co.audit(doc_id)] == ["POST /api/sync/push"], doc_id
    assert await co.h.count(t.oplog) == before
    async with co.h.db.connect() as conn:
        assert (await conn.execute(select(t.customers.c.phone).where(
            t.customers.c.id == co.c1.split(":")[1]))).scalar_one() == "555 0101"
    # in a batch, each update is judged alone
    await co.a.pull(co.j1)
    r = await co.h.client.post("/api/sync/push", headers=co.a.s.headers, json={"updates": [
        {"doc_id": co.j1, "update": b64(co.a.fields(co.j1, status="in_progress"))},
        {"doc_id": co.j2, "update": b64(co.a.fields(co.j2, status="on_hold"))},
    ]})
    assert [x.get("status", 200) for x in r.json()["data"]["results"]] == [200, 403]
    assert (await co.job(co.j1)).status == "in_progress" and (await co.job(co.j2)).status == "scheduled"


# --- verified writes -----------------------------------------------------------------------------

FORBIDDEN_FIELDS: list[tuple[str, Any]] = [
    ("title", "Free job"), ("description", "cash only"), ("address", "2 Oak St"), ("estimate", 1.0),
    ("owner_id", None), ("crew", None), ("customer_id", None), ("scheduled_start", "2030-01-01"),
    ("scheduled_end", "2030-01-02"), ("deleted", True),
]


async def test_each_forbidden_crew_write_is_refused_named_audited_and_changes_nothing(co):
    await co.a.pull(co.j1)
    seq_before = await co.h.count(t.oplog)
    job_before = await co.job(co.j1)
    values = {"owner_id": co.a.user_id, "crew": [co.a.user_id, co.b.user_id], "customer_id": co.c2.split(":")[1]}
    a, j1 = co.a, co.j1
    cases: list[tuple[str, Callable[[], bytes]]] = [
        (f"job.{f}", lambda f=f, v=v: a.fields(j1, **{f: values.get(f, v)})) for f, v in FORBIDDEN_FIELDS]
    cases += [
        ("material.cost", lambda: a.material(j1, co.m1, cost=0.01)),  # the price of an existing item
        ("material.cost", lambda: a.material(j1, str(uuid.uuid4()), name="Nails", quantity=1.0, cost=2.0)),
        ("job.title", lambda: a.fields(j1, status="in_progress", title="Mine")),  # one bad field spoils it all
    ]
    for name, build in cases:
        # every case builds on the server's state only (the device forgets its refused edit)
        a.docs.pop(j1)
        await a.pull(j1)
        r = await a.push(j1, build())
        assert r.status_code == 403, (name, r.text)
        err = r.json()["error"]
        assert err["code"] == "FORBIDDEN" and name in err["message"], (name, err)
        assert name in [d["field"] for d in err["details"]]
    audit = await co.audit(co.j1)
    assert len(audit) == len(cases)
    assert all(x["action"] == "POST /api/sync/push" and x["user_id"] == co.a.user_id for x in audit)
    for (name, _), row in zip(cases, audit):
        assert row["reason"].startswith("FORBIDDEN") and name in row["reason"], (name, row)
    assert await co.h.count(t.oplog) == seq_before
    assert await co.job(co.j1) == job_before
    assert (await co.materials())[co.m1].cost == 12.5 and len(await co.materials()) == 2


async def test_crew_illegal_status_moves_are_refused(co):
    await co.a.pull(co.j1)
    for bad in ("lead", "estimate", "invoiced", "cancelled"):
        co.a.docs.pop(co.j1)
        await co.a.pull(co.j1)
        r = await co.a.push(co.j1, co.a.fields(co.j1, status=bad))
        assert r.status_code == 403, (bad, r.text)
        assert "job.status" in r.json()["error"]["message"] and repr(bad) in r.json()["error"]["message"]
    assert (await co.job(co.j1)).status == "scheduled"
    await co.office.pull(co.j1)
    await co.office.ok(co.j1, co.office.fields(co.j1, status="completed"))
    for bad in ("in_progress", "on_hold", "scheduled"):
        co.a.docs.pop(co.j1)
        await co.a.pull(co.j1)
        r = await co.a.push(co.j1, co.a.fields(co.j1, status=bad))
        assert r.status_code == 403, (bad, r.text)
    assert (await co.job(co.j1)).status == "completed"
    assert len(await co.audit(co.j1)) == 7


async def test_crew_legal_status_moves_are_accepted(co):
    await co.a.pull(co.j1)
    for status in ("in_progress", "on_hold", "in_progress", "completed"):
        await co.a.ok(co.j1, co.a.fields(co.j1, status=status))
        assert (await co.job(co.j1)).status == status
    assert await co.audit() == []


async def test_crew_moves_made_offline_in_a_row_are_accepted_batched_or_merged(co):
    # two moves pushed in one request: the engine checks both against the same committed view
    await co.a.pull(co.j1)
    start, finish = co.a.fields(co.j1, status="in_progress"), co.a.fields(co.j1, status="completed")
    r = await co.h.client.post("/api/sync/push", headers=co.a.s.headers, json={"updates": [
        {"doc_id": co.j1, "update": b64(start)}, {"doc_id": co.j1, "update": b64(finish)}]})
    assert [x.get("status", 200) for x in r.json()["data"]["results"]] == [200, 200], r.text
    assert (await co.job(co.j1)).status == "completed"
    # the replica's merged outbox: one update, scheduled -> completed
    await co.b.pull(co.j2)
    merged = merge_updates(co.b.fields(co.j2, status="in_progress"), co.b.fields(co.j2, status="on_hold"),
                           co.b.fields(co.j2, status="in_progress"), co.b.fields(co.j2, status="completed"))
    await co.b.ok(co.j2, merged)
    assert (await co.job(co.j2)).status == "completed"


async def test_crew_ticks_adds_and_removes_materials_and_adds_notes(co):
    await co.a.pull(co.j1)
    m2, n1 = str(uuid.uuid4()), str(uuid.uuid4())
    await co.a.ok(co.j1, co.a.material(co.j1, co.m1, purchased=True, quantity=12.0))
    await co.a.ok(co.j1, co.a.material(co.j1, m2, name="Drywall screws", quantity=2.0, unit="box", purchased=True))
    await co.a.ok(co.j1, co.a.edit(co.j1, lambda d, s: D.remove_material(d, co.m3, **s)))
    await co.a.ok(co.j1, co.a.edit(co.j1, lambda d, s: D.add_note(d, n1, "Side gate is locked", **s)))
    mats = await co.materials()
    assert (mats[co.m1].purchased, mats[co.m1].quantity, mats[co.m1].cost) == (True, 12.0, 12.5)
    assert (mats[m2].name, mats[m2].unit, mats[m2].purchased, mats[m2].cost) == ("Drywall screws", "box", True, None)
    assert mats[co.m3].removed is True
    async with co.h.db.connect() as conn:
        note = (await conn.execute(select(t.notes))).one()
    assert (note.id, note.author_id, note.body) == (n1, co.a.user_id, "Side gate is locked")
    assert await co.audit() == []


async def test_crew_cannot_win_owner_wins_by_claiming_a_role_but_the_jobs_owner_does(co):
    await co.a.pull(co.j1)
    forged = co.a.edit(co.j1, lambda d, s: D.write_fields(d, {"status": "on_hold"}, **s), role="owner")
    r = await co.a.push(co.j1, forged)
    assert r.status_code == 403 and "claims author" in r.json()["error"]["message"], r.text
    assert [a["resource"] for a in await co.audit()] == [co.j1]
    assert (await co.job(co.j1)).status == "scheduled"
    # the office user who owns the job beats a concurrent crew write, whichever arrives first
    for first in ("crew", "office"):
        co.a.docs.pop(co.j1)
        co.office.docs.pop(co.j1, None)
        await co.a.pull(co.j1)
        await co.office.pull(co.j1)
        assert co.a.doc(co.j1).get_state() == co.office.doc(co.j1).get_state()
        current = (await co.job(co.j1)).status
        crew_status = "in_progress" if current != "in_progress" else "completed"
        office_status = "on_hold" if first == "crew" else "scheduled"
        crew_u, office_u = co.a.fields(co.j1, status=crew_status), co.office.fields(co.j1, status=office_status)
        if first == "crew":
            await co.a.ok(co.j1, crew_u)
            await co.office.ok(co.j1, office_u)
        else:
            await co.office.ok(co.j1, office_u)
            await co.a.ok(co.j1, crew_u)
        assert (await co.job(co.j1)).status == office_status, first


async def test_office_writes_everything_owner_too(co):
    for dev in (co.office, co.owner):
        await dev.pull(co.j1)
        await dev.pull(co.c1)
        await dev.ok(co.j1, dev.fields(co.j1, title=f"By {dev.role}", crew=[co.b.user_id], owner_id=dev.user_id,
                                       status="invoiced", deleted=False))
        await dev.ok(co.j1, dev.material(co.j1, co.m1, cost=99.0))
        await dev.ok(co.c1, dev.fields(co.c1, phone="555 7777"))
        job = await co.job(co.j1)
        assert (job.title, job.owner_id, job.status) == (f"By {dev.role}", dev.user_id, "invoiced")
        assert (await co.materials())[co.m1].cost == 99.0
        new = D.doc_id_for("customer", str(uuid.uuid4()))
        await dev.ok(new, dev.fields(new, name=f"New by {dev.role}"))
    assert await co.audit() == []


# --- unassignment ------------------------------------------------------------------------------


class HttpTransport:
    """syncd.protocol.SyncTransport over the HTTP sync routes, for a Replica."""

    def __init__(self, dev: Dev) -> None:
        self.client, self.headers = dev.h.client, dev.s.headers

    @staticmethod
    def _raise(r: httpx.Response) -> None:
        err = r.json()["error"]
        by_code = {c.code: c for c in E.SyncError.__subclasses__()}
        raise by_code.get(err["code"], E.SyncError)(err["message"], err["details"])

    async def push(self, doc_id: str, update: bytes) -> PushAck:
        r = await self.client.post("/api/sync/push", headers=self.headers,
                                   json={"doc_id": doc_id, "update": b64(update)})
        if r.status_code != 200:
            self._raise(r)
        d = r.json()["data"]
        return PushAck(d["doc_id"], d["seq"], d["duplicate"], d["server_time"])

    async def pull(self, doc_id: str, state_vector: bytes, since_seq: int | None) -> PullResult:
        params: dict[str, Any] = {"doc_id": doc_id, "state_vector": b64url(state_vector)}
        if since_seq is not None:
            params["since"] = since_seq
        r = await self.client.get("/api/sync/pull", headers=self.headers, params=params)
        if r.status_code != 200:
            self._raise(r)
        d = r.json()["data"]
        return PullResult(d["doc_id"], base64.b64decode(d["update"]), d["seq"], d["server_time"])

    async def list_docs(self) -> list[str]:
        out: list[str] = []
        after = None
        while True:
            r = await self.client.get("/api/sync/status", headers=self.headers,
                                      params={"limit": 2, **({"after": after} if after else {})})
            out += [d["doc_id"] for d in r.json()["data"]["docs"]]
            after = r.json()["meta"]["next_cursor"]
            if after is None:
                return out


async def test_unassigning_a_job_drops_it_and_its_customer_from_the_crew_replica(co, tmp_path: Path):
    replica = await Replica.open(str(tmp_path / "crew.sqlite3"), user_id=co.a.user_id, role="crew",
                                 device_id=co.a.device_id)
    try:
        transport = HttpTransport(co.a)
        report = await replica.sync(transport)
        assert not report.pull.errors
        assert sorted(replica.doc_ids()) == sorted([co.c1, co.j1])
        jid = co.j1.split(":")[1]
        assert replica.job(jid)["crew"] == [co.a.user_id]
        await replica.update_material(jid, co.m1, purchased=True)
        assert not (await replica.sync(transport)).push.errors
        assert (await co.materials())[co.m1].purchased is True

        await co.office.pull(co.j1)
        await co.office.ok(co.j1, co.office.fields(co.j1, crew=[co.b.user_id]))
        assert await co.a.listed() == []
        assert sorted(await co.b.listed()) == sorted([co.c1, co.c2, co.j1, co.j2])
        assert (await co.a.pull(co.j1)).status_code == 403
        assert (await co.a.push(co.j1, co.a.fields(co.j1, status="in_progress"))).status_code == 403

        report = await replica.pull(transport)
        assert sorted(report.dropped) == sorted([co.c1, co.j1]) and not report.errors
        assert replica.doc_ids() == []
    finally:
        await replica.close()


async def test_a_deleted_job_stays_with_its_crew_but_its_customer_does_not(co):
    await co.office.pull(co.j1)
    await co.office.ok(co.j1, co.office.fields(co.j1, deleted=True))
    assert await co.a.listed() == [co.j1]
    assert (await co.a.pull(co.c1)).status_code == 403
    # materials ticked offline still land on the deleted job
    assert (await co.a.pull(co.j1)).status_code == 200
    await co.a.ok(co.j1, co.a.material(co.j1, co.m1, purchased=True))
    assert (await co.materials())[co.m1].purchased is True


async def test_the_unassignment_listener_reports_who_lost_which_document(co):
    calls: list[tuple[str, frozenset[str]]] = []

    async def on_lost(doc_id: str, users: frozenset[str]) -> None:
        calls.append((doc_id, users))

    engine = co.h.app.state.engine
    watcher = replication.make_unassignment_listener(engine, on_lost)
    async with watcher:  # primed from job_assignments written before it started
        async def office_writes(doc_id: str, **values: Any) -> list[tuple[str, frozenset[str]]]:
            await co.office.pull(doc_id)
            await co.office.ok(doc_id, co.office.fields(doc_id, **values))
            await watcher.drain()
            out = list(calls)
            calls.clear()
            return out

        a, b = co.a.user_id, co.b.user_id
        assert await office_writes(co.j3, crew=[a]) == []  # a gains j3 (same customer c1)
        assert await office_writes(co.j1, title="Renamed") == []  # not a reach change
        # a leaves j1 but still reads c1 through j3
        assert await office_writes(co.j1, crew=[]) == [(co.j1, frozenset({a}))]
        # deleting j3 takes c1 from a, not j3 itself
        assert await office_writes(co.j3, deleted=True) == [(co.c1, frozenset({a}))]
        # moving j2 to another customer takes c2 from b
        assert await office_writes(co.j2, customer_id=co.c1.split(":")[1]) == [(co.c2, frozenset({b}))]
        # unassigning everyone from j2 takes j2 and c1 from b
        assert sorted(await office_writes(co.j2, crew=[])) == sorted([(co.j2, frozenset({b})), (co.c1, frozenset({b}))])
        # REST-style server edits go through the same path
        await engine.edit(Principal(co.office.user_id, "office", co.office.device_id), co.j2,
                          lambda d, s: D.write_field(d, "crew", [a, b], **s))
        await engine.edit(Principal(co.office.user_id, "office", co.office.device_id), co.j2,
                          lambda d, s: D.write_field(d, "crew", [b], **s))
        await watcher.drain()
        # a loses j2, and c1 too: j1 is no longer theirs and j3 is deleted
        assert calls == [(co.j2, frozenset({a})), (co.c1, frozenset({a}))]
    # after stop, nothing more is reported
    calls.clear()
    await co.office.pull(co.j2)
    await co.office.ok(co.j2, co.office.fields(co.j2, crew=[]))
    await watcher.drain()
    assert calls == []
