"""``/api/customers`` through the real app, on SQLite and PostgreSQL: CRUD, soft delete, search,
cursor pagination, validation, 404s, crew scope and refusals, and that a REST write is a CRDT
update authored by the caller (op log, events, what a device pulls)."""

from __future__ import annotations

import base64

from pycrdt import Doc

from schema import documents as D
from schema.view import resolve_doc

from test_rest_kit import (assert_error, audit_for, caller, events, fields_of, oplog,  # type: ignore[import-not-found]
                           start)


async def test_crud_round_trip_and_soft_delete(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    created = await office.customer("  Grace Hopper ", phone="555-0100", email="Grace@Example.COM",
                                    address="1 Navy Way", notes="prefers mornings\r\nno dogs")
    cid = created["id"]
    assert created == {"id": cid, "name": "Grace Hopper", "phone": "555-0100", "email": "Grace@example.com",
                       "address": "1 Navy Way", "notes": "prefers mornings\nno dogs", "deleted": False}
    assert await office.ok("GET", f"/api/customers/{cid}") == created
    assert await office.ok("GET", f"/api/customers/{cid.upper()}") == created

    updated = await office.ok("PUT", f"/api/customers/{cid}", {"phone": "555 0199", "email": None})
    assert updated == {**created, "phone": "555 0199", "email": None}
    assert await office.ok("GET", f"/api/customers/{cid}") == updated
    assert await office.ok("PUT", f"/api/customers/{cid}", {}) == updated  # empty patch: nothing written
    assert len(await oplog(h, f"customer:{cid}")) == 2

    deleted = await office.ok("DELETE", f"/api/customers/{cid}")
    assert deleted == {**updated, "deleted": True}
    assert await office.ok("DELETE", f"/api/customers/{cid}") == deleted  # a retried delete is harmless
    assert len(await oplog(h, f"customer:{cid}")) == 3
    assert_error(await office.get(f"/api/customers/{cid}"), 404, "NOT_FOUND")
    assert_error(await office.put(f"/api/customers/{cid}", {"name": "x"}), 404, "NOT_FOUND")
    assert await office.ok("GET", f"/api/customers/{cid}", include_deleted="true") == deleted
    assert [c["id"] for c in await office.ok("GET", "/api/customers")] == []
    assert [c["id"] for c in await office.ok("GET", "/api/customers", include_deleted="true")] == [cid]


async def test_a_rest_write_is_an_update_authored_by_the_caller(make_harness):
    h = await start(make_harness)
    office, owner = await caller(h, "office"), await caller(h, "owner")
    cid = (await office.customer("Ada", phone="555-0100"))["id"]
    doc_id = D.doc_id_for("customer", cid)
    await owner.ok("PUT", f"/api/customers/{cid}", {"name": "Ada Lovelace"})
    await owner.ok("DELETE", f"/api/customers/{cid}")

    log = await oplog(h, doc_id)
    assert [(e["user_id"], e["device_id"]) for e in log] == [
        (office.id, office.device_id), (owner.id, owner.device_id), (owner.id, owner.device_id)]
    ev = await events(h, doc_id)
    assert [(e["type"], e["actor"], e["seq"]) for e in ev] == [
        ("customer.created", office.id, log[0]["seq"]), ("customer.updated", owner.id, log[1]["seq"]),
        ("customer.deleted", owner.id, log[2]["seq"])]
    assert ev[0]["payload"]["name"] == "Ada" and ev[1]["payload"] == {"changes": {"name": ["Ada", "Ada Lovelace"]}}

    # a device pulling the document gets the writes, stamped with their authors
    r = await office.get("/api/sync/pull", doc_id=doc_id)
    assert r.status_code == 200, r.text
    doc = Doc()
    doc.apply_update(base64.b64decode(r.json()["data"]["update"]))
    view = resolve_doc(doc, "customer")
    assert view.record["name"] == "Ada Lovelace" and view.record["deleted"] is True
    assert view.record_resolutions["name"].winner.author == owner.id
    assert view.record_resolutions["phone"].winner.author == office.id


async def test_cursor_walk_serves_every_row_once_in_name_order(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    names = ["alpha", "Alpha", "ALPHA", "beta", "Gamma", "delta", "Epsilon", "zeta", "Eta", "theta", "Iota"]
    made = [await office.customer(n) for n in names]
    gone = await office.customer("Deleted one")
    await office.ok("DELETE", f"/api/customers/{gone['id']}")
    expected = sorted(made, key=lambda c: (c["name"].lower(), c["id"]))
    for limit in (1, 3, 4, 11, 100):
        seen = await office.walk("/api/customers", limit)
        assert [c["id"] for c in seen] == [c["id"] for c in expected], limit
    assert len(await office.walk("/api/customers", 5, include_deleted="true")) == len(names) + 1

    # rows added before the cursor while walking do not shift the walk: nothing twice, nothing skipped
    r = await office.get("/api/customers", limit=4)
    page1 = r.json()["data"]
    await office.customer("aardvark")
    rest = await office.walk("/api/customers", 4, cursor=r.json()["meta"]["next_cursor"])
    ids = [c["id"] for c in page1 + rest]
    assert ids == [c["id"] for c in expected] and len(set(ids)) == len(ids)

    first = await office.get("/api/customers")
    assert first.json()["meta"]["limit"] == 20 and first.json()["meta"]["next_cursor"] is None
    assert len(first.json()["data"]) == len(names) + 1


async def test_pagination_parameters_are_validated(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    for params, field in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
                          ({"cursor": "not-a-cursor"}, "cursor"), ({"include_deleted": "maybe"}, "include_deleted"),
                          ({"colour": "red"}, "colour")):
        err = assert_error(await office.get("/api/customers", **params), 422, "VALIDATION_ERROR")
        assert fields_of(err) == {field}, params
    await office.customer("A")
    await office.customer("B")
    jobs_cursor = (await office.get("/api/customers", limit=1)).json()["meta"]["next_cursor"]
    assert jobs_cursor
    err = assert_error(await office.get("/api/jobs", cursor=jobs_cursor), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"cursor"}


async def test_search_matches_name_phone_email_address(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    ada = await office.customer("Ada Lovelace", phone="(555) 010-0123", email="ada@engines.example",
                                address="12 Analytical Row")
    bob = await office.customer("Bob Builder", phone="555 777 8888", email="bob@build.example",
                                address="Lovelace Street 5")
    pct = await office.customer("100% Plumbing")
    gone = await office.customer("Ada Gone")
    await office.ok("DELETE", f"/api/customers/{gone['id']}")

    async def ids(q: str, **kw) -> set[str]:
        return {c["id"] for c in await office.walk("/api/customers/search", 1, q=q, **kw)}

    assert await ids("LOVELACE") == {ada["id"], bob["id"]}      # name or address, any case
    assert await ids("ada") == {ada["id"]}                     # deleted ones excluded
    assert await ids("ada", include_deleted="true") == {ada["id"], gone["id"]}
    assert await ids("engines.EXAMPLE") == {ada["id"]}         # email
    assert await ids("5550100") == {ada["id"]}                 # phone digits, whatever the punctuation
    assert await ids("777-8888") == {bob["id"]}
    assert await ids("%") == {pct["id"]}                       # LIKE wildcards are literal
    assert await ids("_") == set()
    assert await ids("  builder  ") == {bob["id"]}
    err = assert_error(await office.get("/api/customers/search", q="   "), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"q"}
    err = assert_error(await office.get("/api/customers/search"), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"q"}


async def test_bodies_are_validated(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    err = assert_error(await office.post("/api/customers", {"phone": "call me", "email": "nope", "age": 3}),
                       422, "VALIDATION_ERROR")
    assert fields_of(err) == {"name", "phone", "email", "age"}
    assert all(d["message"] for d in err["details"])
    err = assert_error(await office.post("/api/customers", {"name": 42}), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"name"}
    err = assert_error(await office.post("/api/customers", ["Ada"]), 422, "VALIDATION_ERROR")
    r = await office.call("POST", "/api/customers", content=b"{not json")
    assert_error(r, 400, "INVALID_JSON")
    cid = (await office.customer("Ada"))["id"]
    err = assert_error(await office.put(f"/api/customers/{cid}", {"name": None}), 422, "VALIDATION_ERROR")
    assert fields_of(err) == {"name"}
    err = assert_error(await office.put(f"/api/customers/{cid}", {"name": "  "}), 422, "VALIDATION_ERROR")
    assert len(await oplog(h, f"customer:{cid}")) == 1  # nothing refused was written
    assert (await office.ok("GET", f"/api/customers/{cid}"))["name"] == "Ada"


async def test_unknown_ids_are_404(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    missing = D.new_id()
    for method in ("GET", "PUT", "DELETE"):
        for cid in (missing, "not-a-uuid"):
            r = await office.call(method, f"/api/customers/{cid}", json={"name": "x"} if method == "PUT" else None)
            assert_error(r, 404, "NOT_FOUND")
    r = await office.call("PATCH", f"/api/customers/{missing}", json={})
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "DELETE"}


async def test_crew_reads_only_customers_of_assigned_jobs_and_writes_none(make_harness):
    h = await start(make_harness)
    office, crew = await caller(h, "office"), await caller(h, "crew")
    mine = await office.customer("Mine", phone="555-1000")
    other = await office.customer("Other")
    await office.job(mine["id"], crew=[crew.id])
    await office.job(other["id"])

    assert [c["id"] for c in await crew.walk("/api/customers", 1)] == [mine["id"]]
    assert [c["id"] for c in await crew.walk("/api/customers/search", 5, q="555")] == [mine["id"]]
    assert (await crew.ok("GET", f"/api/customers/{mine['id']}"))["phone"] == "555-1000"
    assert_error(await crew.get(f"/api/customers/{other['id']}"), 403, "FORBIDDEN")
    assert_error(await crew.get("/api/customers", include_deleted="true"), 403, "FORBIDDEN")

    assert_error(await crew.post("/api/customers", {"name": "Sneaky"}), 403, "FORBIDDEN")
    assert_error(await crew.put(f"/api/customers/{mine['id']}", {"name": "Renamed"}), 403, "FORBIDDEN")
    assert_error(await crew.delete(f"/api/customers/{mine['id']}"), 403, "FORBIDDEN")
    assert (await office.ok("GET", f"/api/customers/{mine['id']}"))["name"] == "Mine"
    assert [c["name"] for c in await office.walk("/api/customers", 10)] == ["Mine", "Other"]

    refused = await audit_for(h, crew.id)
    assert [(a["action"], a["reason"].split(":")[0]) for a in refused] == [
        (f"GET /api/customers/{other['id']}", "FORBIDDEN"), ("GET /api/customers", "FORBIDDEN"),
        ("POST /api/customers", "FORBIDDEN"), (f"PUT /api/customers/{mine['id']}", "FORBIDDEN"),
        (f"DELETE /api/customers/{mine['id']}", "FORBIDDEN")]
    assert refused[0]["resource"] == f"customer:{other['id']}"


async def test_unauthenticated_calls_are_refused(make_harness):
    h = await start(make_harness)
    r = await h.client.get("/api/customers")
    assert_error(r, 401, "UNAUTHENTICATED")
    r = await h.client.post("/api/customers", json={"name": "x"})
    assert_error(r, 401, "UNAUTHENTICATED")

