"""What ``syncd status`` reports: devices, last seen, how far behind, projection lag."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import tables as t

__all__ = ["collect_status"]


async def collect_status(db: AsyncEngine) -> dict[str, Any]:
    async with db.connect() as conn:
        docs = (await conn.execute(select(func.count()).select_from(t.doc_heads))).scalar_one()
        entries = (await conn.execute(select(func.count()).select_from(t.oplog))).scalar_one()
        lag = (await conn.execute(select(func.coalesce(func.sum(t.doc_heads.c.last_seq - t.doc_heads.c.projected_seq), 0))
                                  )).scalar_one()
        snaps = (await conn.execute(select(func.count()).select_from(t.doc_snapshots))).scalar_one()
        devs = (await conn.execute(
            select(t.devices.c.id, t.users.c.email, t.devices.c.last_seen_at)
            .join(t.users, t.users.c.id == t.devices.c.user_id).order_by(t.devices.c.last_seen_at.desc()))).all()
        out_devs = []
        for dev_id, email, seen in devs:
            acks = (await conn.execute(select(t.device_doc_acks.c.doc_id, t.device_doc_acks.c.acked_seq).where(
                t.device_doc_acks.c.device_id == dev_id))).all()
            behind = 0
            for doc_id, acked in acks:
                behind += (await conn.execute(select(func.count()).select_from(t.oplog).where(
                    t.oplog.c.doc_id == doc_id, t.oplog.c.seq > acked, t.oplog.c.device_id != dev_id))).scalar_one()
            out_devs.append({"device_id": dev_id, "user": email, "last_seen_at": seen, "docs": len(acks),
                             "behind": behind})
    return {"documents": docs, "log_entries": entries, "projection_lag": int(lag), "snapshots": snaps,
            "devices": out_devs}
