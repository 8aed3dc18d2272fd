"""Role checks at the edge (``requires``): 403 in the envelope, every refusal audited."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from server.deps import current_auth, requires
from server.errors import ok


@requires("office", "owner")
async def _schedule(request):
    auth = current_auth(request)
    return ok({"scheduled_by": auth.user.id, "device": auth.device_id})


EXTRA = [Route("/api/test/schedule", _schedule, methods=["POST"])]


async def test_only_the_owner_reads_the_audit_log(harness):
    crew = await harness.user_session("crew")
    office = await harness.user_session("office")
    owner = await harness.user_session("owner")
    for s in (crew, office):
        r = await harness.client.get("/api/audit", headers=s.headers)
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["code"] == "FORBIDDEN" and "owner" in err["message"]
    r = await harness.client.get("/api/audit", headers=owner.headers)
    assert r.status_code == 200
    rows = r.json()["data"]
    assert [(a["user_id"], a["device_id"], a["action"], a["resource"], a["ip"]) for a in rows] == [
        (office.user["id"], office.device_id, "GET /api/audit", "/api/audit", "127.0.0.1"),
        (crew.user["id"], crew.device_id, "GET /api/audit", "/api/audit", "127.0.0.1"),
    ]
    assert all(a["reason"].startswith("FORBIDDEN") for a in rows)
    r = await harness.client.get("/api/audit", headers=owner.headers, params={"limit": 1})
    assert r.json()["meta"]["next_cursor"] == rows[0]["id"]
    r = await harness.client.get("/api/audit", headers=owner.headers, params={"limit": 1, "before": rows[0]["id"]})
    assert [a["id"] for a in r.json()["data"]] == [rows[1]["id"]]


async def test_requires_on_any_endpoint(make_harness):
    h = await make_harness(extra_routes=EXTRA)
    crew = await h.user_session("crew")
    office = await h.user_session("office")
    r = await h.client.post("/api/test/schedule", headers=crew.headers, json={"secret": "do-not-log-me"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = await h.client.post("/api/test/schedule", headers=office.headers)
    assert r.status_code == 200
    assert r.json()["data"] == {"scheduled_by": office.user["id"], "device": office.device_id}
    h.client.cookies.clear()
    r = await h.client.post("/api/test/schedule")
    assert r.status_code == 401
    audit = await h.audit_rows()
    assert [(a["user_id"], a["action"]) for a in audit] == [
        (crew.user["id"], "POST /api/test/schedule"), (None, "POST /api/test/schedule")]
    assert "do-not-log-me" not in str(audit)


def test_requires_refuses_unknown_roles():
    with pytest.raises(ValueError):
        requires("admin")


@pytest.mark.parametrize("hops,expected", [(0, "127.0.0.1"), (1, "203.0.113.9"), (2, "198.51.100.4")])
async def test_the_audited_ip_trusts_only_the_configured_proxies(make_harness, hops, expected):
    h = await make_harness(trusted_proxies=hops)
    r = await h.client.get("/api/audit", headers={"X-Forwarded-For": "198.51.100.4, 203.0.113.9"})
    assert r.status_code == 401
    assert [a["ip"] for a in await h.audit_rows()] == [expected]
