"""The resolved view of a record document: what users see and the server projects.

``read_raw`` groups a document's live writes by field; this module applies the rules the
registry declares for each field and keeps the resolutions, so the server projection, the
Python replica and ``syncd explain`` all answer from the same pure computation. Values are
passed through untouched (pycrdt returns numbers as floats): coercion belongs to the models.

Fields the registry does not declare are ignored: the server refuses them at acceptance, so
they can only come from a local bug, and a reader must not crash on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pycrdt import Doc

from conflict_rules import registry
from conflict_rules.candidates import Candidate, Resolution, RuleContext
from conflict_rules.explain import explain_entries, explain_item, explain_resolution
from conflict_rules.union import REMOVED, ItemResolution
from schema.documents import KIND_CUSTOMER, KIND_JOB, RawCustomerDoc, RawJobDoc, RawRecord, read_raw

__all__ = [
    "MaterialView",
    "DocView",
    "resolve_raw",
    "resolve_doc",
    "explain_raw",
    "explain_path",
]

MATERIAL = "material"  # registry kind of a job's material items


@dataclass
class MaterialView:
    """One material item: winning field values, whether it is removed, and why."""

    fields: dict[str, Any]
    removed: bool
    resolution: ItemResolution


@dataclass
class DocView:
    """A resolved job or customer document.

    ``record`` holds only fields that have candidates; ``materials`` holds every item,
    removed ones included (``removed=True``); ``notes`` are in append order.
    """

    kind: str
    record: dict[str, Any] = field(default_factory=dict)
    record_resolutions: dict[str, Resolution] = field(default_factory=dict)
    materials: dict[str, MaterialView] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    context: RuleContext = RuleContext()  # what owner_wins saw (the resolved owner_id)

    def present_materials(self) -> dict[str, MaterialView]:
        """The items that are not removed."""
        return {k: m for k, m in self.materials.items() if not m.removed}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the view (no resolutions), stable across replicas."""
        return {
            "kind": self.kind,
            "record": dict(self.record),
            "materials": {
                k: {"fields": dict(m.fields), "removed": m.removed, "reason": m.resolution.reason}
                for k, m in self.materials.items()
            },
            "notes": [dict(n) for n in self.notes],
        }


def _declared(kind: str, f: str, shape: str) -> bool:
    name = registry.FIELD_RULES.get((kind, f))
    return name is not None and registry.get_rule(name).shape == shape


def _rule_of_shape(kind: str, f: str, shape: str) -> registry.RegisteredRule:
    rule = registry.get_rule(registry.rule_for(kind, f))
    if rule.shape != shape:
        raise TypeError(f"{kind}.{f} must use an {shape}-shaped rule, not {rule.name!r}")
    return rule


def _resolve_record(kind: str, rec: RawRecord) -> tuple[dict[str, Resolution], RuleContext]:
    known = {f: cs for f, cs in rec.fields.items() if _declared(kind, f, "field")}
    ctx = RuleContext()
    if kind == KIND_JOB and "owner_id" in known:
        # owner_wins needs the job's owner, so owner_id is resolved first, without context.
        owner = registry.resolve_field(kind, "owner_id", known["owner_id"], ctx).value
        ctx = RuleContext(record_owner=owner if isinstance(owner, str) else None)
    return {f: registry.resolve_field(kind, f, known[f], ctx) for f in sorted(known)}, ctx


def _material_field(f: str, cs: Sequence[Candidate], ctx: RuleContext) -> Resolution:
    return registry.resolve_field(MATERIAL, f, cs, ctx)


def _resolve_materials(items: Mapping[str, RawRecord], ctx: RuleContext) -> dict[str, MaterialView]:
    rule = _rule_of_shape(KIND_JOB, "materials", "items")
    known = {
        mid: {f: cs for f, cs in rec.fields.items() if f == REMOVED or _declared(MATERIAL, f, "field")}
        for mid, rec in items.items()
    }
    resolved: dict[str, ItemResolution] = rule(known, ctx, field_rule=_material_field)
    return {
        mid: MaterialView(fields=item.values, removed=item.removed, resolution=item)
        for mid, item in sorted(resolved.items())
    }


def _resolve_notes(notes: Mapping[str, Candidate]) -> list[dict[str, Any]]:
    rule = _rule_of_shape(KIND_JOB, "notes", "entries")
    ids = {c.key: nid for nid, c in notes.items()}
    return [
        {"id": ids[c.key], "body": c.value, "author": c.author, "role": c.role, "device": c.device,
         "time": c.time}
        for c in rule(notes.values())
    ]


def resolve_raw(raw: RawJobDoc | RawCustomerDoc, kind: str) -> DocView:
    """Resolve grouped live writes (``schema.documents.read_raw``) into a view."""
    if kind == KIND_JOB and not isinstance(raw, RawJobDoc):
        raise ValueError("a job view needs a RawJobDoc")
    if kind == KIND_CUSTOMER and not isinstance(raw, RawCustomerDoc):
        raise ValueError("a customer view needs a RawCustomerDoc")
    if kind not in (KIND_JOB, KIND_CUSTOMER):
        raise ValueError(f"unknown record kind {kind!r}")
    resolutions, ctx = _resolve_record(kind, raw.record)
    view = DocView(
        kind=kind,
        record={f: r.value for f, r in resolutions.items()},
        record_resolutions=resolutions,
        context=ctx,
    )
    if isinstance(raw, RawJobDoc):
        view.materials = _resolve_materials(raw.materials, ctx)
        view.notes = _resolve_notes(raw.notes)
    return view


