"""The caches in front of authentication: verified tokens and session checks.

A revocation made by this process is seen by the very next request; one made elsewhere is
seen via Redis notices, or at the latest when the cache entry expires (the TTL).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import jwt
import pytest

from schema import tables as t
from server.auth.sessions import SessionCache, User
from server.auth.tokens import TokenService
from server.errors import Unauthorized

from server_testkit import REDIS_URL, require_redis  # type: ignore[import-not-found]
from test_ws_kit import TIMEOUT, job_doc, live_server  # type: ignore[import-not-found]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _me(harness, session) -> tuple[int, str | None]:
    r = await harness.client.get("/api/auth/me", headers=session.headers)
    return r.status_code, (r.json().get("error") or {}).get("code")


def _sessions(harness):
    return harness.app.state.services.sessions


def _sessions_on_a_fake_clock(harness):
    """The app's Sessions with its cache on a FakeClock (the clock is moved by the test)."""
    sessions, clock = _sessions(harness), FakeClock(1000.0)
    sessions.cache.clock = clock
    return sessions, clock


# --- session checks ---------------------------------------------------------------------------

async def test_session_checks_are_cached(harness):
    s = await harness.user_session("office")
    cache = _sessions(harness).cache
    assert await _me(harness, s) == (200, None)
    misses = cache.stats["misses"]
    for _ in range(3):
        assert await _me(harness, s) == (200, None)
    assert cache.stats["misses"] == misses and cache.stats["hits"] >= 3


async def test_logout_is_refused_at_once_despite_the_cache(harness):
    s = await harness.user_session("crew")
    assert await _me(harness, s) == (200, None)  # cached: active, not revoked
    r = await harness.client.post("/api/auth/logout", json={"refresh_token": s.refresh_token})
    assert r.status_code == 200
    assert await _me(harness, s) == (401, "SESSION_REVOKED")


async def test_refresh_token_reuse_revokes_cached_access_tokens_at_once(harness):
    s = await harness.user_session("office")
    assert await _me(harness, s) == (200, None)
    first = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert first.status_code == 200
    fresh = first.json()["data"]["access_token"]
    assert (await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    reuse = await harness.client.post("/api/auth/refresh", json={"refresh_token": s.refresh_token})
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "TOKEN_REUSED"
    assert await _me(harness, s) == (401, "SESSION_REVOKED")
    r = await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "SESSION_REVOKED"


async def test_an_out_of_band_change_is_seen_within_the_ttl_or_at_once_when_announced(harness):
    sessions, clock = _sessions_on_a_fake_clock(harness)
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    assert await _me(harness, s) == (200, None)
    async with harness.db.begin() as conn:  # not through this process: nobody tells the cache
        await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(role="crew"))
    assert await _me(harness, s) == (200, None)  # the bound: still cached ...
    clock.now += sessions.cache.ttl_s
    assert await _me(harness, s) == (401, "TOKEN_STALE")  # ... for at most the TTL

    v = await harness.add_user("crew")
    sv = await harness.login(v["email"])
    assert await _me(harness, sv) == (200, None)
    async with harness.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == v["id"]).values(active=False))
    await sessions.invalidate_user(v["id"])  # what a process changing a user calls
    assert await _me(harness, sv) == (401, "INVALID_TOKEN")


async def test_the_cache_can_be_turned_off(make_harness, monkeypatch):
    monkeypatch.setenv("SYNCD_SESSION_CACHE_S", "0")
    h = await make_harness()
    u = await h.add_user("office")
    s = await h.login(u["email"])
    assert await _me(h, s) == (200, None)
    async with h.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(active=False))
    assert await _me(h, s) == (401, "INVALID_TOKEN")
    assert len(_sessions(h).cache) == 0


def test_a_query_overtaken_by_an_invalidation_does_not_refill_the_cache():
    cache = SessionCache(ttl_s=5, clock=FakeClock(0.0))
    user = User("u1", "a@example.com", "A", "office", True)
    epoch = cache.epoch  # a session check starts its query ...
    cache.invalidate_families(["fam"])  # ... the family is revoked meanwhile ...
    cache.put(epoch, "u1", "fam", (user, False))  # ... what the query read is stale
    assert cache.get("u1", "fam") is None
    cache.put(cache.epoch, "u1", "fam", (user, True))
    assert cache.get("u1", "fam") == (user, True)
    assert cache.get("someone-else", "fam") is None  # an entry answers only for its user


def test_the_session_cache_is_bounded_and_expires():
    clock = FakeClock(0.0)
    cache = SessionCache(ttl_s=5, max_entries=8, clock=clock)
    user = User("u", "a@example.com", "A", "office", True)
    for i in range(20):
        cache.put(cache.epoch, "u", f"f{i}", (user, False))
        assert len(cache) <= 8
    assert cache.get("u", "f19") is not None
    clock.now = 5.0
    assert cache.get("u", "f19") is None


