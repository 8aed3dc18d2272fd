"""``POST /api/sync/pull``: the batch pull (a list, or pages of everything readable) on SQLite and
PostgreSQL; and a replica syncing through it (``replica.http.HttpTransport``)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
from pycrdt import Doc
from sqlalchemy import select

from replica import Replica
from replica.http import HttpTransport
from schema import documents as D
from schema import tables as t
from server.sync_routes import MAX_KNOWN_DOCS, MAX_PULL_DOCS
from syncd.update_scan import decode_state_vector

from server_testkit import b64, b64url  # type: ignore[import-not-found]
from test_policy_http import Company, co  # type: ignore[import-not-found]  # noqa: F401 (fixture)

PULL = "/api/sync/pull"


async def batch(co: Company, dev: Any, body: Any) -> httpx.Response:
    return await co.h.client.post(PULL, headers=dev.s.headers, json=body)


def statuses(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [x.get("status", 200) for x in r.json()["data"]["results"]]


async def test_answers_each_document_in_order_like_the_single_pull(co):
    office = co.office
    ghost = D.doc_id_for("job", str(uuid.uuid4()))
    partial = Doc()
    single = (await co.h.client.get(PULL, headers=office.s.headers, params={"doc_id": co.j1})).json()["data"]
    partial.apply_update(base64.b64decode(single["update"]))
    r = await batch(co, office, {"docs": [
        {"doc_id": co.j1},
        {"doc_id": ghost},
        {"doc_id": co.c1, "state_vector": b64url(b"\x00")},
        {"doc_id": "job:42"},
        {"doc_id": co.j2, "state_vector": "%%%"},
        {"doc_id": co.j1, "state_vector": b64(partial.get_state()), "since": single["seq"]},
        {"doc_id": co.c2, "state_vector": b64(b"\xff\xff\xff")},
    ]})
    assert statuses(r) == [200, 404, 200, 400, 400, 200, 400]
    res = r.json()["data"]["results"]
    assert [x["doc_id"] for x in res] == [co.j1, ghost, co.c1, "job:42", co.j2, co.j1, co.c2]
    assert r.json()["data"]["device_id"] == office.device_id and r.json()["data"]["server_time"]
    assert [res[i]["error"]["code"] for i in (1, 3, 4, 6)] == [
        "UNKNOWN_DOCUMENT", "MALFORMED_UPDATE", "INVALID_BASE64", "MALFORMED_UPDATE"]
    assert res[4]["error"]["details"][0]["field"] == "docs.4.state_vector"
    # the same bytes as the GET form; nothing new since the device's cursor
    assert {k: res[0][k] for k in ("doc_id", "update", "seq")} == {k: single[k] for k in ("doc_id", "update", "seq")}
    tail = Doc()
    tail.apply_update(base64.b64decode(res[5]["update"]))
    assert res[5]["seq"] == single["seq"] and tail.get_state() == b"\x00"
    full = Doc()
    full.apply_update(base64.b64decode(res[2]["update"]))
    assert full.get_state() != b"\x00"
    assert await co.audit() == []  # errors of the request, not refusals


async def test_a_long_batch_keeps_its_order_and_acknowledges_everything(co):
    """40 entries: order, bytes and acknowledgements hold."""
    office = co.office
    new = [D.doc_id_for("job", str(uuid.uuid4())) for _ in range(30)]
    r = await co.h.client.post("/api/sync/push", headers=office.s.headers, json={"updates": [
        {"doc_id": d, "update": b64(office.fields(d, title=f"Job {i}"))} for i, d in enumerate(new)]})
    assert statuses(r) == [200] * 30
    ghosts = [D.doc_id_for("job", str(uuid.uuid4())) for _ in range(5)]
    order = [*new[:10], ghosts[0], *co.all_docs, *ghosts[1:3], *new[10:], *ghosts[3:]]
    first = await batch(co, office, {"docs": [{"doc_id": d} for d in order]})
    assert statuses(first) == [404 if d in ghosts else 200 for d in order]
    res = first.json()["data"]["results"]
    assert [x["doc_id"] for x in res] == order
    for x in res[:3] + res[-8:-5]:
        if "error" not in x:
            single = (await co.h.client.get(PULL, headers=office.s.headers, params={"doc_id": x["doc_id"]})).json()
            assert (x["update"], x["seq"]) == (single["data"]["update"], single["data"]["seq"])
    seqs = {x["doc_id"]: x["seq"] for x in res if "error" not in x}
    again = await batch(co, office, {"docs": [{"doc_id": d, "since": s} for d, s in seqs.items()]})
    assert statuses(again) == [200] * len(seqs)
    async with co.h.db.connect() as conn:
        acks = dict((await conn.execute(select(t.device_doc_acks.c.doc_id, t.device_doc_acks.c.acked_seq).where(
            t.device_doc_acks.c.device_id == office.device_id))).all())
    assert acks == seqs


async def test_large_answers_are_gzip_compressed_for_clients_that_accept_it(co):
    """Crews sync over weak links: a pull answer over 1 KB goes out compressed when the client
    accepts gzip (httpx does by default and decodes it), and as is when it does not."""
    office = co.office
    body = {"docs": [{"doc_id": d} for d in (co.j1, co.j2, co.c1, co.c2)] * 10}
    plain = await co.h.client.post(PULL, headers={**office.s.headers, "Accept-Encoding": "identity"}, json=body)
    packed = await co.h.client.post(PULL, headers={**office.s.headers, "Accept-Encoding": "gzip"}, json=body)
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain.content) / 2
    strip = lambda j: [{k: v for k, v in x.items() if k != "server_time"} for x in j["data"]["results"]]  # noqa: E731
    assert strip(packed.json()) == strip(plain.json())


async def test_a_crew_cannot_pull_an_unassigned_job_through_the_batch(co):
    ghost = D.doc_id_for("job", str(uuid.uuid4()))
    order = [co.j1, co.j2, co.c2, co.j3, ghost, "job:42", co.c1]
    r = await batch(co, co.a, {"docs": [{"doc_id": d} for d in order]})
    assert statuses(r) == [200, 403, 403, 403, 403, 403, 200]
    res = r.json()["data"]["results"]
    for x in res[1:6]:
        assert set(x) == {"doc_id", "status", "error"}  # no content of a document it may not read
        assert x["error"]["code"] == "FORBIDDEN" and x["doc_id"] in x["error"]["message"]
    audit = await co.audit()
    assert sorted(a["resource"] for a in audit) == sorted([co.j2, co.c2, co.j3, ghost, "job:42"])
    assert {(a["action"], a["user_id"], a["device_id"]) for a in audit} == {
        ("POST /api/sync/pull", co.a.user_id, co.a.device_id)}
    assert all(a["reason"].startswith("FORBIDDEN") for a in audit)
    # a deleted job stays readable to its crew; its customer does not
    await co.office.pull(co.j1)
    await co.office.ok(co.j1, co.office.fields(co.j1, deleted=True))
    assert statuses(await batch(co, co.a, {"docs": [{"doc_id": co.j1}, {"doc_id": co.c1}]})) == [200, 403]


async def test_acknowledgements_are_recorded_for_every_document(co):
    docs = [co.c1, co.j1]
    first = (await batch(co, co.a, {"docs": [{"doc_id": d} for d in docs]})).json()["data"]["results"]
    seqs = {x["doc_id"]: x["seq"] for x in first}
    r = await batch(co, co.a, {"docs": [{"doc_id": d, "since": seqs[d]} for d in docs]})
    assert statuses(r) == [200, 200]
    async with co.h.db.connect() as conn:
        acks = dict((await conn.execute(select(t.device_doc_acks.c.doc_id, t.device_doc_acks.c.acked_seq).where(
            t.device_doc_acks.c.device_id == co.a.device_id))).all())
    assert acks == seqs


async def test_all_pages_through_what_the_caller_may_read(co):
    r = await batch(co, co.a, {"all": True})
    assert statuses(r) == [200, 200]
    assert [x["doc_id"] for x in r.json()["data"]["results"]] == sorted([co.c1, co.j1])
    assert r.json()["meta"]["next_cursor"] is None
    # pages, in doc id order, like /api/sync/status
    seen, after = [], None
    while True:
        body = await batch(co, co.office, {"all": True, "limit": 2, **({"after": after} if after else {})})
        assert body.status_code == 200, body.text
        page = body.json()
        assert len(page["data"]["results"]) <= 2
        seen += [x["doc_id"] for x in page["data"]["results"]]
        after = page["meta"]["next_cursor"]
        if after is None:
            break
    assert seen == co.all_docs
    # what the device holds is pulled from its cursor; what it names but may not read is not
    # listed, not refused (it will drop it), and nothing is audited
    j1 = r.json()["data"]["results"][[x["doc_id"] for x in r.json()["data"]["results"]].index(co.j1)]
    held = Doc()
    held.apply_update(base64.b64decode(j1["update"]))
    await co.office.pull(co.j1)
    await co.office.ok(co.j1, co.office.fields(co.j1, title="Renamed"))
    r = await batch(co, co.a, {"all": True, "docs": [
        {"doc_id": co.j1, "state_vector": b64(held.get_state()), "since": j1["seq"]},
        {"doc_id": co.j2, "since": 1}]})
    assert statuses(r) == [200, 200]
    res = {x["doc_id"]: x for x in r.json()["data"]["results"]}
    assert set(res) == {co.c1, co.j1} and res[co.j1]["seq"] > j1["seq"]
    held.apply_update(base64.b64decode(res[co.j1]["update"]))
    assert len(base64.b64decode(res[co.j1]["update"])) < len(base64.b64decode(j1["update"]))
    assert await co.audit() == []


async def test_bounds_and_malformed_bodies_get_the_error_envelope(co):
    h = co.h.client
    hdr = co.office.s.headers
    doc = {"doc_id": co.j1}
    cases: list[tuple[Any, int, str, str | None]] = [
        ({"docs": [doc] * (MAX_PULL_DOCS + 1)}, 422, "VALIDATION_ERROR", "docs"),
        ({"all": True, "docs": [doc] * (MAX_KNOWN_DOCS + 1)}, 422, "VALIDATION_ERROR", "docs"),
        ({"docs": []}, 422, "VALIDATION_ERROR", "docs"),
        ({}, 422, "VALIDATION_ERROR", "docs"),
        ({"docs": [{"state_vector": "AA"}]}, 422, "VALIDATION_ERROR", "docs.0.doc_id"),
        ({"docs": [{"doc_id": co.j1, "since": -1}]}, 422, "VALIDATION_ERROR", "docs.0.since"),
        ({"docs": [{"doc_id": co.j1, "since": "abc"}]}, 422, "VALIDATION_ERROR", "docs.0.since"),
        ({"docs": [{"doc_id": "j" * 81}]}, 422, "VALIDATION_ERROR", "docs.0.doc_id"),
        ({"docs": "job:1"}, 422, "VALIDATION_ERROR", "docs"),
        ({"docs": [doc], "after": co.c1}, 422, "VALIDATION_ERROR", "after"),
        ({"docs": [doc], "limit": 5}, 422, "VALIDATION_ERROR", "limit"),
        ({"all": True, "limit": 0}, 422, "VALIDATION_ERROR", "limit"),
        ({"all": True, "limit": MAX_PULL_DOCS + 1}, 422, "VALIDATION_ERROR", "limit"),
        ({"all": "yes please"}, 422, "VALIDATION_ERROR", "all"),
        (["not", "an", "object"], 422, "VALIDATION_ERROR", None),
    ]
    for body, status, code, field in cases:
        r = await h.post(PULL, headers=hdr, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (str(body)[:80], r.text)
        assert r.json()["error"]["message"]
        if field is not None:
            assert field in [d["field"] for d in r.json()["error"]["details"]], (str(body)[:80], r.text)
    for raw in (b'{"docs": [', b"", b"\xff\xfe"):
        r = await h.post(PULL, headers={**hdr, "Content-Type": "application/json"}, content=raw)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_JSON"), r.text
    r = await (await co.h.client_from("127.0.0.9")).post(PULL, json={"docs": [doc]})  # no credentials
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    r = await h.put(PULL, headers=hdr, json={"docs": [doc]})
    assert r.status_code == 405 and "POST" in r.headers.get("allow", "")
    # the GET form still answers
    assert (await h.get(PULL, headers=hdr, params={"doc_id": co.j1})).status_code == 200
    assert (await h.get("/healthz")).status_code == 200


async def test_the_batch_pull_is_in_the_openapi_document(co):
    doc = (await co.h.client.get("/api/openapi.json")).json()
    ops = doc["paths"]["/api/sync/pull"]
    assert set(ops) >= {"get", "post"}
    body = ops["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PullBatch"}
    assert set(doc["components"]["schemas"]["PullBatch"]["properties"]) == {"docs", "all", "after", "limit"}
    assert {"400", "401", "422"} <= set(ops["post"]["responses"])


# --- a replica through it ------------------------------------------------------------------------


class Counting:
    """httpx event hook counting requests by (method, path)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.calls.append((request.method, request.url.path))

    def take(self) -> list[tuple[str, str]]:
        out, self.calls = self.calls, []
        return out


