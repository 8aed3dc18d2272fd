"""``/api/jobs`` through the real app, on SQLite and PostgreSQL: CRUD and soft delete, filters,
status and assignment (with the crew's limits), notes, the timeline, validation, 404s and
role refusals; every write an op-log entry of the caller and an event."""

from __future__ import annotations

from schema import documents as D

from test_rest_kit import assert_error, audit_for, caller, events, fields_of, oplog, start  # type: ignore[import-not-found]


async def test_job_crud_round_trip_and_soft_delete(make_harness):
    h = await start(make_harness)
    office, owner = await caller(h, "office"), await caller(h, "owner")
    cust = await office.customer("Ada", address="12 Analytical Row", phone="555-0100")
    job = await office.job(cust["id"], "Kitchen remodel", description="new cabinets", estimate=12500,
                           scheduled_start="2030-05-01", scheduled_end="2030-05-09")
    jid = job["id"]
    assert job == {"id": jid, "customer_id": cust["id"], "title": "Kitchen remodel", "description": "new cabinets",
                   "address": None, "status": "lead", "scheduled_start": "2030-05-01",
                   "scheduled_end": "2030-05-09", "owner_id": office.id, "crew": [], "estimate": 12500.0,
                   "deleted": False}
    detail = await office.ok("GET", f"/api/jobs/{jid}")
    assert detail == {**job, "customer": cust, "materials": [], "notes": []}

    updated = await owner.ok("PUT", f"/api/jobs/{jid}", {"title": "Kitchen + pantry", "description": None,
                                                         "owner_id": owner.id})
    assert updated == {**job, "title": "Kitchen + pantry", "description": None, "owner_id": owner.id}
    assert (await office.ok("GET", f"/api/jobs/{jid}"))["title"] == "Kitchen + pantry"

    deleted = await office.ok("DELETE", f"/api/jobs/{jid}")
    assert deleted == {**updated, "deleted": True}
    assert_error(await office.get(f"/api/jobs/{jid}"), 404, "NOT_FOUND")
    assert_error(await office.put(f"/api/jobs/{jid}", {"title": "x"}), 404, "NOT_FOUND")
    assert_error(await office.put(f"/api/jobs/{jid}/status", {"status": "scheduled"}), 404, "NOT_FOUND")
    assert (await office.ok("GET", f"/api/jobs/{jid}", include_deleted="true"))["deleted"] is True
    assert await office.ok("GET", "/api/jobs") == []
    assert [j["id"] for j in await office.ok("GET", "/api/jobs", include_deleted="true")] == [jid]

    log = await oplog(h, f"job:{jid}")
    assert [e["user_id"] for e in log] == [office.id, owner.id, office.id]
    assert [(e["type"], e["actor"]) for e in await events(h, f"job:{jid}")] == [
        ("job.created", office.id), ("job.updated", owner.id), ("job.deleted", office.id)]