# --- verified tokens -----------------------------------------------------------------------------

def test_a_remembered_token_still_expires(harness):
    clock = FakeClock(time.time())
    svc = TokenService(harness.app.state.keys, issuer="fieldsync", audience="fieldsync-api", ttl_s=60, leeway_s=5,
                       clock=clock)
    token, exp = svc.issue(user_id="u", role="office", device_id="dev-1", family_id="fam")
    first = svc.verify(token)
    assert svc.verify(token) is first  # remembered: no second signature check
    clock.now = exp + 4  # within the leeway
    assert svc.verify(token) is first
    clock.now = exp + 5
    with pytest.raises(Unauthorized) as e:
        svc.verify(token)
    assert e.value.code == "TOKEN_EXPIRED"


def test_only_verified_tokens_are_remembered(harness):
    svc = harness.app.state.services.tokens
    token, _ = svc.issue(user_id="u", role="office", device_id="dev-1", family_id="fam")
    h, p, sig = token.split(".")
    forged = f"{h}.{p}.{sig[:-4]}AAAA"
    for _ in range(2):
        with pytest.raises(Unauthorized):
            svc.verify(forged)
    assert forged not in svc._verified
    svc.verify(token)
    assert token in svc._verified


def test_the_token_cache_is_bounded(harness):
    svc = TokenService(harness.app.state.keys, issuer="i", audience="a", ttl_s=60, cache_size=4)
    tokens = [svc.issue(user_id="u", role="office", device_id="dev-1", family_id=f"f{i}")[0] for i in range(10)]
    for tok in tokens:
        assert svc.verify(tok).family_id == jwt.decode(tok, options={"verify_signature": False})["fam"]
        assert len(svc._verified) <= 4


# --- live connections and other processes ------------------------------------------------------------

async def test_logout_closes_the_sessions_live_connections(db_url: str, tmp_path: Path):
    async with live_server(db_url, tmp_path / "keys") as server:
        office = await server.user_session("office")
        other = await server.user_session("office")
        doc_id = job_doc()
        a = await (await server.client(office, doc_id)).sync()
        b = await (await server.client(other, doc_id)).sync()
        r = await server.http.post("/api/auth/logout", json={"refresh_token": office.refresh_token})
        assert r.status_code == 200
        await a.wait_for(lambda: a.closed)
        assert a.closed[0] == 4401
        assert b.closed is None
        await b.close()


@pytest.mark.redis
async def test_a_revocation_in_one_process_reaches_the_other(make_harness):
    require_redis()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    a = await make_harness(redis_url=REDIS_URL, redis_prefix=prefix)
    b = await make_harness(redis_url=REDIS_URL, redis_prefix=prefix)
    na, nb = a.app.state.auth_notices, b.app.state.auth_notices
    await asyncio.wait_for(asyncio.gather(na.subscribed.wait(), nb.subscribed.wait()), TIMEOUT)
    heard = asyncio.Event()
    apply = nb._apply

    def apply_and_signal(data):
        apply(data)
        heard.set()

    nb._apply = apply_and_signal
    s = await a.user_session("office")
    assert await _me(b, s) == (200, None)  # cached in b
    r = await a.client.post("/api/auth/logout", json={"refresh_token": s.refresh_token})
    assert r.status_code == 200
    await asyncio.wait_for(heard.wait(), TIMEOUT)
    assert await _me(b, s) == (401, "SESSION_REVOKED")


async def test_a_changed_user_loses_its_live_connections_when_announced(db_url: str, tmp_path: Path):
    async with live_server(db_url, tmp_path / "keys") as server:
        u = await server.add_user("office")
        office = await server.login(u["email"])
        other = await server.user_session("office")
        doc_id = job_doc()
        a = await (await server.client(office, doc_id)).sync()
        b = await (await server.client(other, doc_id)).sync()
        async with server.db.begin() as conn:
            await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(active=False))
        await server.app.state.services.sessions.invalidate_user(u["id"])
        await a.wait_for(lambda: a.closed)
        assert a.closed[0] == 4401
        assert b.closed is None
        await b.close()


