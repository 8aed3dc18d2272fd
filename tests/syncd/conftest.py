"""Engine fixtures: a started SyncEngine on each database, and devices of each role."""

from __future__ import annotations

import pytest

from syncd.engine import EngineConfig, SyncEngine

from engine_helpers import BareDevice, add_user  # type: ignore[import-not-found]


@pytest.fixture
async def engine(db_engine):
    eng = SyncEngine(db_engine, EngineConfig(paranoid=True))
    await eng.start()
    yield eng
    await eng.stop()


@pytest.fixture
async def db_engine(db_url):
    from schema.db import create_engine
    db = create_engine(db_url)
    yield db
    await db.dispose()


@pytest.fixture
async def office(db_engine):
    return BareDevice(await add_user(db_engine, "office"), "office")


@pytest.fixture
async def crew(db_engine):
    return BareDevice(await add_user(db_engine, "crew"), "crew")


@pytest.fixture
async def owner(db_engine):
    return BareDevice(await add_user(db_engine, "owner"), "owner")



@pytest.fixture(scope="session")
def yjs():
    """One long-lived Node process running the real Yjs (the reference implementation)."""
    from yjs_reference import YjsProcess, ensure_installed, require_yjs
    require_yjs()
    ensure_installed()
    with YjsProcess() as proc:
        yield proc


@pytest.fixture
async def sqlite_db(sqlite_url):
    """A migrated SQLite database (whatever ``db_url`` is parametrized with)."""
    from schema.db import create_engine
    db = create_engine(sqlite_url)
    yield db
    await db.dispose()
