"""Resolved, plain-dict views of a replica's documents (``schema.view`` does the resolving)."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc

from schema.documents import KIND_CUSTOMER, KIND_JOB
from schema.view import resolve_doc

__all__ = ["customer_record", "job_record", "live_material_ids"]


def customer_record(doc: Doc, customer_id: str) -> dict[str, Any]:
    """``{"id", **resolved fields}`` of a customer document."""
    return {**resolve_doc(doc, KIND_CUSTOMER).record, "id": customer_id}


def job_record(doc: Doc, job_id: str) -> dict[str, Any]:
    """A job's resolved fields plus ``materials`` (live items) and ``notes`` (in order).

    Materials are listed by (name, id) so every replica with the same state shows the same
    list; each carries its ``id``.
    """
    view = resolve_doc(doc, KIND_JOB)
    materials = [{**m.fields, "id": mid} for mid, m in view.materials.items() if not m.removed]
    materials.sort(key=lambda m: (str(m.get("name") or ""), m["id"]))
    return {**view.record, "id": job_id, "materials": materials, "notes": [dict(n) for n in view.notes]}


def live_material_ids(doc: Doc) -> set[str]:
    """Ids of a job's materials that are not removed."""
    return {mid for mid, m in resolve_doc(doc, KIND_JOB).materials.items() if not m.removed}