async def test_list_filters_and_order(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    crew1, crew2 = await caller(h, "crew"), await caller(h, "crew")
    a, b = (await office.customer("A"))["id"], (await office.customer("B"))["id"]
    j1 = await office.job(a, "one", status="scheduled", scheduled_start="2030-01-03", crew=[crew1.id])
    j2 = await office.job(a, "two", status="lead", crew=[crew1.id, crew2.id])
    j3 = await office.job(b, "three", status="scheduled", scheduled_start="2030-01-01T08:00Z")
    j4 = await office.job(b, "four", status="completed", scheduled_start="2030-01-02", crew=[crew2.id])

    async def ids(**params) -> list[str]:
        return [j["id"] for j in await office.walk("/api/jobs", 2, **params)]

    unscheduled_last = [j3["id"], j4["id"], j1["id"], j2["id"]]
    assert await ids() == unscheduled_last
    assert await ids(status="scheduled") == [j3["id"], j1["id"]]
    assert await ids(customer_id=a) == [j1["id"], j2["id"]]
    assert await ids(customer_id=b.upper(), status="completed") == [j4["id"]]
    assert await ids(assigned_to=crew1.id) == [j1["id"], j2["id"]]
    assert await ids(assigned_to=crew2.id, customer_id=a) == [j2["id"]]
    assert await ids(status="invoiced") == []
    assert (await office.ok("GET", f"/api/jobs/{j2['id']}"))["crew"] == sorted([crew1.id, crew2.id])
    for params, field in (({"status": "done"}, "status"), ({"assigned_to": "bob"}, "assigned_to"),
                          ({"customer_id": "x"}, "customer_id"), ({"limit": 500}, "limit")):
        err = assert_error(await office.get("/api/jobs", **params), 422, "VALIDATION_ERROR")
        assert fields_of(err) == {field}


async def test_crew_sees_only_assigned_jobs(make_harness):
    h = await start(make_harness)
    office, crew = await caller(h, "office"), await caller(h, "crew")
    cust = (await office.customer("A"))["id"]
    mine = await office.job(cust, "mine", crew=[crew.id])
    other = await office.job(cust, "other")

    assert [j["id"] for j in await crew.walk("/api/jobs", 1)] == [mine["id"]]
    assert [j["id"] for j in await crew.walk("/api/jobs", 1, assigned_to=office.id)] == []
    assert (await crew.ok("GET", f"/api/jobs/{mine['id']}"))["title"] == "mine"
    for path in (f"/api/jobs/{other['id']}", f"/api/jobs/{other['id']}/events",
                 f"/api/jobs/{other['id']}/materials"):
        assert_error(await crew.get(path), 403, "FORBIDDEN")
    assert_error(await crew.get("/api/jobs", include_deleted="true"), 403, "FORBIDDEN")
    # crews do not create, edit, delete or assign jobs
    assert_error(await crew.post("/api/jobs", {"customer_id": cust, "title": "x"}), 403, "FORBIDDEN")
    assert_error(await crew.put(f"/api/jobs/{mine['id']}", {"title": "x"}), 403, "FORBIDDEN")
    assert_error(await crew.delete(f"/api/jobs/{mine['id']}"), 403, "FORBIDDEN")
    assert_error(await crew.post(f"/api/jobs/{mine['id']}/assign", {"crew": []}), 403, "FORBIDDEN")
    refused = await audit_for(h, crew.id)
    assert len(refused) == 8 and all(a["reason"].startswith("FORBIDDEN") for a in refused)
    assert refused[0]["resource"] == f"job:{other['id']}"

    # unassigned: the job disappears from the crew's view at once
    await office.ok("POST", f"/api/jobs/{mine['id']}/assign", {"crew": []})
    assert await crew.ok("GET", "/api/jobs") == []
    assert_error(await crew.get(f"/api/jobs/{mine['id']}"), 403, "FORBIDDEN")


async def test_status_and_assignment(make_harness):
    h = await start(make_harness)
    office, crew, other_crew = await caller(h, "office"), await caller(h, "crew"), await caller(h, "crew")
    cust = (await office.customer("A"))["id"]
    jid = (await office.job(cust, "Deck"))["id"]
    doc_id = D.doc_id_for("job", jid)

    assigned = await office.ok("POST", f"/api/jobs/{jid}/assign", {"crew": [crew.id, other_crew.id.upper()]})
    assert assigned["crew"] == sorted([crew.id, other_crew.id])
    assert (await office.ok("POST", f"/api/jobs/{jid}/assign", {"crew": [crew.id]}))["crew"] == [crew.id]
    assert (await office.ok("PUT", f"/api/jobs/{jid}/status", {"status": "scheduled"}))["status"] == "scheduled"

    # the crew moves it along its allowed path, and only there
    assert (await crew.ok("PUT", f"/api/jobs/{jid}/status", {"status": "in_progress"}))["status"] == "in_progress"
    assert_error(await crew.put(f"/api/jobs/{jid}/status", {"status": "invoiced"}), 403, "FORBIDDEN")
    assert_error(await other_crew.put(f"/api/jobs/{jid}/status", {"status": "on_hold"}), 403, "FORBIDDEN")
    assert (await crew.ok("PUT", f"/api/jobs/{jid}/status", {"status": "on_hold"}))["status"] == "on_hold"
    assert (await crew.ok("PUT", f"/api/jobs/{jid}/status", {"status": "on_hold"}))["status"] == "on_hold"  # no-op
    assert (await office.ok("PUT", f"/api/jobs/{jid}/status", {"status": "invoiced"}))["status"] == "invoiced"

    log = await oplog(h, doc_id)
    assert [e["user_id"] for e in log] == [office.id, office.id, office.id, office.id, crew.id, crew.id, office.id]
    ev = [(e["type"], e["actor"], e["payload"]) for e in await events(h, doc_id)]
    assert ev[1:] == [
        ("job.assigned", office.id, {"crew": sorted([crew.id, other_crew.id]), "added": sorted([crew.id, other_crew.id]),
                                     "removed": []}),
        ("job.assigned", office.id, {"crew": [crew.id], "added": [], "removed": [other_crew.id]}),
        ("job.status_changed", office.id, {"from": "lead", "to": "scheduled"}),
        ("job.status_changed", crew.id, {"from": "scheduled", "to": "in_progress"}),
        ("job.status_changed", crew.id, {"from": "in_progress", "to": "on_hold"}),
        ("job.status_changed", office.id, {"from": "on_hold", "to": "invoiced"}),
    ]
    reasons = [a["reason"] for a in await audit_for(h, crew.id)]
    assert len(reasons) == 1 and "invoiced" in reasons[0]  # refused by the engine's write policy, audited
    assert len(await audit_for(h, other_crew.id)) == 1

    for body, field in (({"status": "done"}, "status"), ({}, "status"), ({"status": "lead", "x": 1}, "x")):
        err = assert_error(await office.put(f"/api/jobs/{jid}/status", body), 422, "VALIDATION_ERROR")
        assert fields_of(err) == {field}
    err = assert_error(await office.post(f"/api/jobs/{jid}/assign", {"crew": [crew.id, crew.id]}), 422,
                       "VALIDATION_ERROR")
    assert fields_of(err) == {"crew"}
    missing = D.new_id()
    err = assert_error(await office.post(f"/api/jobs/{jid}/assign", {"crew": [crew.id, missing]}), 422,
                       "VALIDATION_ERROR")
    assert err["details"] == [{"field": "crew.1", "message": f"no active user {missing}"}]
    assert_error(await office.post(f"/api/jobs/{D.new_id()}/assign", {"crew": []}), 404, "NOT_FOUND")
    assert len(await oplog(h, doc_id)) == len(log)


async def test_create_and_update_validation(make_harness):
    h = await start(make_harness)
    office, crew = await caller(h, "office"), await caller(h, "crew")
    cust = (await office.customer("A"))["id"]
    gone = (await office.customer("Gone"))["id"]
    await office.ok("DELETE", f"/api/customers/{gone}")
    cases = [
        ({"title": "x"}, {"customer_id"}),
        ({"customer_id": cust}, {"title"}),
        ({"customer_id": "nope", "title": "x"}, {"customer_id"}),
        ({"customer_id": cust, "title": "x", "status": "done"}, {"status"}),
        ({"customer_id": cust, "title": "x", "estimate": -1}, {"estimate"}),
        ({"customer_id": cust, "title": "x", "estimate": "12"}, {"estimate"}),
        ({"customer_id": cust, "title": "x", "scheduled_start": "2030-02-30"}, {"scheduled_start"}),
        ({"customer_id": cust, "title": "x", "scheduled_start": "2030-02-03", "scheduled_end": "2030-02-01"}, {"body"}),
        ({"customer_id": cust, "title": "x", "crew": "everyone"}, {"crew"}),
        ({"customer_id": cust, "title": "x", "colour": "red"}, {"colour"}),
        ({"customer_id": D.new_id(), "title": "x"}, {"customer_id"}),      # no such customer
        ({"customer_id": gone, "title": "x"}, {"customer_id"}),            # deleted customer
        ({"customer_id": cust, "title": "x", "owner_id": crew.id}, {"owner_id"}),  # a crew cannot own a job
        ({"customer_id": cust, "title": "x", "crew": [D.new_id()]}, {"crew.0"}),
    ]
    for body, fields in cases:
        err = assert_error(await office.post("/api/jobs", body), 422, "VALIDATION_ERROR")
        assert fields_of(err) == fields, body
    assert await office.ok("GET", "/api/jobs") == []

    jid = (await office.job(cust, "x", scheduled_start="2030-02-03"))["id"]
    err = assert_error(await office.put(f"/api/jobs/{jid}", {"scheduled_end": "2030-02-01"}), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"scheduled_end"}
    for body, fields in (({"title": None}, {"title"}), ({"status": "lead"}, {"status"}), ({"crew": []}, {"crew"}),
                         ({"customer_id": gone}, {"customer_id"}), ({"owner_id": crew.id}, {"owner_id"})):
        err = assert_error(await office.put(f"/api/jobs/{jid}", body), 422, "VALIDATION_ERROR")
        assert fields_of(err) == fields, body
    assert len(await oplog(h, f"job:{jid}")) == 1
    assert (await office.ok("PUT", f"/api/jobs/{jid}", {"scheduled_end": "2030-02-04"}))["scheduled_end"] == "2030-02-04"


async def test_unknown_jobs_are_404(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    for jid in (D.new_id(), "123"):
        for method, path, body in (("GET", f"/api/jobs/{jid}", None), ("PUT", f"/api/jobs/{jid}", {"title": "x"}),
                                   ("DELETE", f"/api/jobs/{jid}", None),
                                   ("PUT", f"/api/jobs/{jid}/status", {"status": "lead"}),
                                   ("POST", f"/api/jobs/{jid}/notes", {"body": "hi"}),
                                   ("GET", f"/api/jobs/{jid}/events", None)):
            assert_error(await office.call(method, path, json=body), 404, "NOT_FOUND")


async def test_notes_and_timeline(make_harness):
    h = await start(make_harness)
    office, crew = await caller(h, "office"), await caller(h, "crew")
    cust = (await office.customer("A"))["id"]
    jid = (await office.job(cust, "Roof", crew=[crew.id], status="scheduled"))["id"]
    other = (await office.job(cust, "Other"))["id"]

    n1 = await crew.ok("POST", f"/api/jobs/{jid}/notes", {"body": "  Ladder needed\r\non site  "}, status=201)
    assert n1["body"] == "Ladder needed\non site" and n1["author_id"] == crew.id and n1["device_id"] == crew.device_id
    n2 = await office.ok("POST", f"/api/jobs/{jid}/notes", {"body": "Customer called"}, status=201)
    assert [n["id"] for n in (await crew.ok("GET", f"/api/jobs/{jid}"))["notes"]] == [n1["id"], n2["id"]]
    assert_error(await crew.post(f"/api/jobs/{other}/notes", {"body": "x"}), 403, "FORBIDDEN")
    for body in ({"body": "   "}, {}, {"body": "x", "author": office.id}):
        assert_error(await crew.post(f"/api/jobs/{jid}/notes", body), 422, "VALIDATION_ERROR")
    await crew.ok("PUT", f"/api/jobs/{jid}/status", {"status": "in_progress"})
    await crew.ok("POST", f"/api/jobs/{jid}/materials", {"name": "Shingles", "quantity": 30}, status=201)

    stored = await events(h, f"job:{jid}")
    assert [(e["type"], e["actor"]) for e in stored] == [
        ("job.created", office.id), ("job.assigned", office.id), ("note.added", crew.id), ("note.added", office.id),
        ("job.status_changed", crew.id), ("material.added", crew.id)]
    timeline = await crew.walk(f"/api/jobs/{jid}/events", 2)
    assert [e["id"] for e in timeline] == [e["id"] for e in stored]
    assert timeline[2]["payload"] == {"job_id": jid, "body": "Ladder needed\non site"}
    assert set(timeline[0]) == {"id", "doc_id", "record_type", "record_id", "type", "payload", "actor", "ts", "seq",
                                "created_at"}
    newest_first = await office.walk(f"/api/jobs/{jid}/events", 4, order="desc")
    assert [e["id"] for e in newest_first] == [e["id"] for e in reversed(stored)]
    asc_cursor = (await office.get(f"/api/jobs/{jid}/events", limit=1)).json()["meta"]["next_cursor"]
    err = assert_error(await office.get(f"/api/jobs/{jid}/events", cursor=asc_cursor, order="desc"), 422,
                       "VALIDATION_ERROR")
    assert fields_of(err) == {"cursor"}
    err = assert_error(await office.get(f"/api/jobs/{other}/events", cursor=asc_cursor), 422, "VALIDATION_ERROR")
    assert_error(await office.get(f"/api/jobs/{jid}/events", order="sideways"), 422, "VALIDATION_ERROR")
