"""How CRM records live inside CRDT documents.

One document per job (the job's fields, its materials and its notes) and one per customer.
Users, roles and passwords are server-authoritative accounts, not CRDT state: nobody edits
them offline. Crew assignment is a job field, so partial replication can be decided from a
job's own projection.

Every root is a Y.Map of *writes*. A write is keyed by what it writes plus its timestamp
and device, and its value is ``{"v": value, "a": author_id, "r": author_role}``::

    job doc     fields     "{field}/{ts}/{device}"
                materials  "{material_id}/{field}/{ts}/{device}"
                notes      "{note_id}/{ts}/{device}"          (append-only, never deleted)
    customer    fields     "{field}/{ts}/{device}"

Writing a field deletes every write of that field the writer can see and inserts its own.
After a merge the live writes of a field are therefore exactly the writes that did not see
each other (the concurrent candidates); ``conflict_rules`` picks the winner among them. A
write that saw another one always supersedes it, whatever the rule.

Removing a material inserts a ``_removed`` write whose value lists the keys of the item's
writes the remover saw; the item is gone only if some removal saw every live write of the
item, so an edit concurrent with a removal keeps the item (union semantics).
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any, Iterable

from pycrdt import Doc, Map

from conflict_rules.candidates import Candidate
from conflict_rules.hlc import is_valid_ts

__all__ = [
    "KIND_JOB",
    "KIND_CUSTOMER",
    "ROOTS",
    "REMOVED",
    "WriteKey",
    "RawRecord",
    "RawJobDoc",
    "RawCustomerDoc",
    "doc_id_for",
    "parse_doc_id",
    "parse_key",
    "make_key",
    "entry_value",
    "parse_entry",
    "read_raw",
    "write_field",
    "write_fields",
    "write_material_field",
    "remove_material",
    "add_note",
    "new_id",
    "is_valid_device_id",
]

KIND_JOB = "job"
KIND_CUSTOMER = "customer"
ROOTS: dict[str, tuple[str, ...]] = {
    KIND_JOB: ("fields", "materials", "notes"),
    KIND_CUSTOMER: ("fields",),
}
REMOVED = "_removed"

_DEVICE_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
_FIELD_RE = re.compile(r"\A_?[a-z][a-z0-9_]{0,39}\Z")
_UUID_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def new_id() -> str:
    """A fresh record id (UUID4, lowercase canonical form)."""
    return str(uuid.uuid4())


def is_valid_device_id(device: object) -> bool:
    return isinstance(device, str) and _DEVICE_RE.match(device) is not None


def is_valid_record_id(rid: object) -> bool:
    return isinstance(rid, str) and _UUID_RE.match(rid) is not None


def doc_id_for(kind: str, record_id: str) -> str:
    """The document id holding a job or a customer."""
    if kind not in ROOTS or not is_valid_record_id(record_id):
        raise ValueError(f"invalid document reference {kind}:{record_id}")
    return f"{kind}:{record_id}"


def parse_doc_id(doc_id: str) -> tuple[str, str]:
    """Split ``"job:<uuid>"`` into ``("job", "<uuid>")``; ValueError if malformed."""
    kind, sep, rid = doc_id.partition(":") if isinstance(doc_id, str) else ("", "", "")
    if not sep or kind not in ROOTS or not is_valid_record_id(rid):
        raise ValueError(f"invalid document id: {doc_id!r}")
    return kind, rid


@dataclass(frozen=True, slots=True)
class WriteKey:
    root: str
    item: str | None  # material id or note id; None for record fields
    field: str | None  # None for notes
    ts: str
    device: str


def make_key(root: str, *, ts: str, device: str, field: str | None = None, item: str | None = None) -> str:
    if root == "fields":
        return f"{field}/{ts}/{device}"
    if root == "materials":
        return f"{item}/{field}/{ts}/{device}"
    if root == "notes":
        return f"{item}/{ts}/{device}"
    raise ValueError(f"unknown root {root!r}")


@lru_cache(maxsize=65536)
def parse_key(root: str, key: str) -> WriteKey:
    """Parse and validate a write key of the given root; ValueError if malformed.

    Cached: the server parses each new key when it indexes and again when it validates."""
    parts = key.split("/") if isinstance(key, str) else []
    if root == "fields" and len(parts) == 3:
        f, ts, dev = parts
        item = None
    elif root == "materials" and len(parts) == 4:
        item, f, ts, dev = parts
        if not is_valid_record_id(item):
            raise ValueError(f"invalid material id in key {key!r}")
    elif root == "notes" and len(parts) == 3:
        item, ts, dev = parts
        f = None
        if not is_valid_record_id(item):
            raise ValueError(f"invalid note id in key {key!r}")
    else:
        raise ValueError(f"malformed key {key!r} in root {root!r}")
    if f is not None and not _FIELD_RE.match(f):
        raise ValueError(f"invalid field name in key {key!r}")
    if not is_valid_ts(ts):
        raise ValueError(f"invalid timestamp in key {key!r}")
    if not is_valid_device_id(dev):
        raise ValueError(f"invalid device id in key {key!r}")
    return WriteKey(root, item, f, ts, dev)


def entry_value(value: Any, *, author: str, role: str) -> dict[str, Any]:
    return {"v": value, "a": author, "r": role}


def parse_entry(value: Any) -> tuple[Any, str, str]:
    """Return (value, author, role) of a write's stored value; ValueError if malformed."""
    if not isinstance(value, dict) or set(value) != {"v", "a", "r"}:
        raise ValueError("a write must be an object with exactly the keys v, a, r")
    a, r = value["a"], value["r"]
    if not isinstance(a, str) or not isinstance(r, str):
        raise ValueError("a write's author and role must be strings")
    return value["v"], a, r


