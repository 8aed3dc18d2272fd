"""Shared helpers of the REST tests (imported by the other ``test_rest_*`` modules), and the
pure tests of the cursor format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from schema import tables as t
from server.errors import ValidationFailed
from server.rest.pagination import decode_cursor, encode_cursor

from server_testkit import Harness, Session  # type: ignore[import-not-found]

#: far above anything a test does: the REST tests make hundreds of calls per user
RATE = 100_000


@dataclass
class Caller:
    """One signed-in user making API calls."""

    h: Harness
    s: Session

    @property
    def id(self) -> str:
        return self.s.user["id"]

    @property
    def device_id(self) -> str:
        return self.s.device_id

    async def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.h.client.request(method, path, headers=self.s.headers, **kw)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.call("POST", path, json=body)

    async def put(self, path: str, body: Any) -> httpx.Response:
        return await self.call("PUT", path, json=body)

    async def delete(self, path: str) -> httpx.Response:
        return await self.call("DELETE", path)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200, **params: Any) -> Any:
        kw: dict[str, Any] = {"params": params}
        if body is not None:
            kw["json"] = body
        r = await self.call(method, path, **kw)
        assert r.status_code == status, r.text
        return r.json()["data"]

    async def customer(self, name: str = "Ada Lovelace", **fields: Any) -> dict[str, Any]:
        return await self.ok("POST", "/api/customers", {"name": name, **fields}, status=201)

    async def job(self, customer_id: str, title: str = "Kitchen remodel", **fields: Any) -> dict[str, Any]:
        return await self.ok("POST", "/api/jobs", {"customer_id": customer_id, "title": title, **fields}, status=201)

    async def walk(self, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list, following ``meta.next_cursor``."""
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(1000):
            q = {"limit": limit, **params}
            if cursor is not None:
                q["cursor"] = cursor
            r = await self.get(path, **q)
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["data"]) <= limit and body["meta"]["limit"] == limit
            items += body["data"]
            cursor = body["meta"]["next_cursor"]
            if cursor is None:
                return items
            assert body["data"], "a non-final page must not be empty"
        raise AssertionError("pagination did not terminate")


async def caller(h: Harness, role: str) -> Caller:
    return Caller(h, await h.user_session(role))


async def start(make_harness: Any) -> Harness:
    return await make_harness(api_rate_limit=RATE)


async def oplog(h: Harness, doc_id: str) -> list[dict[str, Any]]:
    async with h.db.connect() as conn:
        rows = (await conn.execute(select(t.oplog.c.seq, t.oplog.c.user_id, t.oplog.c.device_id)
                                   .where(t.oplog.c.doc_id == doc_id).order_by(t.oplog.c.seq))).all()
    return [dict(r._mapping) for r in rows]


async def events(h: Harness, doc_id: str) -> list[dict[str, Any]]:
    async with h.db.connect() as conn:
        rows = (await conn.execute(select(t.events).where(t.events.c.doc_id == doc_id)
                                   .order_by(t.events.c.id))).all()
    return [dict(r._mapping) for r in rows]


async def audit_for(h: Harness, user_id: str) -> list[dict[str, Any]]:
    return [a for a in await h.audit_rows() if a["user_id"] == user_id]


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def fields_of(err: dict[str, Any]) -> set[str]:
    return {d["field"] for d in err["details"]}


# --- the cursor format (pure) ---------------------------------------------------------------------

def test_cursor_round_trip_and_refusals():
    c = encode_cursor("customers", ["ada", "0000"])
    assert "=" not in c and decode_cursor("customers", c, [str, str]) == ["ada", "0000"]
    for bad, listing, types in ((c, "jobs", [str, str]),                       # another listing
                                (c, "customers", [str, str, str]),              # another shape
                                (c, "customers", [int, str]),                   # another type
                                ("%%%", "customers", [str, str]),              # not base64
                                (encode_cursor("customers", [True, "x"]), "customers", [int, str])):
        with pytest.raises(ValidationFailed) as e:
            decode_cursor(listing, bad, types)
        assert e.value.details[0]["field"] == "cursor"
