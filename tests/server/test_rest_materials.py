"""A job's materials through the real app, on SQLite and PostgreSQL: add one or many, list
(paginated), update, union-safe removal, bulk update (one edit per job document, per-item
results), validation, 404s and the crew's scope."""

from __future__ import annotations

import base64

from pycrdt import Doc

from schema import documents as D
from schema.view import resolve_doc

from test_rest_kit import assert_error, audit_for, caller, events, fields_of, oplog, start  # type: ignore[import-not-found]
from server_testkit import b64  # type: ignore[import-not-found]


async def _setup(make_harness):
    h = await start(make_harness)
    office, crew = await caller(h, "office"), await caller(h, "crew")
    cust = (await office.customer("A"))["id"]
    mine = (await office.job(cust, "mine", crew=[crew.id], status="scheduled"))["id"]
    other = (await office.job(cust, "other"))["id"]
    return h, office, crew, mine, other


async def test_add_list_update_remove(make_harness):
    h, office, crew, jid, _ = await _setup(make_harness)
    one = await office.ok("POST", f"/api/jobs/{jid}/materials", {"name": " 2x4 studs ", "quantity": 40, "unit": "pcs",
                                                                 "cost": 3.5}, status=201)
    assert one == {"id": one["id"], "job_id": jid, "name": "2x4 studs", "quantity": 40.0, "unit": "pcs",
                   "purchased": False, "cost": 3.5}
    many = await crew.ok("POST", f"/api/jobs/{jid}/materials",
                         [{"name": "Drywall screws"}, {"name": "anchors", "quantity": 0, "purchased": True}], status=201)
    assert [(m["name"], m["quantity"], m["purchased"]) for m in many] == [("Drywall screws", 1.0, False),
                                                                          ("anchors", 0.0, True)]
    assert len(await oplog(h, f"job:{jid}")) == 3  # create + one edit per request

    listed = await crew.walk(f"/api/jobs/{jid}/materials", 2)
    assert [m["name"] for m in listed] == ["2x4 studs", "anchors", "Drywall screws"]

    ticked = await crew.ok("PUT", f"/api/materials/{one['id']}", {"purchased": True, "unit": None})
    assert ticked == {**one, "purchased": True, "unit": None}
    assert await crew.ok("PUT", f"/api/materials/{one['id']}", {}) == ticked

    removed = await office.ok("DELETE", f"/api/materials/{one['id']}")
    assert removed == {"id": one["id"], "job_id": jid, "removed": True}
    assert await office.ok("DELETE", f"/api/materials/{one['id']}") == removed  # a retried delete is harmless
    assert [m["name"] for m in await office.walk(f"/api/jobs/{jid}/materials", 10)] == ["anchors", "Drywall screws"]
    assert [m["name"] for m in (await office.ok("GET", f"/api/jobs/{jid}"))["materials"]] == ["anchors",
                                                                                              "Drywall screws"]
    assert_error(await office.put(f"/api/materials/{one['id']}", {"purchased": False}), 404, "NOT_FOUND")

    log = await oplog(h, f"job:{jid}")
    assert [e["user_id"] for e in log] == [office.id, office.id, crew.id, crew.id, office.id]
    ev = [(e["type"], e["record_id"], e["actor"]) for e in await events(h, f"job:{jid}") if e["record_type"] == "material"]
    assert ev[0] == ("material.added", one["id"], office.id)
    assert set(ev[1:3]) == {("material.added", many[0]["id"], crew.id), ("material.added", many[1]["id"], crew.id)}
    assert ev[3:] == [("material.purchased", one["id"], crew.id), ("material.updated", one["id"], crew.id),
                      ("material.removed", one["id"], office.id)]


async def test_removal_is_union_safe_against_a_concurrent_device_edit(make_harness):
    h, office, crew, jid, _ = await _setup(make_harness)
    doc_id = D.doc_id_for("job", jid)
    mat = await office.ok("POST", f"/api/jobs/{jid}/materials", {"name": "Drywall", "quantity": 10}, status=201)
    device = crew.s.device()
    r = await crew.get("/api/sync/pull", doc_id=doc_id)
    device.doc(doc_id).apply_update(base64.b64decode(r.json()["data"]["update"]))

    await office.ok("DELETE", f"/api/materials/{mat['id']}")   # the server removes it ...
    d = device.doc(doc_id)                                        # ... while the device, offline, edits it
    before = d.get_state()
    with d.transaction():
        D.write_material_field(d, mat["id"], "quantity", 12.0, ts=device.hlc.now(), device=device.device_id,
                               author=crew.id, role="crew")
    r = await crew.post("/api/sync/push", {"doc_id": doc_id, "update": b64(d.get_update(before))})
    assert r.status_code == 200, r.text

    # an edit that did not see the removal keeps the item (union)
    assert [(m["id"], m["quantity"]) for m in await office.ok("GET", f"/api/jobs/{jid}/materials")] == [(mat["id"], 12.0)]
    merged = Doc()
    merged.apply_update(base64.b64decode((await office.get("/api/sync/pull", doc_id=doc_id)).json()["data"]["update"]))
    assert resolve_doc(merged, "job").materials[mat["id"]].removed is False


