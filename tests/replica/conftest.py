"""Replica fixtures: replicas on files under tmp_path (closed after the test) and a relay."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from replica import Replica

from replica_relay import Relay  # type: ignore[import-not-found]


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
