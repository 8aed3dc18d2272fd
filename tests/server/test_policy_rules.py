"""server.policy.authorize_writes as a pure function: the permission matrix, field by field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pycrdt import Doc

from schema import documents as D
from schema.models import CREW_STATUS_MOVES, JOB_STATUSES
from schema.view import DocView, resolve_doc
from server import policy
from server.replication import crew_of
from syncd.errors import Forbidden
from syncd.protocol import Principal
from syncd.validation import ValidatedWrite

CREW_A, CREW_B, OFFICE = (str(uuid.uuid4()) for _ in range(3))
JOB = D.doc_id_for("job", str(uuid.uuid4()))
CUSTOMER = D.doc_id_for("customer", str(uuid.uuid4()))
MAT = str(uuid.uuid4())


def job_view(status: str | None = "scheduled", crew: list[str] | None = None, **extra: Any) -> DocView:
    d = Doc()
    values = {"title": "Kitchen", "customer_id": str(uuid.uuid4()), "owner_id": OFFICE,
              "crew": [CREW_A] if crew is None else crew, **extra}
    if status is not None:
        values["status"] = status
    with d.transaction():
        D.write_fields(d, values, ts="1700000000000.00000", device="office-dev", author=OFFICE, role="office")
        D.write_material_field(d, MAT, "name", "Studs", ts="1700000000000.00000", device="office-dev",
                               author=OFFICE, role="office")
    return resolve_doc(d, "job")


def field(name: str, value: Any, saw: str | None = f"status/1700000000000.00000/office-dev") -> ValidatedWrite:
    """A write that saw the office's writes (it supersedes them), unless ``saw=None``."""
    supersedes = (f"{name}/1700000000000.00000/office-dev",) if saw is not None else ()
    return ValidatedWrite(D.WriteKey("fields", None, name, "1700000000001.00000", "crew-dev"), value, supersedes)


def material(name: str, value: Any, item: str = MAT) -> ValidatedWrite:
    return ValidatedWrite(D.WriteKey("materials", item, name, "1700000000001.00000", "crew-dev"), value)


def note(body: str = "Gate code 1234") -> ValidatedWrite:
    return ValidatedWrite(D.WriteKey("notes", str(uuid.uuid4()), None, "1700000000001.00000", "crew-dev"), body)


def crew(user: str = CREW_A) -> Principal:
    return Principal(user, "crew", "crew-dev")


def refused(p: Principal, doc_id: str, view: DocView | None, writes: list[ValidatedWrite]) -> Forbidden:
    with pytest.raises(Forbidden) as e:
        policy.authorize_writes(p, doc_id, view, writes)
    assert e.value.status == 403 and e.value.code == "FORBIDDEN"
    return e.value


@pytest.mark.parametrize("role", ["owner", "office"])
def test_owner_and_office_write_every_field_of_every_document(role):
    p = Principal(OFFICE, role, "office-dev")
    everything = [field(f, v) for f, v in [("title", "T"), ("crew", [CREW_B]), ("owner_id", CREW_A),
                                           ("status", "invoiced"), ("deleted", True), ("estimate", 5.0)]]
    everything += [material("cost", 99.0), material("_removed", []), note()]
    policy.authorize_writes(p, JOB, job_view(), everything)
    policy.authorize_writes(p, JOB, None, everything)  # creating
    policy.authorize_writes(p, CUSTOMER, None, [field("name", "Ann"), field("phone", "555")])


def test_an_unknown_role_writes_nothing():
    e = refused(Principal(OFFICE, "intern", "d"), JOB, job_view(), [note()])
    assert "intern" in e.message


def test_crew_writes_only_jobs_whose_crew_lists_them():
    policy.authorize_writes(crew(CREW_A), JOB, job_view(crew=[CREW_B, CREW_A]), [note()])
    e = refused(crew(CREW_B), JOB, job_view(crew=[CREW_A]), [note()])
    assert "not in the crew" in e.message
    refused(crew(CREW_A), JOB, job_view(crew=[]), [note()])
    refused(crew(CREW_A), JOB, job_view(crew=[]), [])


def test_crew_never_creates_documents_nor_writes_customers():
    e = refused(crew(), JOB, None, [field("title", "Mine now"), field("crew", [CREW_A])])
    assert "create" in e.message
    e = refused(crew(), CUSTOMER, None, [field("name", "X")])
    assert "customer" in e.message and "read-only" in e.message
    cust = Doc()
    with cust.transaction():
        D.write_fields(cust, {"name": "Ann"}, ts="1700000000000.00000", device="o", author=OFFICE, role="office")
    refused(crew(), CUSTOMER, resolve_doc(cust, "customer"), [field("phone", "555 1234")])


