"""schema.view over real pycrdt documents written with schema.documents and exchanged."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from conflict_rules.hlc import format_ts
from schema import documents as d
from schema.view import DocView, explain_path, resolve_doc, resolve_raw

BASE = 1_700_000_000_000
MIN = 60_000
OWNER, CREW, CREW2, OFFICE, BOSS = "u-olivia", "u-bo", "u-cy", "u-ana", "u-boss"


def ts(offset_ms: int = 0, counter: int = 0) -> str:
    return format_ts(BASE + offset_ms, counter)


def replicas(n: int) -> list[Doc]:
    return [Doc(client_id=100 + i) for i in range(n)]


def sync(*docs: Doc) -> None:
    """Full-state exchange between every pair, as a reconnect would do."""
    states = [doc.get_update() for doc in docs]
    for doc in docs:
        for s in states:
            doc.apply_update(s)


def write(doc: Doc, fn, *args, **kw):
    with doc.transaction(origin="test"):
        return fn(doc, *args, **kw)


def new_job(doc: Doc) -> None:
    write(doc, d.write_fields, {"title": "Kitchen", "owner_id": OWNER, "status": "scheduled"},
          ts=ts(0), device="dev-office", author=OFFICE, role="office")


def views(*docs: Doc, kind: str = "job") -> list[DocView]:
    return [resolve_doc(doc, kind) for doc in docs]


def same_everywhere(*docs: Doc, kind: str = "job") -> DocView:
    vs = views(*docs, kind=kind)
    assert all(v.to_json() == vs[0].to_json() for v in vs), "replicas disagree on the view"
    return vs[0]


# --- status: owner_wins ----------------------------------------------------------------------


@pytest.mark.parametrize("owner_first", [True, False])
def test_owner_on_hold_beats_offline_crew_whichever_arrives_first(owner_first: bool) -> None:
    office, owner, crew, server = replicas(4)
    new_job(office)
    sync(office, owner, crew, server)
    write(owner, d.write_field, "status", "on_hold", ts=ts(1 * MIN), device="dev-olivia", author=OWNER, role="office")
    write(crew, d.write_field, "status", "in_progress", ts=ts(15 * MIN), device="dev-crew", author=CREW, role="crew")
    first, second = (owner, crew) if owner_first else (crew, owner)
    server.apply_update(first.get_update())
    assert resolve_doc(server, "job").record["status"] == ("on_hold" if owner_first else "in_progress")
    server.apply_update(second.get_update())
    sync(office, owner, crew, server)
    view = same_everywhere(office, owner, crew, server)
    assert view.record["status"] == "on_hold"
    assert view.record_resolutions["status"].reason == "owner_wins"
    assert view.context.record_owner == OWNER

    out = explain_path(server, "job", "status", record="job:1")
    assert json.loads(json.dumps(out)) == out
    assert (out["record"], out["rule"], out["value"], out["concurrent"]) == ("job:1", "owner_wins", "on_hold", True)
    assert [(c["value"], c["author"], c["winner"], c["owner_tier"]) for c in out["candidates"]] == [
        ("on_hold", OWNER, True, True), ("in_progress", CREW, False, False)]

    # The crew syncs, sees on_hold, then sets in_progress: its write supersedes the owner's.
    write(crew, d.write_field, "status", "in_progress", ts=ts(20 * MIN), device="dev-crew", author=CREW, role="crew")
    sync(office, owner, crew, server)
    view = same_everywhere(office, owner, crew, server)
    assert view.record["status"] == "in_progress"
    assert view.record_resolutions["status"].reason == "only_candidate"


def test_role_owner_beats_newer_office_write_and_owner_id_is_resolved_first() -> None:
    boss, office = replicas(2)
    new_job(boss)
    sync(boss, office)
    write(boss, d.write_field, "status", "cancelled", ts=ts(1 * MIN), device="dev-boss", author=BOSS, role="owner")
    # Concurrently the office reassigns the job to itself and sets a status.
    write(office, d.write_fields, {"owner_id": OFFICE, "status": "scheduled"}, ts=ts(9 * MIN), device="dev-office",
          author=OFFICE, role="office")
    sync(boss, office)
    view = same_everywhere(boss, office)
    assert view.record["owner_id"] == OFFICE and view.context.record_owner == OFFICE
    # The office user is now the job's owner and the boss has role owner: both in the tier, lww decides.
    assert (view.record["status"], view.record_resolutions["status"].reason) == ("scheduled", "latest_timestamp")


# --- materials: union ------------------------------------------------------------------------


def test_two_crews_add_drywall_screws_and_both_are_kept() -> None:
    office, crew1, crew2 = replicas(3)
    new_job(office)
    sync(office, crew1, crew2)
    ids = []
    for doc, dev, who, qty in ((crew1, "dev-crew-1", CREW, 2), (crew2, "dev-crew-2", CREW2, 5)):
        mid = d.new_id()
        ids.append(mid)
        for f, v in (("name", "drywall screws"), ("quantity", qty)):
            write(doc, d.write_material_field, mid, f, v, ts=ts(MIN), device=dev, author=who, role="crew")
    sync(office, crew1, crew2)
    view = same_everywhere(office, crew1, crew2)
    assert set(view.present_materials()) == set(ids) == set(view.materials)
    assert sorted(m.fields["quantity"] for m in view.materials.values()) == [2, 5]
    assert all(m.fields["name"] == "drywall screws" and m.resolution.reason == "present"
               for m in view.materials.values())
    # pycrdt hands numbers back as floats; the view passes them through untouched.
    assert all(isinstance(m.fields["quantity"], float) for m in view.materials.values())


def test_edit_concurrent_with_remove_keeps_item_then_a_full_remove_removes_it() -> None:
    office, crew = replicas(2)
    new_job(office)
    mid = d.new_id()
    write(office, d.write_material_field, mid, "name", "drywall screws", ts=ts(0), device="dev-office", author=OFFICE,
          role="office")
    write(office, d.write_material_field, mid, "quantity", 2, ts=ts(0), device="dev-office", author=OFFICE,
          role="office")
    sync(office, crew)
    new_qty = write(crew, d.write_material_field, mid, "quantity", 3, ts=ts(5 * MIN), device="dev-crew", author=CREW,
                    role="crew")
    rm = write(office, d.remove_material, mid, ts=ts(6 * MIN), device="dev-office", author=OFFICE, role="office")
    sync(office, crew)
    view = same_everywhere(office, crew)
    item = view.materials[mid]
    assert (item.removed, item.resolution.reason, item.fields["quantity"]) == (False, "kept_concurrent_edit", 3)

    out = explain_path(office, "job", f"materials/{mid}")
    assert (out["rule"], out["removed"], out["reason"]) == ("union", False, "kept_concurrent_edit")
    [removal] = out["candidates"]
    assert (removal["key"], removal["covers"], removal["missing"]) == (rm, False, [new_qty])

    # Having seen the edit, the office removes again: this removal saw every live write.
    rm2 = write(office, d.remove_material, mid, ts=ts(7 * MIN), device="dev-office", author=OFFICE, role="office")
    sync(office, crew)
    view = same_everywhere(office, crew)
    assert view.materials[mid].removed and mid not in view.present_materials()
    out = explain_path(crew, "job", f"materials/{mid}")
    assert [(c["key"], c["covers"], c["missing"]) for c in out["candidates"]] == [(rm2, True, [])]
    assert out["reason"] == "removed"


def test_explain_material_field() -> None:
    a, b = replicas(2)
    mid = d.new_id()
    write(a, d.write_material_field, mid, "quantity", 1, ts=ts(0), device="dev-a", author=CREW, role="crew")
    sync(a, b)
    write(a, d.write_material_field, mid, "quantity", 4, ts=ts(MIN), device="dev-a", author=CREW, role="crew")
    write(b, d.write_material_field, mid, "quantity", 7, ts=ts(MIN), device="dev-b", author=CREW2, role="crew")
    sync(a, b)
    out = explain_path(a, "job", f"materials/{mid}/quantity")
    assert (out["rule"], out["value"], out["reason"]) == ("lww", 7, "device_tiebreak")
    assert [c["device"] for c in out["candidates"]] == ["dev-b", "dev-a"]
    empty = explain_path(a, "job", f"materials/{mid}/cost")
    assert (empty["reason"], empty["candidates"]) == ("no_candidates", [])


# --- notes: append ---------------------------------------------------------------------------


def test_notes_from_every_replica_are_kept_in_order() -> None:
    a, b, c = replicas(3)
    n1, n2, n3 = d.new_id(), d.new_id(), d.new_id()
    write(b, d.add_note, n2, "second", ts=ts(2 * MIN), device="dev-b", author=CREW2, role="crew")
    write(a, d.add_note, n1, "first", ts=ts(1 * MIN), device="dev-a", author=CREW, role="crew")
    write(c, d.add_note, n3, "third", ts=ts(2 * MIN), device="dev-c", author=OFFICE, role="office")
    sync(c, b, a)
    view = same_everywhere(a, b, c)
    assert [(n["id"], n["body"], n["device"]) for n in view.notes] == [
        (n1, "first", "dev-a"), (n2, "second", "dev-b"), (n3, "third", "dev-c")]
    assert set(view.notes[0]) == {"id", "body", "author", "role", "device", "time"}
    out = explain_path(a, "job", "notes")
    assert [c["id"] for c in out["candidates"]] == [n1, n2, n3] and out["rule"] == "append"


# --- customers, unknown paths, determinism ---------------------------------------------------


def test_customer_view_and_unknown_paths() -> None:
    a, b = replicas(2)
    write(a, d.write_fields, {"name": "Acme", "phone": "555-0100"}, ts=ts(0), device="dev-a", author=OFFICE,
          role="office")
    write(a, d.write_field, "bogus", "x", ts=ts(0), device="dev-a", author=OFFICE, role="office")
    sync(a, b)
    write(b, d.write_field, "phone", "555-0199", ts=ts(MIN), device="dev-b", author=OFFICE, role="office")
    sync(a, b)
    view = same_everywhere(a, b, kind="customer")
    assert view.record == {"name": "Acme", "phone": "555-0199"}  # undeclared "bogus" ignored
    assert (view.materials, view.notes) == ({}, [])
    assert explain_path(a, "customer", "email")["reason"] == "no_candidates"
    assert explain_path(a, "customer", "notes")["rule"] == "lww"  # a customer's notes are one text field
    for path in ("bogus", "status", "materials/x", "phone/x"):
        with pytest.raises(KeyError, match="unknown path"):
            explain_path(a, "customer", path)


@pytest.mark.parametrize("path", ["colour", "materials", "materials/11111111-1111-4111-8111-111111111111",
                                  "materials/11111111-1111-4111-8111-111111111111/quantity", "notes/x"])
def test_unknown_job_paths_raise_key_error(path: str) -> None:
    doc = Doc()
    new_job(doc)
    with pytest.raises(KeyError):
        explain_path(doc, "job", path)


def test_unknown_material_field_raises_key_error() -> None:
    doc = Doc()
    mid = d.new_id()
    write(doc, d.write_material_field, mid, "name", "nails", ts=ts(0), device="dev-a", author=CREW, role="crew")
    with pytest.raises(KeyError, match="colour"):
        explain_path(doc, "job", f"materials/{mid}/colour")


def test_resolve_raw_checks_the_kind() -> None:
    with pytest.raises(ValueError):
        resolve_raw(d.RawCustomerDoc(), "job")
    with pytest.raises(ValueError):
        resolve_raw(d.RawJobDoc(), "invoice")


def test_apply_order_does_not_change_the_view() -> None:
    a, b, c = replicas(3)
    new_job(a)
    sync(a, b, c)
    mid = d.new_id()
    write(a, d.write_field, "status", "on_hold", ts=ts(MIN), device="dev-a", author=OWNER, role="office")
    write(b, d.write_field, "status", "in_progress", ts=ts(2 * MIN), device="dev-b", author=CREW, role="crew")
    write(b, d.write_material_field, mid, "name", "studs", ts=ts(2 * MIN), device="dev-b", author=CREW, role="crew")
    write(c, d.write_field, "title", "Kitchen v2", ts=ts(MIN), device="dev-c", author=OFFICE, role="office")
    write(c, d.add_note, d.new_id(), "hi", ts=ts(MIN), device="dev-c", author=OFFICE, role="office")
    ups = [a.get_update(), b.get_update(), c.get_update()]
    x, y = Doc(client_id=900), Doc(client_id=901)
    for u in ups:
        x.apply_update(u)
    for u in reversed(ups):
        y.apply_update(u)
    vx, vy = resolve_doc(x, "job"), resolve_doc(y, "job")
    assert vx.to_json() == vy.to_json()
    assert vx.record == {"title": "Kitchen v2", "owner_id": OWNER, "status": "on_hold"}
    assert list(vx.record) == sorted(vx.record)
    for path in ("status", "title", f"materials/{mid}", "notes"):
        assert explain_path(x, "job", path) == explain_path(y, "job", path)


# --- a write that saw the others supersedes them, whatever the rule and timestamps -----------

step = st.tuples(
    st.sampled_from(["write", "sync"]),
    st.integers(0, 2),  # replica
    st.sampled_from([(OWNER, "office"), (BOSS, "owner"), (CREW, "crew"), (OFFICE, "office")]),
    st.integers(-3, 3),  # minutes: clocks disagree, some run fast
    st.sampled_from(["scheduled", "in_progress", "on_hold", "completed"]),
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step, max_size=12), last=st.integers(0, 2), last_min=st.integers(-10, 10))
def test_a_write_that_saw_every_other_write_wins(steps, last: int, last_min: int) -> None:
    docs = replicas(3)
    new_job(docs[0])
    sync(*docs)
    for i, (op, r, (author, role), minute, value) in enumerate(steps):
        if op == "sync":
            sync(docs[r], docs[(r + 1) % 3])
        else:
            write(docs[r], d.write_field, "status", value, ts=ts(minute * MIN, i), device=f"dev-{r}", author=author,
                  role=role)
    sync(*docs)
    # A crew member who has seen everything writes, possibly with an earlier timestamp.
    write(docs[last], d.write_field, "status", "final", ts=ts(last_min * MIN, 99), device=f"dev-{last}",
          author=CREW, role="crew")
    sync(*docs)
    view = same_everywhere(*docs)
    assert view.record["status"] == "final"
    assert view.record_resolutions["status"].reason == "only_candidate"
    assert len(d.read_raw(docs[0], "job").record.fields["status"]) == 1
    assert all(len(doc.get("fields", type=Map)) == 3 for doc in docs)
