"""Login, refresh rotation with reuse detection, logout, cookies and CSRF."""

from __future__ import annotations

from http.cookies import SimpleCookie

import jwt
from sqlalchemy import select

from schema import tables as t

from server_testkit import PASSWORD  # type: ignore[import-not-found]


def _cookies(response) -> dict[str, SimpleCookie]:
    out = {}
    for header in response.headers.get_list("set-cookie"):
        c = SimpleCookie()
        c.load(header)
        for name in c:
            out[name] = c[name]
    return out


async def test_login_returns_tokens_cookies_and_a_device(harness):
    u = await harness.add_user("office", email="Ann@Example.com")
    r = await harness.client.post("/api/auth/login", json={"email": "ann@EXAMPLE.com", "password": PASSWORD,
                                                          "device_name": "Ann's laptop"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data", "meta"} and body["meta"]["version"] == "1.0" and body["meta"]["timestamp"]
    d = body["data"]
    assert d["token_type"] == "Bearer" and d["expires_in"] == 900
    assert d["user"] == {"id": u["id"], "email": "ann@example.com", "name": "office user", "role": "office"}
    claims = jwt.decode(d["access_token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(d["access_token"])["alg"] == "EdDSA"
    assert claims["sub"] == u["id"] and claims["role"] == "office" and claims["dev"] == d["device_id"]
    assert claims["exp"] - claims["iat"] == 900
    cookies = _cookies(r)
    assert cookies["access_token"]["httponly"] and cookies["access_token"]["path"] == "/"
    assert cookies["refresh_token"]["httponly"] and cookies["refresh_token"]["path"] == "/api/auth"
    assert not cookies["csrf_token"]["httponly"] and cookies["csrf_token"].value == d["csrf_token"]
    for c in cookies.values():
        assert c["samesite"].lower() == "strict" and c["secure"]
    async with harness.db.connect() as conn:
        dev = (await conn.execute(select(t.devices).where(t.devices.c.id == d["device_id"]))).one()
    assert dev.user_id == u["id"] and dev.name == "Ann's laptop"
    me = await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {d['access_token']}"})
    assert me.status_code == 200 and me.json()["data"]["device_id"] == d["device_id"]


async def test_login_keeps_a_given_device_id_and_refuses_another_users_device(harness):
    a = await harness.add_user("crew")
    b = await harness.add_user("crew")
    s = await harness.login(a["email"], device_id="tablet-7")
    assert s.device_id == "tablet-7"
    again = await harness.login(a["email"], device_id="tablet-7")
    assert again.device_id == "tablet-7"
    r = await harness.client.post("/api/auth/login", json={"email": b["email"], "password": PASSWORD,
                                                          "device_id": "tablet-7"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "DEVICE_CONFLICT"
    bad = await harness.client.post("/api/auth/login", json={"email": a["email"], "password": PASSWORD,
                                                            "device_id": "has/slash"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "device_id"


async def test_wrong_password_and_unknown_email_get_the_same_answer(harness):
    u = await harness.add_user("owner")
    wrong = await harness.client.post("/api/auth/login", json={"email": u["email"], "password": "not it at all"})
    unknown = await harness.client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "x" * 12})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "INVALID_CREDENTIALS"
    assert "set-cookie" not in wrong.headers
    audit = await harness.audit_rows()
    assert [a["action"] for a in audit] == ["POST /api/auth/login"] * 2
    assert all(PASSWORD not in str(a) and "not it at all" not in str(a) for a in audit)


async def test_inactive_user_cannot_log_in_and_loses_access(harness):
    u = await harness.add_user("crew")
    s = await harness.login(u["email"])
    async with harness.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(active=False))
    me = await harness.client.get("/api/auth/me", headers=s.headers)
    assert me.status_code == 401
    r = await harness.client.post("/api/auth/login", json={"email": u["email"], "password": PASSWORD})
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_CREDENTIALS"
    ref = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert ref.status_code == 401


async def test_a_role_change_makes_the_token_stale(harness):
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    async with harness.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(role="crew"))
    me = await harness.client.get("/api/auth/me", headers=s.headers)
    assert me.status_code == 401 and me.json()["error"]["code"] == "TOKEN_STALE"
    r = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert r.status_code == 200
    fresh = r.json()["data"]
    assert jwt.decode(fresh["access_token"], options={"verify_signature": False})["role"] == "crew"
    me = await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert me.status_code == 200 and me.json()["data"]["user"]["role"] == "crew"


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(harness):
    u = await harness.add_user("crew")
    s = await harness.login(u["email"])
    r1 = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert r1.status_code == 200, r1.text
    t1 = r1.json()["data"]
    assert t1["refresh_token"] != s.refresh_token and t1["device_id"] == s.device_id
    r2 = await harness.client.post("/api/auth/refresh", json={"refresh_token": t1["refresh_token"]})
    assert r2.status_code == 200
    t2 = r2.json()["data"]
    assert (await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {t2['access_token']}"})
            ).status_code == 200

    # the first token, already used, comes back: someone else holds the chain
    reuse = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "TOKEN_REUSED"
    # every token of the family is dead now, refresh and access alike
    latest = await harness.client.post("/api/auth/refresh", json={"refresh_token": t2["refresh_token"]})
    assert latest.status_code == 401 and latest.json()["error"]["code"] == "SESSION_REVOKED"
    me = await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {t2['access_token']}"})
    assert me.status_code == 401 and me.json()["error"]["code"] == "SESSION_REVOKED"
    assert any(a["reason"].startswith("TOKEN_REUSED") for a in await harness.audit_rows())
    # another login is a new family and works
    other = await harness.login(u["email"])
    assert (await harness.client.get("/api/auth/me", headers=other.headers)).status_code == 200


async def test_refresh_refuses_garbage_and_tampered_device(harness):
    u = await harness.add_user("crew")
    s = await harness.login(u["email"])
    for token in ["nope", s.refresh_token + "x", s.refresh_token.rsplit(".", 1)[0] + ".other-device"]:
        r = await harness.client.post("/api/auth/refresh", json={"refresh_token": token})
        assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_TOKEN", token
    r = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert r.status_code == 200


async def test_logout_revokes_the_session(harness):
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    other = await harness.login(u["email"])  # another device of the same user stays logged in
    r = await harness.client.post("/api/auth/logout", json={"refresh_token": s.refresh_token}, headers=s.headers)
    assert r.status_code == 200 and r.json()["data"]["logged_out"] is True
    assert (await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})).status_code == 401
    assert (await harness.client.get("/api/auth/me", headers=s.headers)).status_code == 401
    assert (await harness.client.get("/api/auth/me", headers=other.headers)).status_code == 200


async def test_logout_with_only_the_access_token_revokes_its_family(harness):
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    harness.client.cookies.clear()
    r = await harness.client.post("/api/auth/logout", headers=s.headers)
    assert r.status_code == 200 and r.json()["data"]["sessions_revoked"] == 1
    assert (await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})).status_code == 401


