"""Login brute force and API rate limits: in-process, in Redis, and with Redis down."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from server.config import ServerConfig
from server.ratelimit import MemoryLimiter, RateLimits

from server_testkit import PASSWORD, REDIS_URL, require_redis  # type: ignore[import-not-found]

DEFAULT_LOGIN_LIMIT = ServerConfig().login_rate_limit
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _assert_429(r) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 60
    assert r.json()["error"]["details"]["retry_after"] == retry
    return retry


async def _brute_force(h, email: str) -> None:
    """The default limit of wrong passwords, then even the right one is refused."""
    for _ in range(DEFAULT_LOGIN_LIMIT):
        r = await h.client.post("/api/auth/login", json={"email": email, "password": "guess-guess"})
        assert r.status_code == 401
    _assert_429(await h.client.post("/api/auth/login", json={"email": email, "password": PASSWORD}))


@pytest.fixture
async def redis_prefix():
    require_redis()
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _redis_keys(prefix: str) -> dict[str, int]:
    client = aioredis.from_url(REDIS_URL)
    try:
        return {k.decode(): int(await client.get(k)) async for k in client.scan_iter(match=f"{prefix}*")}
    finally:
        await client.aclose()


async def test_login_brute_force_is_limited_in_process(make_harness):
    h = await make_harness(login_rate_limit=DEFAULT_LOGIN_LIMIT)
    u = await h.add_user("owner")
    await _brute_force(h, u["email"])
    # per IP: another account from the same address is refused too
    other = await h.add_user("crew")
    _assert_429(await h.client.post("/api/auth/login", json={"email": other["email"], "password": PASSWORD}))
    # per email: the same account from fresh addresses is refused too
    elsewhere = await h.client_from("10.9.8.7")
    _assert_429(await elsewhere.post("/api/auth/login", json={"email": u["email"], "password": PASSWORD}))
    # a different account from a different address is not affected
    r = await elsewhere.post("/api/auth/login", json={"email": other["email"], "password": PASSWORD})
    assert r.status_code == 200


async def test_login_limit_per_email_across_addresses(make_harness):
    h = await make_harness(login_rate_limit=DEFAULT_LOGIN_LIMIT)
    u = await h.add_user("office")
    for i in range(DEFAULT_LOGIN_LIMIT):
        c = await h.client_from(f"10.0.0.{i + 1}")
        assert (await c.post("/api/auth/login", json={"email": u["email"], "password": "nope-nope"})).status_code == 401
    c = await h.client_from("10.0.1.1")
    _assert_429(await c.post("/api/auth/login", json={"email": u["email"].upper(), "password": PASSWORD}))


async def test_api_calls_are_limited_per_user(make_harness):
    h = await make_harness(api_rate_limit=3)
    s = await h.user_session("crew")
    for i in range(3):  # each call from its own address: only the per-user counter grows
        c = await h.client_from(f"10.1.0.{i + 1}")
        assert (await c.get("/api/auth/me", headers=s.headers)).status_code == 200
    c = await h.client_from("10.1.0.99")
    _assert_429(await c.get("/api/auth/me", headers=s.headers))
    other = await h.user_session("crew", client=await h.client_from("10.1.1.1"))
    assert (await (await h.client_from("10.1.1.2")).get("/api/auth/me", headers=other.headers)).status_code == 200


async def test_api_calls_are_limited_per_ip_even_unauthenticated(make_harness):
    h = await make_harness(api_rate_limit=3)
    for _ in range(3):
        assert (await h.client.get("/api/sync/status")).status_code == 401
    _assert_429(await h.client.get("/api/sync/status"))
    assert (await h.client.get("/healthz")).status_code == 200  # not an API route
    other = await h.client_from("10.2.0.1")
    assert (await other.get("/api/sync/status")).status_code == 401


async def test_fixed_window_resets_and_counts_retry_after():
    now = [1_000_000.0]
    lim = MemoryLimiter(clock=lambda: now[0])
    for _ in range(2):
        assert (await lim.hit("b", "x", 2, 60)).allowed
    d = await lim.hit("b", "x", 2, 60)
    assert not d.allowed and d.retry_after == 60 - (1_000_000 % 60)
    assert (await lim.hit("b", "y", 2, 60)).allowed  # other identity, own counter
    now[0] += d.retry_after
    assert (await lim.hit("b", "x", 2, 60)).allowed


async def test_login_brute_force_is_limited_in_redis_and_shared_between_processes(make_harness, redis_prefix):
    a = await make_harness(redis_url=REDIS_URL, redis_prefix=redis_prefix, login_rate_limit=DEFAULT_LOGIN_LIMIT)
    b = await make_harness(redis_url=REDIS_URL, redis_prefix=redis_prefix, login_rate_limit=DEFAULT_LOGIN_LIMIT)
    u = await a.add_user("owner")
    for h in (a, b, a, b, a):
        r = await h.client.post("/api/auth/login", json={"email": u["email"], "password": "guess-guess"})
        assert r.status_code == 401
    _assert_429(await b.client.post("/api/auth/login", json={"email": u["email"], "password": PASSWORD}))
    counts = await _redis_keys(redis_prefix)
    login_counts = sorted(v for k, v in counts.items() if ":login-" in k)
    assert login_counts == [DEFAULT_LOGIN_LIMIT + 1] * 2  # per IP and per email, shared by a and b
    assert not any(u["email"] in k or "127.0.0.1" in k for k in counts)  # identities are hashed


async def test_api_limit_in_redis_is_shared_between_processes(make_harness, redis_prefix):
    a = await make_harness(redis_url=REDIS_URL, redis_prefix=redis_prefix, api_rate_limit=4)
    b = await make_harness(redis_url=REDIS_URL, redis_prefix=redis_prefix, api_rate_limit=4)
    for h in (a, b, a, b):
        assert (await h.client.get("/api/sync/status")).status_code == 401
    _assert_429(await a.client.get("/api/sync/status"))


async def test_redis_down_fails_open_for_api_but_keeps_limiting_logins(make_harness):
    h = await make_harness(redis_url=DEAD_REDIS, api_rate_limit=2, login_rate_limit=DEFAULT_LOGIN_LIMIT)
    s = await h.user_session("office")
    for _ in range(5):  # over the API limit: allowed, the limiter's store is down
        assert (await h.client.get("/api/auth/me", headers=s.headers)).status_code == 200
    u = await h.add_user("crew")
    # one login already happened from this address: the in-process fallback counted it
    for _ in range(DEFAULT_LOGIN_LIMIT - 1):
        r = await h.client.post("/api/auth/login", json={"email": u["email"], "password": "guess-guess"})
        assert r.status_code == 401
    _assert_429(await h.client.post("/api/auth/login", json={"email": u["email"], "password": PASSWORD}))


async def test_rate_limits_policy_without_redis_uses_memory():
    limits = RateLimits(login_limit=1, api_limit=1, window_s=60)
    await limits.check_login("1.2.3.4", "A@b.com")
    from server.errors import RateLimited
    with pytest.raises(RateLimited):
        await limits.check_login("5.6.7.8", "a@B.com")  # same email, normalized
