"""Checks an update's observed writes before it may be stored (pure).

The server decides who wrote what: every write an update adds must name the authenticated
user, role and device, carry a timestamp within the skew bound and a value the schema
accepts. A write may only delete writes of the same field it rewrites (a write supersedes
what it saw); notes are never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from conflict_rules.hlc import DEFAULT_MAX_SKEW_MS
from schema.documents import KIND_JOB, REMOVED, ROOTS, WriteKey, make_key, parse_entry, parse_key
from schema.models import FieldError, validate_field

from .errors import ClockSkew, Forbidden, SchemaViolation
from .protocol import Principal

__all__ = ["Change", "ValidatedWrite", "validate_changes"]


@dataclass(frozen=True, slots=True)
class Change:
    """One key changed by applying an update: ``action`` is add, update or delete."""

    root: str
    key: str
    action: str
    new_value: Any = None
    #: the key parsed (None: not parsed yet, or malformed; validation parses it again)
    wk: WriteKey | None = None


@dataclass(frozen=True, slots=True)
class ValidatedWrite:
    key: WriteKey
    value: Any
    #: keys of the same field's writes this write deleted: what its author saw
    supersedes: tuple[str, ...] = ()


def _field_kind(kind: str, root: str) -> str:
    if root == "materials":
        return "material"
    if root == "notes":
        return "note"
    return kind


def _group(wk: WriteKey) -> tuple[str, str | None, str | None]:
    return (wk.root, wk.item, wk.field)


def validate_changes(kind: str, changes: Iterable[Change], principal: Principal, now_ms: int,
                     max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> list[ValidatedWrite]:
    """Return the added writes if every change is allowed; raise a SyncError otherwise."""
    roots = ROOTS[kind]
    added: list[ValidatedWrite] = []
    deleted: list[WriteKey] = []
    errors: list[dict[str, str]] = []
    for ch in changes:
        if ch.root not in roots:
            raise SchemaViolation(f"a {kind} document has no root {ch.root!r}")
        wk = ch.wk
        if wk is None:
            try:
                wk = parse_key(ch.root, ch.key)
            except ValueError as e:
                raise SchemaViolation(str(e), [{"field": ch.key, "message": str(e)}]) from None
        if ch.action == "delete":
            deleted.append(wk)
            continue
        try:
            value, author, role = parse_entry(ch.new_value)
        except ValueError as e:
            raise SchemaViolation(f"write {ch.key!r}: {e}", [{"field": ch.key, "message": str(e)}]) from None
        if wk.device != principal.device_id:
            raise Forbidden(f"write {ch.key!r} names device {wk.device!r}, but the update comes from "
                            f"device {principal.device_id!r}")
        if author != principal.user_id or role != principal.role:
            raise Forbidden(f"write {ch.key!r} claims author {author!r} with role {role!r}; the "
                            f"authenticated user is {principal.user_id!r} ({principal.role})")
        wall = int(wk.ts[:13])  # parse_key checked the canonical form (13-digit wall time)
        if wall > now_ms + max_skew_ms:
            raise ClockSkew(f"write {ch.key!r} is stamped {wall - now_ms} ms ahead of the server clock "
                            f"(at most {max_skew_ms} ms allowed)", {"server_time_ms": now_ms, "key": ch.key})
        fkind = _field_kind(kind, ch.root)
        fname = wk.field if wk.field is not None else "body"
        if fkind == "material" and fname == REMOVED:
            fname = "_removed"
        try:
            norm = validate_field(fkind, fname, value)
        except FieldError as e:
            errors.append({"field": f"{fkind}.{fname}", "message": getattr(e, "message", str(e))})
            continue
        added.append(ValidatedWrite(wk, norm))
    if errors:
        raise SchemaViolation("the update contains values the schema refuses", errors)
    rewritten = {_group(w.key) for w in added}
    seen: dict[tuple[str, str | None, str | None], list[str]] = {}
    for wk in deleted:
        seen.setdefault(_group(wk), []).append(make_key(wk.root, ts=wk.ts, device=wk.device, field=wk.field,
                                                         item=wk.item))
    added = [ValidatedWrite(w.key, w.value, tuple(sorted(seen.get(_group(w.key), ())))) for w in added]
    for wk in deleted:
        if wk.root == "notes":
            raise Forbidden("notes are append-only: an update may not delete a note")
        if _group(wk) not in rewritten:
            raise Forbidden(f"the update deletes {wk.root}/{wk.item or ''}/{wk.field} without writing it: "
                            "a write may only supersede writes of the field it writes")
    if kind == KIND_JOB:
        _check_job_invariants(added)
    return added


def _check_job_invariants(added: list[ValidatedWrite]) -> None:
    # a material removal lists the keys it saw; they must be keys of that same item
    for w in added:
        if w.key.root == "materials" and w.key.field == REMOVED:
            prefix = f"{w.key.item}/"
            bad = [k for k in w.value if not isinstance(k, str) or not k.startswith(prefix)]
            if bad:
                raise SchemaViolation("a material removal may only list writes of that material",
                                      [{"field": "materials._removed", "message": f"foreign keys: {bad[:3]}"}])