FORBIDDEN_JOB_FIELDS = [("title", "Free job"), ("description", "x"), ("address", "1 Main St"), ("estimate", 1.0),
                        ("owner_id", CREW_A), ("crew", [CREW_A, CREW_B]), ("customer_id", str(uuid.uuid4())),
                        ("scheduled_start", "2030-01-01"), ("scheduled_end", "2030-01-02"), ("deleted", True)]


@pytest.mark.parametrize("name,value", FORBIDDEN_JOB_FIELDS)
def test_crew_may_not_write_job_fields_other_than_status(name, value):
    e = refused(crew(), JOB, job_view(), [field("status", "in_progress"), field(name, value), note()])
    assert f"job.{name}" in e.message
    assert e.details == [{"field": f"job.{name}", "message": f"a crew member may not change job.{name}"}]


@pytest.mark.parametrize("item", [MAT, str(uuid.uuid4())], ids=["existing", "new"])
def test_crew_may_not_set_a_material_cost(item):
    e = refused(crew(), JOB, job_view(), [material("name", "Screws", item), material("cost", 3.5, item)])
    assert "material.cost" in e.message and "price" in e.message
    refused(crew(), JOB, job_view(), [material("cost", None, item)])


def test_crew_ticks_adds_removes_materials_and_adds_notes():
    new = str(uuid.uuid4())
    policy.authorize_writes(crew(), JOB, job_view(), [
        material("purchased", True), material("quantity", 3.0), material("unit", "box"), material("name", "2x4"),
        material("name", "Screws", new), material("quantity", 1.0, new), material("purchased", False, new),
        material("_removed", [f"{MAT}/name/1700000000000.00000/office-dev"]), note(), note("second")])


def test_every_refused_field_is_named():
    e = refused(crew(), JOB, job_view(), [field("title", "x"), material("cost", 1.0), field("crew", [])])
    assert {d["field"] for d in e.details} == {"job.title", "material.cost", "job.crew"}
    for f in ("job.title", "material.cost", "job.crew"):
        assert f in e.message


def test_crew_status_chain_is_exactly_the_closure_of_crew_moves():
    # one step is always allowed; more steps only through allowed intermediate statuses
    for old, news in CREW_STATUS_MOVES.items():
        for new in news:
            assert policy.crew_status_allowed(old, new)
    assert policy.crew_status_allowed("scheduled", "completed")  # started then finished offline
    assert policy.crew_status_allowed("on_hold", "completed")
    for old in JOB_STATUSES:
        assert policy.crew_status_allowed(old, old)  # re-asserting the current status changes nothing
    for new in ("lead", "estimate", "scheduled", "invoiced", "cancelled"):
        for old in JOB_STATUSES:
            if old != new:
                assert not policy.crew_status_allowed(old, new), (old, new)
    for old in ("lead", "estimate", "completed", "invoiced", "cancelled"):
        for new in JOB_STATUSES:
            if old != new:
                assert not policy.crew_status_allowed(old, new), (old, new)
    assert not policy.crew_status_allowed(None, "in_progress")
    assert not policy.crew_status_allowed("scheduled", None)


@pytest.mark.parametrize("current,new,ok", [
    ("scheduled", "in_progress", True), ("in_progress", "completed", True), ("in_progress", "on_hold", True),
    ("on_hold", "in_progress", True), ("scheduled", "completed", True),
    ("scheduled", "invoiced", False), ("lead", "in_progress", False), ("completed", "in_progress", False),
    ("cancelled", "in_progress", False), ("in_progress", "scheduled", False), (None, "in_progress", False),
])
def test_crew_status_write_against_the_committed_status(current, new, ok):
    view = job_view(status=current)
    if ok:
        policy.authorize_writes(crew(), JOB, view, [field("status", new)])
    else:
        e = refused(crew(), JOB, view, [field("status", new)])
        assert "job.status" in e.message and repr(new) in e.message


@pytest.mark.parametrize("new,ok", [("in_progress", True), ("completed", True), ("on_hold", True),
                                    ("invoiced", False), ("scheduled", False), ("lead", False)])
def test_crew_status_write_concurrent_with_the_committed_one(new, ok):
    """An offline crew that did not see the office cancel the job is not stuck: owner-wins
    arbitrates, but it may only name statuses a crew move reaches."""
    view = job_view(status="cancelled")
    if ok:
        policy.authorize_writes(crew(), JOB, view, [field("status", new, saw=None)])
    else:
        refused(crew(), JOB, view, [field("status", new, saw=None)])


def test_crew_of_reads_the_resolved_crew():
    assert crew_of(None) == frozenset()
    assert crew_of(job_view(crew=[CREW_A, CREW_B])) == {CREW_A, CREW_B}
    assert crew_of(job_view(crew=[])) == frozenset()
    assert crew_of(DocView(kind="job")) == frozenset()
