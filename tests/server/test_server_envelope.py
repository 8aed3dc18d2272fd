"""Every response in the envelope: success, 404, 405, 422, 500; health."""

from __future__ import annotations

import httpx
from starlette.routing import Route

from server.errors import API_VERSION

from server_testkit import BASE_URL  # type: ignore[import-not-found]


async def _boom(request):
    raise RuntimeError("secret internal detail")


async def test_health_and_success_envelope(harness):
    r = await harness.client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["data"]["status"] == "ok" and body["meta"]["version"] == API_VERSION
    assert body["meta"]["timestamp"].endswith("Z")


async def test_not_found_and_method_not_allowed_are_enveloped(harness):
    r = await harness.client.get("/api/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": {"code": "NOT_FOUND", "message": "Not Found", "details": []}}
    r = await harness.client.get("/api/auth/login")
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in r.headers["allow"]


async def test_validation_errors_name_each_field(harness):
    r = await harness.client.post("/api/auth/login", json={"email": "", "device_id": "a b"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert {d["field"] for d in err["details"]} == {"email", "password", "device_id"}
    assert all(d["message"] for d in err["details"])


async def test_unexpected_errors_are_500_without_internals(make_harness):
    h = await make_harness(extra_routes=[Route("/api/test/boom", _boom)])
    transport = httpx.ASGITransport(app=h.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        r = await client.get("/api/test/boom")
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "INTERNAL_ERROR", "message": "internal server error; the error was logged",
                                      "details": []}}
        assert "secret" not in r.text
        assert (await client.get("/healthz")).status_code == 200
