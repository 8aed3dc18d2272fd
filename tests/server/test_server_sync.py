"""HTTP push/pull/status with real pycrdt updates; hostile input gets the envelope and the server stays up."""

from __future__ import annotations

import base64
import os
import random
import uuid

import pytest
from pycrdt import Doc, Map
from sqlalchemy import select

from schema import documents as D
from schema import tables as t

from server_testkit import b64, b64url  # type: ignore[import-not-found]


def job_doc() -> str:
    return D.doc_id_for("job", str(uuid.uuid4()))


def fields_of(doc: Doc) -> dict[str, object]:
    """field -> value of the live writes (one writer in these tests)."""
    return {k.split("/")[0]: v["v"] for k, v in doc.get("fields", type=Map).items()}


async def _still_serving(harness, session) -> None:
    assert (await harness.client.get("/healthz")).status_code == 200
    dev = session.device()
    doc_id = job_doc()
    r = await harness.client.post("/api/sync/push", headers=session.headers,
                                  json={"doc_id": doc_id, "update": b64(dev.set_fields(doc_id, title="Still up"))})
    assert r.status_code == 200, r.text


async def test_push_pull_round_trip_between_two_devices(harness):
    office = await harness.user_session("office")
    crew = await harness.user_session("crew")
    dev = office.device()
    doc_id = job_doc()
    cust = str(uuid.uuid4())
    u1 = dev.set_fields(doc_id, customer_id=cust, title="Kitchen remodel", status="scheduled",
                        crew=[crew.user["id"]])  # a crew reads only the jobs assigned to it
    r = await harness.client.post("/api/sync/push", headers=office.headers,
                                  json={"doc_id": doc_id, "update": b64(u1), "idempotency_key": "k-1"})
    assert r.status_code == 200, r.text
    ack = r.json()["data"]
    assert ack["doc_id"] == doc_id and ack["seq"] > 0 and ack["duplicate"] is False
    assert ack["idempotency_key"] == "k-1" and ack["server_time"]

    again = await harness.client.post("/api/sync/push", headers=office.headers, json={"doc_id": doc_id, "update": b64(u1)})
    assert again.status_code == 200 and again.json()["data"]["duplicate"] is True
    assert again.json()["data"]["seq"] == ack["seq"]

    # the projection saw it: the update went through the engine's acceptance path
    async with harness.db.connect() as conn:
        job = (await conn.execute(select(t.jobs))).one()
        log = (await conn.execute(select(t.oplog))).all()
    assert job.title == "Kitchen remodel" and job.status == "scheduled"
    assert len(log) == 1 and log[0].user_id == office.user["id"] and log[0].device_id == office.device_id

    # the crew device pulls the whole document
    r = await harness.client.get("/api/sync/pull", headers=crew.headers, params={"doc_id": doc_id})
    assert r.status_code == 200, r.text
    pulled = r.json()["data"]
    assert pulled["doc_id"] == doc_id and pulled["seq"] == ack["seq"]
    replica = Doc()
    replica.apply_update(base64.b64decode(pulled["update"]))
    assert fields_of(replica) == {"customer_id": cust, "title": "Kitchen remodel", "status": "scheduled",
                                  "crew": [crew.user["id"]]}

    # the office edits again; the crew pulls with its state vector and cursor, gets only the news
    u2 = dev.set_fields(doc_id, title="Kitchen + pantry")
    r = await harness.client.post("/api/sync/push", headers=office.headers, json={"doc_id": doc_id, "update": b64(u2)})
    seq2 = r.json()["data"]["seq"]
    assert seq2 > ack["seq"]
    r = await harness.client.get("/api/sync/pull", headers=crew.headers, params={
        "doc_id": doc_id, "state_vector": b64url(replica.get_state()), "since": pulled["seq"]})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["seq"] == seq2
    replica.apply_update(base64.b64decode(r.json()["data"]["update"]))
    assert fields_of(replica)["title"] == "Kitchen + pantry"

    # status: the crew device acknowledged up to its cursor
    r = await harness.client.get("/api/sync/status", headers=crew.headers)
    assert r.status_code == 200
    docs = r.json()["data"]["docs"]
    assert docs == [{"doc_id": doc_id, "kind": "job", "seq": seq2, "acked_seq": pulled["seq"],
                     "behind": seq2 - pulled["seq"]}]
    assert r.json()["data"]["device_id"] == crew.device_id


