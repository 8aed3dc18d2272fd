"""The audit trail of refusals (``audit_log``).

Every request the edge refuses (no or bad credentials, wrong role, CSRF failure, a write
the sync engine refuses as forbidden, refresh-token reuse) is recorded: who (user, device,
when known), what (``"METHOD /path"``), which resource, why, and from which IP. Request
bodies are never recorded (they may hold passwords or customer data).

Writing the audit row must not turn a refusal into a 500: a failure to write is logged and
the refusal is still returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import tables as t

__all__ = ["AuditEntry", "AuditLog"]

log = logging.getLogger("server.audit")

_LIMITS = {"user_id": 36, "device_id": 64, "action": 80, "resource": 120, "reason": 500, "ip": 64}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    reason: str
    user_id: str | None = None
    device_id: str | None = None
    resource: str | None = None
    ip: str | None = None

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, limit in _LIMITS.items():
            v = getattr(self, k)
            out[k] = v[:limit] if isinstance(v, str) else v
        return out


class AuditLog:
    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def record(self, entry: AuditEntry) -> None:
        try:
            async with self.db.begin() as conn:
                await conn.execute(t.audit_log.insert().values(**entry.row()))
        except Exception:
            log.exception("could not write audit entry %s", entry)

    async def recent(self, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first; ``before_id`` is the cursor of the next page."""
        q = select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(t.audit_log.c.id < before_id)
        async with self.db.connect() as conn:
            return [{str(k): v for k, v in r._mapping.items()} for r in (await conn.execute(q)).all()]