async def test_concurrent_misses_share_one_query_but_not_across_an_invalidation(harness):
    sessions = _sessions(harness)
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    fam = jwt.decode(s.access_token, options={"verify_signature": False})["fam"]
    real = sessions._query_state
    calls: list[int] = []
    release = asyncio.Event()

    async def slow_query(user_id: str, family_id: str, epoch: int):
        calls.append(epoch)
        await release.wait()
        return await real(user_id, family_id, epoch)

    sessions._query_state = slow_query
    first = [asyncio.create_task(sessions.session_state(u["id"], fam)) for _ in range(5)]
    while len(calls) < 1:  # let the tasks reach the query (no timing involved)
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(calls) == 1  # the other four wait for the same answer
    sessions.cache.invalidate_families([fam])  # a request after this must not reuse that read
    later = asyncio.create_task(sessions.session_state(u["id"], fam))
    while len(calls) < 2:
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*first, later)
    assert len(calls) == 2 and calls[1] == calls[0] + 1
    assert all(user is not None and user.id == u["id"] and not revoked for user, revoked in results)


async def test_an_entry_about_to_expire_is_reread_in_the_background(harness):
    sessions, clock = _sessions_on_a_fake_clock(harness)
    u = await harness.add_user("office")
    s = await harness.login(u["email"])
    assert await _me(harness, s) == (200, None)  # cached until 1005
    async with harness.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == u["id"]).values(name="Renamed"))
    clock.now += sessions.cache.ttl_s * 0.9  # in the refresh window: answered from the cache ...
    r = await harness.client.get("/api/auth/me", headers=s.headers)
    assert r.status_code == 200 and r.json()["data"]["user"]["name"] == "office user"
    assert sessions._refreshing  # ... while it is re-read
    await asyncio.gather(*sessions._refreshing)
    r = await harness.client.get("/api/auth/me", headers=s.headers)
    assert r.json()["data"]["user"]["name"] == "Renamed"
    clock.now += sessions.cache.ttl_s * 0.5  # past the old expiry, within the new one: no query
    misses = sessions.cache.stats["misses"]
    assert await _me(harness, s) == (200, None)
    assert sessions.cache.stats["misses"] == misses


async def test_a_refresh_overtaken_by_a_revocation_is_dropped(harness):
    sessions, clock = _sessions_on_a_fake_clock(harness)
    s = await harness.user_session("office")
    assert await _me(harness, s) == (200, None)
    real, gate, read = sessions._read_states, asyncio.Event(), asyncio.Event()

    async def gated(pairs):
        states = await real(pairs)  # reads the session before the logout ...
        read.set()
        await gate.wait()
        return states

    sessions._read_states = gated
    clock.now += sessions.cache.ttl_s * 0.9
    assert await _me(harness, s) == (200, None)  # starts a background re-read
    await read.wait()
    sessions._read_states = real
    r = await harness.client.post("/api/auth/logout", json={"refresh_token": s.refresh_token})
    assert r.status_code == 200
    gate.set()  # ... and finishes after it: what it read (not revoked) must not be kept
    await asyncio.gather(*sessions._refreshing)
    assert await _me(harness, s) == (401, "SESSION_REVOKED")


async def test_background_rereads_of_many_sessions_share_one_read(harness):
    """Sessions whose entries enter the refresh window together are re-read in one batch, and
    each gets its own answer (a revoked family stays revoked, a renamed user is renamed)."""
    sessions, clock = _sessions_on_a_fake_clock(harness)
    users = [await harness.add_user("office") for _ in range(3)]
    ss = [await harness.login(u["email"]) for u in users]
    for s in ss:
        assert await _me(harness, s) == (200, None)
    async with harness.db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == users[0]["id"]).values(name="Renamed"))
    calls: list[list[tuple[str, str]]] = []
    real = sessions._read_states

    async def counted(pairs):
        calls.append(list(pairs))
        return await real(pairs)

    sessions._read_states = counted
    clock.now += sessions.cache.ttl_s * 0.9
    for s in ss:  # all three in the refresh window: answered from the cache, re-read together
        assert await _me(harness, s) == (200, None)
    await asyncio.gather(*sessions._refreshing)
    assert len(calls) == 1 and len(calls[0]) == 3
    r = await harness.client.get("/api/auth/me", headers=ss[0].headers)
    assert r.json()["data"]["user"]["name"] == "Renamed"
    # a revocation made elsewhere (straight in the database, as another process would) is
    # seen by the next batch
    async with harness.db.begin() as conn:
        await conn.execute(t.refresh_tokens.update().where(t.refresh_tokens.c.user_id == users[1]["id"])
                           .values(revoked_at=datetime.now(timezone.utc)))
    clock.now += sessions.cache.ttl_s * 0.9
    for s in ss:
        await _me(harness, s)
    await asyncio.gather(*sessions._refreshing)
    assert len(calls) == 2
    clock.now += sessions.cache.ttl_s * 0.2  # within the re-read entries' TTL
    assert await _me(harness, ss[1]) == (401, "SESSION_REVOKED")
    assert await _me(harness, ss[2]) == (200, None)
