"""A small demo company, written through the same path as every other edit.

Users are created as accounts; customers, jobs, materials and notes are made on an office
replica and pushed through the engine, so the demo data has an op log, a projection and
events like real data. Idempotent: does nothing if the demo owner exists.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import tables as t

__all__ = ["DEMO_PASSWORD", "DEMO_USERS", "seed_demo"]

DEMO_PASSWORD = "demo-password"
DEMO_USERS = [
    ("owner@demo.test", "Olivia Owner", "owner"),
    ("office@demo.test", "Oscar Office", "office"),
    ("crew1@demo.test", "Cory Crew", "crew"),
    ("crew2@demo.test", "Casey Crew", "crew"),
]


async def _users(db: AsyncEngine) -> dict[str, str]:
    from server.auth.passwords import hash_password
    async with db.begin() as conn:
        existing = (await conn.execute(select(t.users.c.email, t.users.c.id))).all()
        ids = {e: i for e, i in existing}
        if DEMO_USERS[0][0] in ids:
            return {}
        pw = hash_password(DEMO_PASSWORD)
        for email, name, role in DEMO_USERS:
            uid = str(uuid.uuid4())
            await conn.execute(t.users.insert().values(id=uid, email=email, name=name, role=role, password_hash=pw,
                                                       active=True, created_at=datetime.now(timezone.utc)))
            ids[email] = uid
    return ids


async def seed_demo(db: AsyncEngine) -> dict[str, Any]:
    """Create the demo company unless it exists; return what was created."""
    from replica import Replica

    from .engine import SyncEngine
    from .local_transport import LocalTransport
    from .protocol import Principal

    ids = await _users(db)
    if not ids:
        return {"created": False}
    office = ids["office@demo.test"]
    crew1, crew2 = ids["crew1@demo.test"], ids["crew2@demo.test"]
    today = date.today()
    with tempfile.TemporaryDirectory() as tmp:
        rep = await Replica.open(str(Path(tmp) / "seed.sqlite3"), user_id=office, role="office")
        try:
            c1 = await rep.create_customer(name="Dana Whitfield", phone="+1 555 0100", email="dana@example.com",
                                           address="12 Birch Lane, Springfield")
            c2 = await rep.create_customer(name="Miguel Ortega", phone="+1 555 0142", address="88 Harbor Rd, Springfield")
            c3 = await rep.create_customer(name="Priya Natarajan", phone="+1 555 0199", email="priya@example.com",
                                           address="3 Orchard Ct, Shelbyville")
            j1 = await rep.create_job(c1, "Kitchen remodel", address="12 Birch Lane, Springfield", status="scheduled",
                                      scheduled_start=today.isoformat(), estimate=18500.0,
                                      description="Replace cabinets, counters and backsplash")
            await rep.assign(j1, [crew1])
            for name, qty, unit in [("2x4 studs", 24, "pcs"), ("drywall screws", 2, "box"), ("tile adhesive", 3, "bag")]:
                await rep.add_material(j1, name, quantity=qty, unit=unit)
            await rep.add_note(j1, "Customer asks to keep the old sink for the garage.")
            j2 = await rep.create_job(c2, "Deck repair", address="88 Harbor Rd, Springfield", status="scheduled",
                                      scheduled_start=(today + timedelta(days=1)).isoformat(), estimate=4200.0)
            await rep.assign(j2, [crew1, crew2])
            await rep.add_material(j2, "pressure-treated boards", quantity=14, unit="pcs")
            j3 = await rep.create_job(c3, "Bathroom tiling", address="3 Orchard Ct, Shelbyville", status="estimate",
                                      estimate=7600.0)
            await rep.assign(j3, [crew2])
            await rep.create_job(c1, "Gutter replacement", status="lead")
            async with SyncEngine(db) as engine:
                report = await rep.push(LocalTransport(engine, Principal(office, "office", rep.device_id)))
                report.raise_for_errors()
        finally:
            await rep.close()
    return {"created": True, "users": [u[0] for u in DEMO_USERS], "password": DEMO_PASSWORD,
            "customers": 3, "jobs": 4}