async def test_the_crew_writes_as_itself_and_the_office_sees_it(harness):
    office = await harness.user_session("office")
    crew = await harness.user_session("crew")
    doc_id = job_doc()
    od = office.device()
    r = await harness.client.post("/api/sync/push", headers=office.headers,
                                  json={"doc_id": doc_id, "update": b64(od.set_fields(
                                      doc_id, title="Deck", status="scheduled", crew=[crew.user["id"]]))})
    assert r.status_code == 200
    cd = crew.device()
    pulled = await harness.client.get("/api/sync/pull", headers=crew.headers, params={"doc_id": doc_id})
    cd.doc(doc_id).apply_update(base64.b64decode(pulled.json()["data"]["update"]))
    u = cd.set_fields(doc_id, status="in_progress")
    r = await harness.client.post("/api/sync/push", headers=crew.headers, json={"doc_id": doc_id, "update": b64(u)})
    assert r.status_code == 200, r.text
    async with harness.db.connect() as conn:
        assert (await conn.execute(select(t.jobs.c.status))).scalar_one() == "in_progress"


@pytest.mark.parametrize("forge", ["author", "role", "device"])
async def test_a_write_stamped_with_someone_else_is_refused_audited_and_not_stored(harness, forge):
    owner = await harness.user_session("owner")
    crew = await harness.user_session("crew")
    dev = crew.device()
    doc_id = job_doc()
    stamp = {"author": owner.user["id"]} if forge == "author" else \
        {"role": "owner"} if forge == "role" else {"device": owner.device_id}
    u = dev.set_fields(doc_id, status="on_hold", **stamp)
    r = await harness.client.post("/api/sync/push", headers=crew.headers,
                                  json={"doc_id": doc_id, "update": b64(u), "user_id": owner.user["id"],
                                        "device_id": owner.device_id, "role": "owner"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "FORBIDDEN"
    assert await harness.count(t.oplog) == 0 and await harness.count(t.jobs) == 0
    audit = [a for a in await harness.audit_rows() if a["action"] == "POST /api/sync/push"]
    assert len(audit) == 1
    a = audit[0]
    assert (a["user_id"], a["device_id"], a["resource"], a["ip"]) == (crew.user["id"], crew.device_id, doc_id,
                                                                      "127.0.0.1")
    assert a["reason"].startswith("FORBIDDEN")
    assert b64(u) not in str(a)  # never the request body


async def test_batch_push_reports_each_update(harness):
    office = await harness.user_session("office")
    other = await harness.user_session("office")
    dev = office.device()
    d1, d2 = job_doc(), job_doc()
    first = dev.set_fields(d1, title="One")
    second = dev.set_fields(d1, title="One, renamed")  # builds on the first, same request
    forged = dev.set_fields(d2, title="Forged", author=other.user["id"])
    r = await harness.client.post("/api/sync/push", headers=office.headers, json={"updates": [
        {"doc_id": d1, "update": b64(first), "idempotency_key": "a"},
        {"doc_id": d1, "update": b64(second)},
        {"doc_id": d2, "update": "***not base64***"},
        {"doc_id": d2, "update": b64(forged)},
        {"doc_id": d1, "update": b64(first)},
        {"doc_id": "job:nope", "update": b64(first)},
    ]})
    assert r.status_code == 200, r.text
    res = r.json()["data"]["results"]
    assert [x.get("status", 200) for x in res] == [200, 200, 400, 403, 200, 400]
    assert res[0]["duplicate"] is False and res[0]["idempotency_key"] == "a"
    assert res[1]["seq"] > res[0]["seq"] and res[4] == {**res[4], "duplicate": True, "seq": res[0]["seq"]}
    assert res[2]["error"]["code"] == "INVALID_BASE64" and res[2]["error"]["details"][0]["field"] == "updates.2.update"
    assert res[3]["error"]["code"] == "FORBIDDEN"
    assert res[5]["error"]["code"] == "MALFORMED_UPDATE"
    async with harness.db.connect() as conn:
        assert (await conn.execute(select(t.jobs.c.title))).scalars().all() == ["One, renamed"]
    assert [a["resource"] for a in await harness.audit_rows()] == [d2]


async def test_batch_size_and_shape_are_validated(harness):
    s = await harness.user_session("office")
    too_many = {"updates": [{"doc_id": job_doc(), "update": "AAA="}] * 101}
    r = await harness.client.post("/api/sync/push", headers=s.headers, json=too_many)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "updates"
    r = await harness.client.post("/api/sync/push", headers=s.headers, json={"updates": [{"update": "AAA="}]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "updates.0.doc_id"
    r = await harness.client.post("/api/sync/push", headers=s.headers, json={"updates": []})
    assert r.status_code == 422
    r = await harness.client.post("/api/sync/push", headers=s.headers, json=["not", "an", "object"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("update,code", [
    ("%%%", "INVALID_BASE64"),
    ("QUJD\x00", "INVALID_BASE64"),
    ("A", "INVALID_BASE64"),
    (b64(random.Random(7).randbytes(64)), "MALFORMED_UPDATE"),
    (b64(b"\xff" * 32), "MALFORMED_UPDATE"),
    (b64(b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\x0f"), "MALFORMED_UPDATE"),
])
async def test_hostile_updates_get_400_and_the_server_stays_up(harness, update, code):
    s = await harness.user_session("office")
    r = await harness.client.post("/api/sync/push", headers=s.headers, json={"doc_id": job_doc(), "update": update})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    assert await harness.count(t.oplog) == 0
    await _still_serving(harness, s)


async def test_malformed_json_body_is_400(harness):
    s = await harness.user_session("crew")
    r = await harness.client.post("/api/sync/push", headers={**s.headers, "Content-Type": "application/json"},
                                  content=b'{"doc_id": ')
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON"


async def test_oversize_bodies_and_updates_are_413_and_the_server_stays_up(harness):
    s = await harness.user_session("office")
    doc_id = job_doc()
    huge = {"doc_id": doc_id, "update": "A" * (3 * 1024 * 1024)}
    r = await harness.client.post("/api/sync/push", headers=s.headers, json=huge)
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks():  # no Content-Length: the limit applies while streaming
        yield b'{"doc_id": "' + doc_id.encode() + b'", "update": "'
        for _ in range(48):
            yield b"A" * 65536
        yield b'"}'

    r = await harness.client.post("/api/sync/push", headers=s.headers, content=chunks())
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    # under the body limit but over the engine's update limit (1 MiB)
    big_update = b64(os.urandom(1024 * 1024 + 1))
    r = await harness.client.post("/api/sync/push", headers=s.headers, json={"doc_id": doc_id, "update": big_update})
    assert r.status_code == 413 and r.json()["error"]["code"] == "UPDATE_TOO_LARGE"
    await _still_serving(harness, s)


async def test_pull_errors(harness):
    s = await harness.user_session("office")
    dev = s.device()
    doc_id = job_doc()
    await harness.client.post("/api/sync/push", headers=s.headers,
                              json={"doc_id": doc_id, "update": b64(dev.set_fields(doc_id, title="x"))})
    cases = [
        ({"doc_id": doc_id, "state_vector": "%%%"}, 400, "INVALID_BASE64"),
        ({"doc_id": doc_id, "state_vector": b64url(b"\xff\xff\xff")}, 400, "MALFORMED_UPDATE"),
        ({"doc_id": job_doc()}, 404, "UNKNOWN_DOCUMENT"),
        ({"doc_id": "job:42"}, 400, "MALFORMED_UPDATE"),
        ({"doc_id": doc_id, "since": "-1"}, 422, "VALIDATION_ERROR"),
        ({"doc_id": doc_id, "since": "abc"}, 422, "VALIDATION_ERROR"),
        ({}, 422, "VALIDATION_ERROR"),
    ]
    for params, status, code in cases:
        r = await harness.client.get("/api/sync/pull", headers=s.headers, params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (params, r.text)
    await _still_serving(harness, s)


async def test_status_paginates_with_a_cursor(harness):
    s = await harness.user_session("office")
    dev = s.device()
    ids = sorted(job_doc() for _ in range(3))
    for d in ids:
        r = await harness.client.post("/api/sync/push", headers=s.headers,
                                      json={"doc_id": d, "update": b64(dev.set_fields(d, title=d[-4:]))})
        assert r.status_code == 200
    r = await harness.client.get("/api/sync/status", headers=s.headers, params={"limit": 2})
    page1 = r.json()
    assert [d["doc_id"] for d in page1["data"]["docs"]] == ids[:2]
    assert page1["meta"]["next_cursor"] == ids[1]
    r = await harness.client.get("/api/sync/status", headers=s.headers, params={"limit": 2, "after": ids[1]})
    page2 = r.json()
    assert [d["doc_id"] for d in page2["data"]["docs"]] == ids[2:]
    assert page2["meta"]["next_cursor"] is None
