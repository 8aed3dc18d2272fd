"""Union: every item added on any replica is kept; an edit beats a concurrent removal.

An item (a job's material) is a set of field writes plus, when someone removed it, live
``_removed`` writes whose value lists the keys of the item's writes the remover saw. The item
is removed iff some live removal saw *every* live write of the item: a write the remover did
not see is concurrent with the removal (or newer), and keeps the item. Each item field is
resolved on its own (``lww`` unless the caller supplies the registry's rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from conflict_rules import lww
from conflict_rules.candidates import Candidate, Resolution, RuleContext

__all__ = [
    "NAME",
    "REMOVED",
    "PRESENT",
    "ITEM_REMOVED",
    "KEPT_CONCURRENT_EDIT",
    "REASONS",
    "FieldRule",
    "ItemResolution",
    "seen_keys",
    "resolve_item",
    "resolve_items",
]

NAME = "union"
#: The removal pseudo-field; mirrors ``schema.documents.REMOVED`` (not imported: schema
#: imports this package, and the rules must stay free of pycrdt).
REMOVED = "_removed"

PRESENT = "present"
ITEM_REMOVED = "removed"
KEPT_CONCURRENT_EDIT = "kept_concurrent_edit"

REASONS: dict[str, str] = {
    PRESENT: "Nobody removed this item.",
    ITEM_REMOVED: "A removal saw every live write of this item, so the item is removed.",
    KEPT_CONCURRENT_EDIT: "The item was removed, but no removal saw every live write of it: "
                          "an edit concurrent with the removal keeps the item.",
}

#: Resolves one item field: (field name, candidates, context) -> Resolution.
FieldRule = Callable[[str, Sequence[Candidate], RuleContext], Resolution]


def _lww_field(_field: str, cs: Sequence[Candidate], ctx: RuleContext) -> Resolution:
    return lww.resolve(cs, ctx)


@dataclass(frozen=True, slots=True)
class ItemResolution:
    """The outcome of ``union`` for one item.

    ``removal`` is None when nobody removed the item; otherwise its candidates are all live
    removals and its winner is the latest removal that saw everything (the one that took
    effect) or, when none did, the latest removal attempt. ``live_keys`` are the keys of the
    item's live non-removal writes, sorted, so an explanation can show what a removal missed.
    """

    item_id: str
    fields: dict[str, Resolution]
    removed: bool
    removal: Resolution | None
    reason: str
    live_keys: tuple[str, ...] = field(default=())

    @property
    def values(self) -> dict[str, Any]:
        """Field name -> winning value."""
        return {f: r.value for f, r in self.fields.items()}


def seen_keys(removal: Candidate) -> frozenset[str]:
    """The keys a removal write saw (its value); anything malformed counts as nothing seen."""
    v = removal.value
    if not isinstance(v, (list, tuple)):
        return frozenset()
    return frozenset(k for k in v if isinstance(k, str))


def resolve_item(
    item_id: str,
    fields: Mapping[str, Sequence[Candidate]],
    ctx: RuleContext = RuleContext(),
    *,
    field_rule: FieldRule | None = None,
) -> ItemResolution:
    """Resolve one item: its fields (each on its own) and whether it is removed."""
    rule = field_rule or _lww_field
    resolved = {
        f: rule(f, cs, ctx) for f, cs in sorted(fields.items()) if f != REMOVED and len(cs) > 0
    }
    live = frozenset(c.key for f, cs in fields.items() if f != REMOVED for c in cs)
    removals = list(fields.get(REMOVED, ()))
    if not removals:
        return ItemResolution(item_id, resolved, False, None, PRESENT, tuple(sorted(live)))
    covering = [r for r in removals if seen_keys(r) >= live]
    winner, why = lww.pick(covering or removals)
    removal = Resolution(rule=NAME, winner=winner, candidates=lww.ranked(removals, winner), reason=why)
    removed = bool(covering)
    return ItemResolution(
        item_id,
        resolved,
        removed,
        removal,
        ITEM_REMOVED if removed else KEPT_CONCURRENT_EDIT,
        tuple(sorted(live)),
    )


def resolve_items(
    items: Mapping[str, Mapping[str, Sequence[Candidate]]],
    ctx: RuleContext = RuleContext(),
    *,
    field_rule: FieldRule | None = None,
) -> dict[str, ItemResolution]:
    """Resolve every item (item id -> field -> live candidates); result sorted by item id.

    Removed items are included (``removed=True``) so callers can explain them.
    """
    return {
        item_id: resolve_item(item_id, items[item_id], ctx, field_rule=field_rule)
        for item_id in sorted(items)
    }