def _candidate(root: str, key: str, raw: Any) -> tuple[WriteKey, Candidate]:
    wk = parse_key(root, key)
    v, a, r = parse_entry(raw)
    return wk, Candidate(key=key, value=v, author=a, role=r, device=wk.device, time=wk.ts)


@dataclass
class RawRecord:
    """A record's live writes, grouped by field."""

    fields: dict[str, list[Candidate]] = field(default_factory=dict)

    def add(self, f: str, c: Candidate) -> None:
        self.fields.setdefault(f, []).append(c)

    def keys(self) -> set[str]:
        return {c.key for cs in self.fields.values() for c in cs}


@dataclass
class RawJobDoc:
    record: RawRecord = field(default_factory=RawRecord)
    materials: dict[str, RawRecord] = field(default_factory=dict)
    notes: dict[str, Candidate] = field(default_factory=dict)


@dataclass
class RawCustomerDoc:
    record: RawRecord = field(default_factory=RawRecord)


def _items(m: Map) -> Iterable[tuple[str, Any]]:
    return m.items()


def read_raw(doc: Doc, kind: str) -> RawJobDoc | RawCustomerDoc:
    """Group a document's live writes by record and field (no rule applied yet).

    Malformed keys or values are skipped here: the server refuses them at acceptance, so
    they can only come from a local bug, and a reader must not crash on them.
    """
    if kind == KIND_CUSTOMER:
        out_c = RawCustomerDoc()
        for key, raw in _items(doc.get("fields", type=Map)):
            try:
                wk, c = _candidate("fields", key, raw)
            except ValueError:
                continue
            out_c.record.add(wk.field, c)  # type: ignore[arg-type]
        return out_c
    out = RawJobDoc()
    for key, raw in _items(doc.get("fields", type=Map)):
        try:
            wk, c = _candidate("fields", key, raw)
        except ValueError:
            continue
        out.record.add(wk.field, c)  # type: ignore[arg-type]
    for key, raw in _items(doc.get("materials", type=Map)):
        try:
            wk, c = _candidate("materials", key, raw)
        except ValueError:
            continue
        out.materials.setdefault(wk.item, RawRecord()).add(wk.field, c)  # type: ignore[arg-type]
    for key, raw in _items(doc.get("notes", type=Map)):
        try:
            wk, c = _candidate("notes", key, raw)
        except ValueError:
            continue
        out.notes[wk.item] = c  # type: ignore[index]
    return out


# --- writers: call inside ``with doc.transaction(origin=...)`` -------------------------


def _supersede(m: Map, prefix: str) -> list[str]:
    seen = [k for k in m.keys() if k.startswith(prefix)]
    for k in seen:
        del m[k]
    return seen


def write_field(doc: Doc, field_name: str, value: Any, *, ts: str, device: str, author: str, role: str,
                root: str = "fields") -> str:
    """Write one record field: supersede every visible write of it, insert ours."""
    m = doc.get(root, type=Map)
    _supersede(m, f"{field_name}/")
    key = make_key("fields", field=field_name, ts=ts, device=device)
    m[key] = entry_value(value, author=author, role=role)
    return key


def write_fields(doc: Doc, values: dict[str, Any], *, ts: str, device: str, author: str, role: str) -> None:
    for f, v in values.items():
        write_field(doc, f, v, ts=ts, device=device, author=author, role=role)


def write_material_field(doc: Doc, material_id: str, field_name: str, value: Any, *, ts: str, device: str,
                         author: str, role: str) -> str:
    m = doc.get("materials", type=Map)
    _supersede(m, f"{material_id}/{field_name}/")
    key = make_key("materials", item=material_id, field=field_name, ts=ts, device=device)
    m[key] = entry_value(value, author=author, role=role)
    return key


def remove_material(doc: Doc, material_id: str, *, ts: str, device: str, author: str, role: str) -> str:
    """Mark an item removed, recording which of its writes the remover saw."""
    m = doc.get("materials", type=Map)
    prefix = f"{material_id}/"
    seen = sorted(k for k in m.keys() if k.startswith(prefix) and k.split("/")[1] != REMOVED)
    _supersede(m, f"{material_id}/{REMOVED}/")
    key = make_key("materials", item=material_id, field=REMOVED, ts=ts, device=device)
    m[key] = entry_value(seen, author=author, role=role)
    return key


def add_note(doc: Doc, note_id: str, body: str, *, ts: str, device: str, author: str, role: str) -> str:
    m = doc.get("notes", type=Map)
    key = make_key("notes", item=note_id, ts=ts, device=device)
    m[key] = entry_value(body, author=author, role=role)
    return key
