"""``Replica``: the CRM as one device sees it, offline first.

Every write is validated (``schema.models.validate_field``), applied to the local document
in one transaction stamped with one HLC timestamp, and durably queued in the outbox before
the call returns. Reads resolve the local documents with the same rules the server uses.
"""

from __future__ import annotations

from typing import Any, Callable

from pycrdt import Doc

from schema.documents import (KIND_CUSTOMER, KIND_JOB, add_note, doc_id_for, new_id, parse_doc_id,
                              remove_material, write_field, write_material_field)
from schema.models import crew_may_move, validate_field
from schema.view import explain_path, resolve_doc

from .core import ReplicaCore, Stamp
from .errors import NotAllowed, UnknownRecord
from .sync import PullReport, PushReport, SyncReport, pull, push, sync
from .views import customer_record, job_record, live_material_ids

__all__ = ["Replica"]

MATERIAL = "material"
#: Roles whose new jobs they own by default.
OWNING_ROLES = ("owner", "office")


def _validated(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Every value checked (FieldError on the first bad one) before anything is written."""
    return {f: validate_field(kind, f, v) for f, v in fields.items()}


def _write_record(values: dict[str, Any]) -> Callable[[Doc, Stamp], None]:
    def write(doc: Doc, stamp: Stamp) -> None:
        for f, v in values.items():
            write_field(doc, f, v, **stamp)
    return write


class Replica(ReplicaCore):
    """One device's replica. ``await Replica.open(path, user_id=..., role=...)``.

    Writes are ``async`` (they commit to SQLite); reads are synchronous (memory only).
    """

    # --- customers ------------------------------------------------------------------------

    async def create_customer(self, **fields: Any) -> str:
        """Create a customer (``name`` required by the schema); returns its id."""
        values = _validated(KIND_CUSTOMER, fields)
        cid = new_id()
        await self._edit(doc_id_for(KIND_CUSTOMER, cid), _write_record(values), create=True)
        return cid

    async def update_customer(self, customer_id: str, **fields: Any) -> None:
        """Change some fields of a customer."""
        values = _validated(KIND_CUSTOMER, fields)
        if values:
            await self._edit(doc_id_for(KIND_CUSTOMER, customer_id), _write_record(values))

    async def delete_customer(self, customer_id: str) -> None:
        """Soft-delete a customer (``deleted=True``)."""
        await self.update_customer(customer_id, deleted=True)

    # --- jobs -----------------------------------------------------------------------------

    async def create_job(self, customer_id: str, title: str, **fields: Any) -> str:
        """Create a job; returns its id.

        ``status`` defaults to ``"lead"``; ``owner_id`` to the current user when the role is
        office or owner.
        """
        fields = {"customer_id": customer_id, "title": title, **fields}
        fields.setdefault("status", "lead")
        if self.role in OWNING_ROLES:
            fields.setdefault("owner_id", self.user_id)
        values = _validated(KIND_JOB, fields)
        jid = new_id()
        await self._edit(doc_id_for(KIND_JOB, jid), _write_record(values), create=True)
        return jid

    async def update_job(self, job_id: str, **fields: Any) -> None:
        """Change some fields of a job (status included, see ``set_status``)."""
        values = _validated(KIND_JOB, fields)
        if not values:
            return
        doc_id = doc_id_for(KIND_JOB, job_id)
        if "status" in values:
            self._check_status_move(doc_id, values["status"])
        await self._edit(doc_id, _write_record(values))

    async def set_status(self, job_id: str, status: str) -> None:
        """Move a job to ``status`` (a crew may only make the moves of CREW_STATUS_MOVES)."""
        await self.update_job(job_id, status=status)

    async def assign(self, job_id: str, crew: list[str]) -> None:
        """Set the job's complete crew list (user ids; empty to unassign everyone)."""
        await self.update_job(job_id, crew=list(crew))

    def _check_status_move(self, doc_id: str, status: str) -> None:
        if self.role != "crew":
            return
        seen = resolve_doc(self.doc(doc_id), KIND_JOB).record.get("status")
        if not crew_may_move(seen, status):
            raise NotAllowed(f"a crew member may not move a job from {seen!r} to {status!r}")

    # --- materials and notes ----------------------------------------------------------------

    async def add_material(self, job_id: str, name: str, quantity: float = 1, unit: str | None = None,
                           cost: float | None = None) -> str:
        """Add a material item to a job (not purchased); returns the material id."""
        fields: dict[str, Any] = {"name": name, "quantity": quantity, "purchased": False}
        if unit is not None:
            fields["unit"] = unit
        if cost is not None:
            fields["cost"] = cost
        values = _validated(MATERIAL, fields)
        mid = new_id()
        await self._edit(doc_id_for(KIND_JOB, job_id), self._write_material(mid, values))
        return mid

    async def update_material(self, job_id: str, material_id: str, **fields: Any) -> None:
        """Change fields of a live material item (e.g. ``purchased=True, quantity=3``)."""
        values = _validated(MATERIAL, fields)
        doc_id = doc_id_for(KIND_JOB, job_id)
        self._require_material(doc_id, material_id)
        if values:
            await self._edit(doc_id, self._write_material(material_id, values))

    async def remove_material(self, job_id: str, material_id: str) -> None:
        """Remove a material item (an edit made concurrently elsewhere keeps it)."""
        doc_id = doc_id_for(KIND_JOB, job_id)
        self._require_material(doc_id, material_id)
        await self._edit(doc_id, lambda doc, stamp: remove_material(doc, material_id, **stamp))

    async def add_note(self, job_id: str, body: str) -> str:
        """Append a note to a job; returns the note id."""
        text = validate_field("note", "body", body)
        nid = new_id()
        await self._edit(doc_id_for(KIND_JOB, job_id), lambda doc, stamp: add_note(doc, nid, text, **stamp))
        return nid

    @staticmethod
    def _write_material(material_id: str, values: dict[str, Any]) -> Callable[[Doc, Stamp], None]:
        def write(doc: Doc, stamp: Stamp) -> None:
            for f, v in values.items():
                write_material_field(doc, material_id, f, v, **stamp)
        return write

    def _require_material(self, doc_id: str, material_id: str) -> None:
        # Editing a removed item would resurrect it (the removal did not see the new write).
        if material_id not in live_material_ids(self.doc(doc_id)):
            raise UnknownRecord(f"no material {material_id} in {doc_id}")

    # --- reads ------------------------------------------------------------------------------

    def customer(self, customer_id: str) -> dict[str, Any]:
        """A customer's resolved fields, with ``id``."""
        return customer_record(self.doc(doc_id_for(KIND_CUSTOMER, customer_id)), customer_id)

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's resolved fields with ``id``, ``materials`` (live items) and ``notes``."""
        return job_record(self.doc(doc_id_for(KIND_JOB, job_id)), job_id)

    def customers(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every customer on this device, by name (soft-deleted ones only if asked)."""
        out = [self.customer(rid) for rid in self._record_ids(KIND_CUSTOMER)]
        out = [c for c in out if include_deleted or not c.get("deleted")]
        return sorted(out, key=lambda c: (str(c.get("name") or ""), c["id"]))

    def jobs(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every job on this device, by title (soft-deleted ones only if asked)."""
        out = [self.job(rid) for rid in self._record_ids(KIND_JOB)]
        out = [j for j in out if include_deleted or not j.get("deleted")]
        return sorted(out, key=lambda j: (str(j.get("title") or ""), j["id"]))

    def explain(self, doc_id: str, path: str) -> dict[str, Any]:
        """Why ``path`` of a document has its value: candidates, rule, winner, reason."""
        kind, _ = parse_doc_id(doc_id)
        return explain_path(self.doc(doc_id), kind, path, record=doc_id)

    def _record_ids(self, kind: str) -> list[str]:
        return [rid for k, rid in (parse_doc_id(d) for d in self.doc_ids()) if k == kind]

    # --- sync -------------------------------------------------------------------------------

    async def push(self, transport) -> PushReport:
        """Send the outbox; see ``replica.sync.push``."""
        return await push(self, transport)

    async def pull(self, transport, doc_ids: list[str] | None = None) -> PullReport:
        """Fetch what this device lacks; see ``replica.sync.pull``."""
        return await pull(self, transport, doc_ids)

    async def sync(self, transport) -> SyncReport:
        """Push, then pull."""
        return await sync(self, transport)
