"""Process configuration from the environment (12-factor style)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    redis_url: str | None
    host: str
    port: int
    data_dir: str

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            redis_url=os.environ.get("REDIS_URL") or None,
            host=os.environ.get("SYNCD_HOST", "127.0.0.1"),
            port=int(os.environ.get("SYNCD_PORT", "8000")),
            data_dir=os.environ.get("SYNCD_DATA_DIR", "var"),
        )
