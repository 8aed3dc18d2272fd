"""The long-lived objects one app instance shares between requests (``app.state.services``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from syncd.engine import SyncEngine

from .audit import AuditLog
from .auth.keys import KeySet
from .auth.sessions import Sessions
from .auth.tokens import TokenService
from .config import ServerConfig
from .ratelimit import RateLimits

__all__ = ["Services", "services"]


@dataclass
class Services:
    config: ServerConfig
    db: AsyncEngine
    engine: SyncEngine
    keys: KeySet
    tokens: TokenService
    sessions: Sessions
    limits: RateLimits
    audit: AuditLog
    redis: Any | None = None


def services(conn: HTTPConnection) -> Services:
    """The services of the app serving this request (or WebSocket)."""
    return conn.app.state.services
