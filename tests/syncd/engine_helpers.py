"""Helpers for engine tests: users in the database and bare pycrdt devices that build real updates."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from pycrdt import Doc

from conflict_rules.hlc import HLC
from schema import tables as t
from schema import documents as D
from syncd.protocol import Principal


async def add_user(db, role: str, email: str | None = None) -> str:
    uid = str(uuid.uuid4())
    async with db.begin() as conn:
        await conn.execute(t.users.insert().values(
            id=uid, email=email or f"{uid[:8]}@example.test", name=f"{role} {uid[:4]}", role=role,
            password_hash=None, active=True, created_at=datetime.now(timezone.utc)))
    return uid


class BareDevice:
    """A device reduced to a pycrdt doc per document id and a clock: builds real updates."""

    def __init__(self, user_id: str, role: str, device_id: str | None = None, client_id: int | None = None) -> None:
        self.principal = Principal(user_id, role, device_id or f"dev-{uuid.uuid4().hex[:10]}")
        self.client_id = client_id or (uuid.uuid4().int % (2**52)) + 1
        self.docs: dict[str, Doc] = {}
        self.hlc = HLC()

    def doc(self, doc_id: str) -> Doc:
        if doc_id not in self.docs:
            self.docs[doc_id] = Doc(client_id=self.client_id)
        return self.docs[doc_id]

    def edit(self, doc_id: str, fn) -> bytes:
        """Run ``fn(doc, stamp)`` in one transaction and return the update it produced."""
        d = self.doc(doc_id)
        before = d.get_state()
        stamp = dict(ts=self.hlc.now(), device=self.principal.device_id, author=self.principal.user_id,
                     role=self.principal.role)
        with d.transaction(origin="local"):
            fn(d, stamp)
        return d.get_update(before)

    def set_fields(self, doc_id: str, **values) -> bytes:
        return self.edit(doc_id, lambda d, s: D.write_fields(d, values, **s))

    def apply(self, doc_id: str, update: bytes) -> None:
        self.doc(doc_id).apply_update(update)



def job_doc() -> str:
    return D.doc_id_for("job", str(uuid.uuid4()))


def customer_doc() -> str:
    return D.doc_id_for("customer", str(uuid.uuid4()))