async def test_a_replica_syncs_through_the_batch_pull_and_converges(co, tmp_path: Path):
    counting = Counting()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=co.h.app), base_url="http://testserver",
                               event_hooks={"request": [counting]})
    replica = await Replica.open(str(tmp_path / "crew.sqlite3"), user_id=co.a.user_id, role="crew",
                                 device_id=co.a.device_id)
    try:
        transport = HttpTransport(client, co.a.s.access_token, page_size=1)
        report = await replica.pull(transport)
        assert report.ok and sorted(report.changed) == sorted([co.c1, co.j1])
        # from empty: one request per page (page_size=1: two pages), no status walk, no GET per doc
        assert counting.take() == [("POST", PULL)] * 2
        jid = co.j1.split(":")[1]
        assert replica.job(jid)["title"] == (await co.job(co.j1)).title
        assert {m["id"] for m in replica.job(jid)["materials"]} == {co.m1, co.m3}

        # edits on both sides; a sync converges
        await replica.update_material(jid, co.m1, purchased=True)
        await co.office.pull(co.j1)
        await co.office.ok(co.j1, co.office.fields(co.j1, title="Kitchen, phase 2"))
        report = await replica.sync(transport)
        assert report.ok and report.pull.changed == [co.j1] and report.pull.unchanged == [co.c1]
        assert [c for c in counting.take() if c[1] == PULL] == [("POST", PULL)] * 2
        await co.office.pull(co.j1)
        assert decode_state_vector(replica.doc(co.j1).get_state()) == decode_state_vector(co.office.doc(co.j1).get_state())
        assert replica.job(jid)["title"] == "Kitchen, phase 2" and (await co.materials())[co.m1].purchased is True

        # a gap in the log tail (the device's cursor claims more than it holds): re-pulled by
        # state vector in one batch request, never applied piecemeal
        u1 = co.office.fields(co.j1, description="one")
        u2 = co.office.fields(co.j1, description="two")  # builds on u1
        s1 = await co.office.ok(co.j1, u1)
        await co.office.ok(co.j1, u2)
        await replica._store.append_remote(co.j1, None, s1, {})  # the cursor says u1 arrived; it did not
        report = await replica.pull(transport)
        assert report.ok and report.full_pulls == [co.j1] and co.j1 in report.changed
        assert replica.job(jid)["description"] == "two"
        assert counting.take() == [("POST", PULL)] * 3  # two pages, one re-pull of the gap

        # unassigned: dropped from the device, with its customer
        await co.office.ok(co.j1, co.office.fields(co.j1, crew=[co.b.user_id]))
        report = await replica.pull(transport)
        assert sorted(report.dropped) == sorted([co.c1, co.j1]) and replica.doc_ids() == []
        # pulling named documents goes through the list form; a refusal is that document's error
        report = await replica.pull(transport, [co.j1])
        assert list(report.errors) == [co.j1] and report.errors[co.j1].status == 403
        assert counting.take()[-1] == ("POST", PULL)
    finally:
        await replica.close()
        await client.aclose()
