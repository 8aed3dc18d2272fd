"""Replica fixtures: replicas on files under tmp_path (closed after the test), a relay, and
office users in a server database (for replicas syncing with the real engine)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from replica import Replica
from schema import tables as t

from replica_relay import Relay  # type: ignore[import-not-found]


@pytest.fixture
def office_users():
    """``await office_users(db, n)``: ``n`` new active office users in ``db``; their ids."""

    async def _add(db: Any, n: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        async with db.begin() as conn:
            await conn.execute(t.users.insert(), [
                {"id": u, "email": f"{u[:8]}@example.test", "name": "office", "role": "office",
                 "password_hash": None, "active": True, "created_at": datetime.now(timezone.utc)} for u in ids])
        return ids

    return _add


@pytest.fixture
def relay() -> Relay:
    return Relay()


@pytest.fixture
async def open_replica(tmp_path: Path):
    """``await open_replica(name, role, user_id=None, **kw)``: a Replica stored in tmp_path/name.db.

    Reopening the same name after ``close()`` gives the same device back.
    """
    opened: list[Replica] = []

    async def _open(name: str, role: str = "office", user_id: str | None = None, **kw) -> Replica:
        r = await Replica.open(str(tmp_path / f"{name}.db"), user_id=user_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                               role=role, **kw)
        opened.append(r)
        return r

    yield _open
    for r in opened:
        await r.close()  # closing twice is harmless