async def test_bulk_update_one_edit_per_job_with_per_item_results(make_harness):
    h, office, crew, mine, other = await _setup(make_harness)
    a, b = await office.ok("POST", f"/api/jobs/{mine}/materials", [{"name": "a"}, {"name": "b"}], status=201)
    c = await office.ok("POST", f"/api/jobs/{other}/materials", {"name": "c"}, status=201)
    gone = await office.ok("POST", f"/api/jobs/{other}/materials", {"name": "gone"}, status=201)
    await office.ok("DELETE", f"/api/materials/{gone['id']}")
    seq_mine, seq_other = len(await oplog(h, f"job:{mine}")), len(await oplog(h, f"job:{other}"))
    missing = D.new_id()

    res = (await office.ok("PUT", "/api/materials/bulk-update", [
        {"id": a["id"], "purchased": True}, {"id": c["id"], "quantity": 5, "cost": 2.25}, {"id": missing, "name": "x"},
        {"id": b["id"].upper(), "name": "B", "unit": "box"}, {"id": gone["id"], "purchased": True}]))["results"]
    assert [(r["id"], r["status"]) for r in res] == [(a["id"], 200), (c["id"], 200), (missing, 404), (b["id"], 200),
                                                     (gone["id"], 404)]
    assert res[0]["data"] == {**a, "purchased": True}
    assert res[1]["data"] == {**c, "quantity": 5.0, "cost": 2.25}
    assert res[3]["data"] == {**b, "name": "B", "unit": "box"}
    assert res[2]["error"]["code"] == "NOT_FOUND" and res[4]["error"]["code"] == "NOT_FOUND"
    assert len(await oplog(h, f"job:{mine}")) == seq_mine + 1      # one edit per job document
    assert len(await oplog(h, f"job:{other}")) == seq_other + 1
    assert (await oplog(h, f"job:{mine}"))[-1]["user_id"] == office.id
    assert {m["id"]: m for m in await office.ok("GET", f"/api/jobs/{mine}/materials")}[b["id"]]["name"] == "B"

    # a crew member: their job's items are applied, another job's refused (audited), in order
    res = (await crew.ok("PUT", "/api/materials/bulk-update", [
        {"id": c["id"], "purchased": True}, {"id": b["id"], "purchased": True}]))["results"]
    assert [(r["id"], r["status"]) for r in res] == [(c["id"], 403), (b["id"], 200)]
    assert res[0]["error"]["code"] == "FORBIDDEN" and res[1]["data"]["purchased"] is True
    assert [a["resource"] for a in await audit_for(h, crew.id)] == [f"job:{other}"]
    assert len(await oplog(h, f"job:{other}")) == seq_other + 1
    assert (await oplog(h, f"job:{mine}"))[-1]["user_id"] == crew.id

    # an item without changes is answered, not written
    res = (await office.ok("PUT", "/api/materials/bulk-update", [{"id": a["id"]}]))["results"]
    assert res == [{"id": a["id"], "status": 200, "data": {**a, "purchased": True}}]
    assert len(await oplog(h, f"job:{mine}")) == seq_mine + 2


async def test_bulk_update_validation(make_harness):
    h, office, _, mine, _ = await _setup(make_harness)
    m = await office.ok("POST", f"/api/jobs/{mine}/materials", {"name": "a"}, status=201)
    for body, fields in (([], {"body"}), ({"id": m["id"]}, {"body"}),
                         ([{"id": m["id"]}, {"id": m["id"].upper()}], {"1.id"}),
                         ([{"purchased": True}], {"0.id"}), ([{"id": m["id"], "quantity": -1}], {"0.quantity"}),
                         ([{"id": m["id"], "purchased": "yes"}], {"0.purchased"}),
                         ([{"id": m["id"], "name": None}], {"0.name"}), ([{"id": m["id"], "job_id": mine}], {"0.job_id"}),
                         ([{"id": m["id"]}] * 201, {"body"})):
        err = assert_error(await office.put("/api/materials/bulk-update", body), 422, "VALIDATION_ERROR")
        if fields != {"body"}:
            assert fields_of(err) == fields, body
    assert len(await oplog(h, f"job:{mine}")) == 2


