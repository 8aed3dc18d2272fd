"""Helpers for the server tests: an app with its lifespan, clients, users, logged-in devices."""

from __future__ import annotations

import base64
import os
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc
from sqlalchemy import select
from starlette.applications import Starlette

from conflict_rules.hlc import HLC
from schema import documents as D
from schema import tables as t
from server.app import create_app
from syncd.users import add_user

PASSWORD = "correct horse battery staple"
BASE_URL = "https://testserver"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def redis_available() -> bool:
    import redis

    try:
        r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(r.ping())
        finally:
            r.close()
    except (redis.RedisError, OSError):
        return False


def require_redis() -> None:
    """Skip without Redis on a developer machine; fail under CI=true."""
    if redis_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis is not reachable at {REDIS_URL}, and CI=true forbids skipping", pytrace=False)
    pytest.skip(f"Redis is not reachable at {REDIS_URL}")


class Device:
    """A replica reduced to pycrdt docs and a clock, stamping writes as one logged-in device."""

    def __init__(self, user_id: str, role: str, device_id: str) -> None:
        self.user_id, self.role, self.device_id = user_id, role, device_id
        self.client_id = (uuid.uuid4().int % (2**52)) + 1
        self.docs: dict[str, Doc] = {}
        self.hlc = HLC()

    def doc(self, doc_id: str) -> Doc:
        if doc_id not in self.docs:
            self.docs[doc_id] = Doc(client_id=self.client_id)
        return self.docs[doc_id]

    def set_fields(self, doc_id: str, *, author: str | None = None, role: str | None = None,
                   device: str | None = None, **values: Any) -> bytes:
        """The update of writing ``values``; ``author``/``role``/``device`` forge the stamp."""
        d = self.doc(doc_id)
        before = d.get_state()
        with d.transaction(origin="local"):
            D.write_fields(d, values, ts=self.hlc.now(), device=device or self.device_id,
                           author=author or self.user_id, role=role or self.role)
        return d.get_update(before)


@dataclass
class Session:
    access_token: str
    refresh_token: str
    device_id: str
    csrf_token: str
    user: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def device(self) -> Device:
        return Device(self.user["id"], self.user["role"], self.device_id)


@dataclass
class Harness:
    app: Starlette
    client: httpx.AsyncClient
    stack: AsyncExitStack
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    @property
    def db(self) -> Any:
        return self.app.state.db

    async def client_from(self, ip: str, **kw: Any) -> httpx.AsyncClient:
        """A client whose requests come from ``ip`` (its own cookie jar)."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000), **kw)
        return await self.stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url=BASE_URL))

    async def add_user(self, role: str, email: str | None = None, password: str = PASSWORD,
                       name: str | None = None) -> dict[str, Any]:
        email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        return await add_user(self.db, email, name or f"{role} user", role, password)

    async def login(self, email: str, password: str = PASSWORD, client: httpx.AsyncClient | None = None,
                    **extra: Any) -> Session:
        r = await (client or self.client).post("/api/auth/login", json={"email": email, "password": password, **extra})
        assert r.status_code == 200, r.text
        d = r.json()["data"]
        return Session(d["access_token"], d["refresh_token"], d["device_id"], d["csrf_token"], d["user"])

    async def user_session(self, role: str, client: httpx.AsyncClient | None = None) -> Session:
        u = await self.add_user(role)
        return await self.login(u["email"], client=client)

    async def audit_rows(self) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(
                select(t.audit_log).order_by(t.audit_log.c.id))).all()]

    async def count(self, table: Any) -> int:
        from sqlalchemy import func

        async with self.db.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def start_harness(stack: AsyncExitStack, db_url: str, keys_dir: Path, redis_url: str | None = None,
                        **overrides: Any) -> Harness:
    """Create the app, run its lifespan (until ``stack`` closes) and give it a client."""
    settings = {"login_rate_limit": 50, **overrides}
    app = create_app(db_url, redis_url, keys_dir=str(keys_dir), **settings)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL))
    return Harness(app, client, stack)
