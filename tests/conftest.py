"""Fixtures shared by the whole suite: databases on both backends and external services.

* ``db_url``: a freshly migrated database, once on SQLite and once on PostgreSQL (the
  PostgreSQL case carries the ``postgres`` marker; deselect with ``-m "not postgres"``).
* ``sqlite_url`` / ``pg_url``: the same for one backend.
* ``engine``: an :class:`AsyncEngine` on ``db_url``, disposed after the test.

A service that is not reachable skips its tests on a developer machine and fails them in
CI (``CI=true``): CI must never go green by skipping.
"""

from __future__ import annotations

import os
import sys
import uuid
from functools import lru_cache
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

# Import the packages from this checkout even when the project is not installed; a regular
# package on sys.path also wins over the namespace package tests/schema would otherwise be.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from schema.db import create_engine, migrate  # noqa: E402

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


@lru_cache(maxsize=None)
def postgres_available() -> bool:
    """Whether PostgreSQL answers at :data:`PG_ADMIN_DSN` (checked once per session)."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def require_service(name: str, check: Callable[[], bool]) -> None:
    """Skip the current test if ``check()`` is false; in CI, fail it instead."""
    if check():
        return
    if in_ci():
        pytest.fail(f"{name} is not reachable, and CI=true forbids skipping", pytrace=False)
    pytest.skip(f"{name} is not reachable (start it, or deselect with -m 'not {name}')")


async def _create_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"test_{uuid.uuid4().hex[:16]}"
    async with await psycopg.AsyncConnection.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def _drop_pg_database(name: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"
        await migrate(url)
        yield url
        return
    require_service("postgres", postgres_available)
    name, url = await _create_pg_database()
    try:
        await migrate(url)
        yield url
    finally:
        await _drop_pg_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of a new, migrated database; the test runs once per backend."""
    async for url in _fresh_database(request.param, tmp_path):
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    """URL of a new, migrated SQLite database file under ``tmp_path``."""
    async for url in _fresh_database("sqlite", tmp_path):
        yield url


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    """URL of a new, migrated PostgreSQL database (dropped afterwards).

    Tests using it should carry ``@pytest.mark.postgres``.
    """
    async for url in _fresh_database("postgres", tmp_path):
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``db_url`` (both backends), disposed after the test."""
    eng = create_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that ask for pg_url need PostgreSQL: let `-m "not postgres"` deselect them too.
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
