"""Server fixtures: ``make_harness(**overrides)`` starts an app (lifespan included) on ``db_url``."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from server_testkit import Harness, start_harness  # type: ignore[import-not-found]


@pytest.fixture
async def make_harness(db_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    async with AsyncExitStack() as stack:
        async def make(redis_url: str | None = None, keys_dir: Path | None = None, **overrides: Any) -> Harness:
            return await start_harness(stack, db_url, keys_dir or tmp_path / "keys", redis_url, **overrides)

        yield make


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_harness()