def resolve_doc(doc: Doc, kind: str) -> DocView:
    """Resolve a job or customer document into the view every replica agrees on."""
    return resolve_raw(read_raw(doc, kind), kind)


def explain_raw(raw: RawJobDoc | RawCustomerDoc, kind: str, path: str, *, record: str | None = None) -> dict[str, Any]:
    """Explain one path of a record; see ``explain_path``."""
    view = resolve_raw(raw, kind)
    rec = record or kind
    parts = path.split("/")
    if kind == KIND_JOB and parts[0] == "notes" and len(parts) == 1:
        notes = raw.notes  # type: ignore[union-attr]  # resolve_raw checked the kind
        out = explain_entries(rec, "notes", list(notes.values()))
        ids = {c.key: nid for nid, c in notes.items()}
        for d in out["candidates"]:
            d["id"] = ids[d["key"]]
        return out
    if kind == KIND_JOB and parts[0] == "materials" and len(parts) in (2, 3):
        item = view.materials.get(parts[1])
        if item is None:
            raise KeyError(f"no material {parts[1]!r} in this job")
        if len(parts) == 2:
            return explain_item(rec, item.resolution)
        f = parts[2]
        if not _declared(MATERIAL, f, "field"):
            raise KeyError(f"unknown material field {f!r} (use materials/<id> for the item itself)")
        res = item.resolution.fields.get(f) or registry.resolve_field(MATERIAL, f, [], view.context)
        return explain_resolution(rec, path, res, ctx=view.context)
    if len(parts) == 1 and _declared(kind, path, "field"):
        res = view.record_resolutions.get(path) or registry.resolve_field(kind, path, [], view.context)
        return explain_resolution(rec, path, res, ctx=view.context)
    hint = "a field name, materials/<id>, materials/<id>/<field> or notes" if kind == KIND_JOB else "a field name"
    raise KeyError(f"unknown path {path!r} for a {kind}; expected {hint}")


def explain_path(doc: Doc, kind: str, path: str, *, record: str | None = None) -> dict[str, Any]:
    """Explain how one path of a document was resolved (JSON-ready).

    ``path`` is a record field (``"status"``), ``"materials/<id>"`` (item presence, with each
    removal's seen-set), ``"materials/<id>/<field>"`` or ``"notes"``. ``record`` labels the
    explanation (e.g. the document id); it defaults to ``kind``. KeyError for an unknown
    field, item or path.
    """
    return explain_raw(read_raw(doc, kind), kind, path, record=record)


def refresh_view(old: DocView, kind: str, record: RawRecord, touched_fields: set[str],
                 materials: Mapping[str, RawRecord], notes: Mapping[str, Candidate] | None) -> DocView:
    """``old`` with only what changed re-resolved: equal to a full ``resolve_raw``.

    ``record`` is the record's current live writes; ``touched_fields`` the record fields
    that changed; ``materials`` the current live writes of exactly the material items that
    changed (an empty RawRecord for an item with none left); ``notes`` every note if notes
    changed, else None. The engine uses this on every commit, so a write to one field costs
    one field's resolution, not the whole document's.
    """
    known = {f: cs for f, cs in record.fields.items() if cs and _declared(kind, f, "field")}
    ctx = old.context
    fields = {f for f in touched_fields if _declared(kind, f, "field")}
    if kind == KIND_JOB and "owner_id" in fields:
        owner = registry.resolve_field(kind, "owner_id", known["owner_id"], RuleContext()).value \
            if "owner_id" in known else None
        new_ctx = RuleContext(record_owner=owner if isinstance(owner, str) else None)
        if new_ctx != ctx:
            ctx = new_ctx
            fields |= {f for f in known if registry.rule_for(kind, f) == "owner_wins"}
    resolutions = dict(old.record_resolutions)
    for f in fields:
        if f in known:
            resolutions[f] = registry.resolve_field(kind, f, known[f], ctx)
        else:
            resolutions.pop(f, None)
    resolutions = {f: resolutions[f] for f in sorted(resolutions)}
    view = DocView(kind=kind, record={f: r.value for f, r in resolutions.items()},
                   record_resolutions=resolutions, context=ctx, materials=old.materials, notes=old.notes)
    if kind != KIND_JOB:
        return view
    if materials:
        fresh = _resolve_materials({mid: rec for mid, rec in materials.items() if rec.fields}, ctx)
        merged = {mid: m for mid, m in old.materials.items() if mid not in materials}
        merged.update(fresh)
        view.materials = {mid: merged[mid] for mid in sorted(merged)}
    if notes is not None:
        view.notes = _resolve_notes(notes)
    return view