async def test_material_validation_and_404s(make_harness):
    h, office, _, mine, _ = await _setup(make_harness)
    for body, fields in (({"quantity": 2}, {"name"}), ({"name": "x", "quantity": "2"}, {"quantity"}),
                         ({"name": "x", "quantity": -1}, {"quantity"}), ({"name": "x", "cost": 1e12}, {"cost"}),
                         ({"name": "x", "removed": True}, {"removed"}), ([{"name": "ok"}, {"name": ""}], {"1.name"}),
                         ([], {"body"}), ([{"name": "x"}] * 201, {"body"}), ("x", {"body"})):
        err = assert_error(await office.post(f"/api/jobs/{mine}/materials", body), 422, "VALIDATION_ERROR")
        if fields != {"body"}:
            assert fields_of(err) == fields, body
    assert await office.ok("GET", f"/api/jobs/{mine}/materials") == []
    m = await office.ok("POST", f"/api/jobs/{mine}/materials", {"name": "x"}, status=201)
    err = assert_error(await office.put(f"/api/materials/{m['id']}", {"quantity": None}), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"quantity"}
    missing = D.new_id()
    assert_error(await office.get(f"/api/jobs/{missing}/materials"), 404, "NOT_FOUND")
    assert_error(await office.post(f"/api/jobs/{missing}/materials", {"name": "x"}), 404, "NOT_FOUND")
    for mid in (missing, "nope"):
        assert_error(await office.put(f"/api/materials/{mid}", {"name": "x"}), 404, "NOT_FOUND")
        assert_error(await office.delete(f"/api/materials/{mid}"), 404, "NOT_FOUND")
    await office.ok("DELETE", f"/api/jobs/{mine}")  # a deleted job's materials are gone with it
    assert_error(await office.put(f"/api/materials/{m['id']}", {"name": "y"}), 404, "NOT_FOUND")
    assert_error(await office.get(f"/api/jobs/{mine}/materials"), 404, "NOT_FOUND")


async def test_crew_works_only_on_assigned_jobs_materials(make_harness):
    h, office, crew, mine, other = await _setup(make_harness)
    theirs = await office.ok("POST", f"/api/jobs/{other}/materials", {"name": "theirs"}, status=201)
    assert_error(await crew.post(f"/api/jobs/{other}/materials", {"name": "x"}), 403, "FORBIDDEN")
    assert_error(await crew.put(f"/api/materials/{theirs['id']}", {"purchased": True}), 403, "FORBIDDEN")
    assert_error(await crew.delete(f"/api/materials/{theirs['id']}"), 403, "FORBIDDEN")
    assert_error(await crew.get(f"/api/jobs/{other}/materials"), 403, "FORBIDDEN")
    assert [m["name"] for m in await office.ok("GET", f"/api/jobs/{other}/materials")] == ["theirs"]
    assert (await office.ok("GET", f"/api/jobs/{other}/materials"))[0]["purchased"] is False
    assert len(await audit_for(h, crew.id)) == 4
    mat = await crew.ok("POST", f"/api/jobs/{mine}/materials", {"name": "mine"}, status=201)
    assert (await crew.ok("PUT", f"/api/materials/{mat['id']}", {"purchased": True}))["purchased"] is True

    # the price is office business: the engine's write policy refuses it, the refusal is audited
    before = len(await oplog(h, f"job:{mine}"))
    err = assert_error(await crew.put(f"/api/materials/{mat['id']}", {"cost": 9.5}), 403, "FORBIDDEN")
    assert "cost" in str(err)
    assert_error(await crew.post(f"/api/jobs/{mine}/materials", {"name": "priced", "cost": 1}), 403, "FORBIDDEN")
    res = (await crew.ok("PUT", "/api/materials/bulk-update", [{"id": mat["id"], "cost": 2}]))["results"]
    assert res[0]["status"] == 403 and res[0]["error"]["code"] == "FORBIDDEN"
    assert len(await oplog(h, f"job:{mine}")) == before
    assert (await office.ok("GET", f"/api/jobs/{mine}/materials"))[0]["cost"] is None
    assert [a["resource"] for a in await audit_for(h, crew.id)][4:] == [f"job:{mine}"] * 3