async def test_cookie_refresh_and_logout_need_the_csrf_header(harness):
    u = await harness.add_user("office")
    s = await harness.login(u["email"])  # the client's jar now holds the cookies
    r = await harness.client.post("/api/auth/refresh")
    assert r.status_code == 403 and r.json()["error"]["code"] == "CSRF_FAILED"
    r = await harness.client.post("/api/auth/refresh", headers={"X-CSRF-Token": s.csrf_token})
    assert r.status_code == 200, r.text
    csrf = r.json()["data"]["csrf_token"]
    assert harness.client.cookies.get("csrf_token") == csrf
    r = await harness.client.post("/api/auth/logout")
    assert r.status_code == 403
    r = await harness.client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert harness.client.cookies.get("access_token") is None


async def test_cookie_authenticated_unsafe_requests_need_the_csrf_header(harness):
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    body = {"doc_id": "job:not-a-valid-id", "update": "AAA="}
    # safe method: the cookie alone is enough
    assert (await harness.client.get("/api/auth/me")).status_code == 200
    no_header = await harness.client.post("/api/sync/push", json=body)
    assert no_header.status_code == 403 and no_header.json()["error"]["code"] == "CSRF_FAILED"
    wrong = await harness.client.post("/api/sync/push", json=body, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "CSRF_FAILED"
    # with the header the request reaches the engine (which refuses the bad doc id)
    ok = await harness.client.post("/api/sync/push", json=body, headers={"X-CSRF-Token": s.csrf_token})
    assert ok.status_code == 400 and ok.json()["error"]["code"] == "MALFORMED_UPDATE"
    # bearer authentication skips CSRF (browsers never add that header by themselves)
    harness.client.cookies.clear()
    bearer = await harness.client.post("/api/sync/push", json=body, headers=s.headers)
    assert bearer.status_code == 400 and bearer.json()["error"]["code"] == "MALFORMED_UPDATE"
    audit = [a for a in await harness.audit_rows() if a["reason"].startswith("CSRF_FAILED")]
    assert len(audit) == 2 and all(a["user_id"] == u["id"] and a["device_id"] == s.device_id for a in audit)


async def test_a_hash_with_old_parameters_is_upgraded_at_login(harness):
    from argon2 import PasswordHasher

    u = await harness.add_user("crew")
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    async with harness.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(password_hash=weak))
    await harness.login(u["email"])
    async with harness.db.connect() as conn:
        stored = (await conn.execute(select(t.users.c.password_hash).where(t.users.c.id == u["id"]))).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    await harness.login(u["email"])  # and the new hash verifies
