"""From a resolved document view to SQL rows and domain events (pure).

``rows_for_view`` says what the tables must hold for one document; ``diff_views`` says which
rows changed and which domain events that change represents. The commit path writes the
diff; ``syncd verify`` compares ``rows_for_view`` of the replayed log with the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schema.documents import KIND_CUSTOMER, KIND_JOB
from schema.view import DocView

__all__ = ["Rows", "Event", "Delta", "rows_for_view", "diff_views", "JOB_COLUMNS", "CUSTOMER_COLUMNS",
           "MATERIAL_COLUMNS"]

JOB_COLUMNS = ("customer_id", "title", "description", "address", "status", "scheduled_start",
               "scheduled_end", "owner_id", "estimate", "deleted")
CUSTOMER_COLUMNS = ("name", "phone", "email", "address", "notes", "deleted")
MATERIAL_COLUMNS = ("name", "quantity", "unit", "purchased", "cost")
_BOOL_DEFAULTS = {"deleted": False, "purchased": False}


@dataclass
class Rows:
    """Every row a document projects to, keyed by primary key, per table."""

    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_assignments: set[tuple[str, str]] = field(default_factory=set)
    materials: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    record_type: str
    record_id: str
    type: str
    payload: dict[str, Any]
    actor: str | None
    ts: str | None


@dataclass
class Delta:
    """Rows to upsert/delete and events to append for one document."""

    upserts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    assignment_inserts: list[tuple[str, str]] = field(default_factory=list)
    assignment_deletes: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def row_count(self) -> int:
        return (sum(len(v) for v in self.upserts.values()) + len(self.assignment_inserts)
                + len(self.assignment_deletes) + len(self.events))


def _num(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _cols(record: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for c in columns:
        v = record.get(c, _BOOL_DEFAULTS.get(c))
        out[c] = _BOOL_DEFAULTS.get(c) if v is None and c in _BOOL_DEFAULTS else _num(v)
    return out


def rows_for_view(kind: str, record_id: str, view: DocView | None, *, items: set[str] | None = None,
                  notes: bool = True) -> Rows:
    """The rows one document projects to (empty when the document has no content).

    ``items`` limits materials to those ids and ``notes=False`` skips notes: the commit path
    only builds the rows an update can have changed.
    """
    rows = Rows()
    if view is None:
        return rows
    if kind == KIND_CUSTOMER:
        if view.record:
            rows.customers[record_id] = {"id": record_id, **_cols(view.record, CUSTOMER_COLUMNS)}
        return rows
    if kind != KIND_JOB:
        raise ValueError(f"unknown document kind {kind!r}")
    if view.record:
        rows.jobs[record_id] = {"id": record_id, **_cols(view.record, JOB_COLUMNS)}
        for user_id in view.record.get("crew") or ():
            rows.job_assignments.add((record_id, user_id))
    mats = view.materials.items() if items is None else ((i, view.materials[i]) for i in sorted(items) if i in view.materials)
    for mid, m in mats:
        if not m.fields and not m.removed:
            continue
        rows.materials[mid] = {"id": mid, "job_id": record_id, **_cols(m.fields, MATERIAL_COLUMNS),
                               "removed": bool(m.removed)}
    for n in view.notes if notes else ():
        rows.notes[n["id"]] = {"id": n["id"], "job_id": record_id, "author_id": n["author"],
                               "device_id": n["device"], "body": n["body"], "ts": n["time"]}
    return rows


def _winner(view: DocView, f: str) -> tuple[str | None, str | None]:
    res = view.record_resolutions.get(f)
    if res is None or res.winner is None:
        return None, None
    return res.winner.author, res.winner.time


def _latest(view: DocView, fields: list[str]) -> tuple[str | None, str | None]:
    best: tuple[str | None, str | None] = (None, None)
    for f in fields:
        a, t = _winner(view, f)
        if t is not None and (best[1] is None or t > best[1]):
            best = (a, t)
    return best


def _material_actor(m: Any, fields: list[str]) -> tuple[str | None, str | None]:
    best: tuple[str | None, str | None] = (None, None)
    res_map = getattr(m.resolution, "fields", {}) or {}
    cands = [res_map[f].winner for f in fields if f in res_map and res_map[f].winner is not None]
    if m.removed and m.resolution.removal is not None and m.resolution.removal.winner is not None:
        cands.append(m.resolution.removal.winner)
    for w in cands:
        if best[1] is None or w.time > best[1]:
            best = (w.author, w.time)
    return best


def diff_views(kind: str, record_id: str, old: DocView | None, new: DocView, *, items: set[str] | None = None,
               notes: bool = True) -> Delta:
    """Rows that changed between two views of one document, and the domain events.

    ``items``/``notes`` name what may have changed (None/True: everything).
    """
    before = rows_for_view(kind, record_id, old, items=items, notes=notes)
    after = rows_for_view(kind, record_id, new, items=items, notes=notes)
    d = Delta()
    if kind == KIND_CUSTOMER:
        _diff_record(d, "customer", "customers", record_id, before.customers, after.customers, new,
                     CUSTOMER_COLUMNS)
        return d
    _diff_record(d, "job", "jobs", record_id, before.jobs, after.jobs, new, JOB_COLUMNS)
    d.assignment_inserts = sorted(after.job_assignments - before.job_assignments)
    d.assignment_deletes = sorted(before.job_assignments - after.job_assignments)
    if d.assignment_inserts or d.assignment_deletes:
        actor, ts = _winner(new, "crew")
        d.events.append(Event("job", record_id, "job.assigned",
                              {"crew": sorted(u for _, u in after.job_assignments),
                               "added": [u for _, u in d.assignment_inserts],
                               "removed": [u for _, u in d.assignment_deletes]}, actor, ts))
    for mid, row in after.materials.items():
        prev = before.materials.get(mid)
        if prev == row:
            continue
        d.upserts.setdefault("materials", []).append(row)
        m = new.materials[mid]
        changed = [c for c in MATERIAL_COLUMNS if prev is None or prev.get(c) != row.get(c)]
        actor, ts = _material_actor(m, changed)
        if prev is None:
            d.events.append(Event("material", mid, "material.added",
                                  {"job_id": record_id, **{c: row[c] for c in MATERIAL_COLUMNS}}, actor, ts))
            if row["removed"]:
                d.events.append(Event("material", mid, "material.removed", {"job_id": record_id}, actor, ts))
            continue
        if row["removed"] != prev["removed"]:
            d.events.append(Event("material", mid, "material.removed" if row["removed"] else "material.restored",
                                  {"job_id": record_id, "name": row["name"]}, actor, ts))
        if row["purchased"] and not prev["purchased"]:
            d.events.append(Event("material", mid, "material.purchased",
                                  {"job_id": record_id, "name": row["name"]}, actor, ts))
        # purchased false -> true has its own event; every other change is an update
        other = [c for c in changed if c != "purchased" or not row["purchased"]]
        if other:
            d.events.append(Event("material", mid, "material.updated",
                                  {"job_id": record_id, "changes": {c: [prev.get(c), row.get(c)] for c in other}},
                                  actor, ts))
    for nid, row in after.notes.items():
        if nid not in before.notes:
            d.upserts.setdefault("notes", []).append(row)
            d.events.append(Event("note", nid, "note.added", {"job_id": record_id, "body": row["body"][:200]},
                                  row["author_id"], row["ts"]))
    return d


def _diff_record(d: Delta, rtype: str, table: str, rid: str, before: dict, after: dict, view: DocView,
                 columns: tuple[str, ...]) -> None:
    row, prev = after.get(rid), before.get(rid)
    if row is None or row == prev:
        return
    d.upserts.setdefault(table, []).append(row)
    changed = [c for c in columns if prev is None or prev.get(c) != row.get(c)]
    if prev is None:
        actor, ts = _latest(view, changed)
        d.events.append(Event(rtype, rid, f"{rtype}.created", {c: row[c] for c in columns}, actor, ts))
        return
    if "status" in changed:
        actor, ts = _winner(view, "status")
        d.events.append(Event(rtype, rid, f"{rtype}.status_changed",
                              {"from": prev.get("status"), "to": row.get("status")}, actor, ts))
    if "deleted" in changed:
        actor, ts = _winner(view, "deleted")
        d.events.append(Event(rtype, rid, f"{rtype}.deleted" if row["deleted"] else f"{rtype}.restored", {},
                              actor, ts))
    rest = [c for c in changed if c not in ("status", "deleted")]
    if rest:
        actor, ts = _latest(view, rest)
        d.events.append(Event(rtype, rid, f"{rtype}.updated", {"changes": {c: [prev.get(c), row.get(c)] for c in rest}},
                              actor, ts))
