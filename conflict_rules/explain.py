"""Turn rule outcomes into JSON-ready explanations (``syncd explain``, the PWA's view).

Every explanation has the keys ``record, field, rule, candidates, winner, value, reason,
reason_text, concurrent``; each candidate carries ``value, author, role, device, time, key``
and ``winner``. Rule-specific facts are added on top (owner tier, removal seen-sets).
"""

from __future__ import annotations

from typing import Any, Sequence

from conflict_rules import append, owner_wins, registry, union
from conflict_rules.candidates import Candidate, Resolution, RuleContext
from conflict_rules.registry import REASONS
from conflict_rules.union import ItemResolution, seen_keys

__all__ = ["REASONS", "explain_resolution", "explain_item", "explain_entries"]


def _cand(c: Candidate, winner: Candidate | None) -> dict[str, Any]:
    return {
        "value": c.value,
        "author": c.author,
        "role": c.role,
        "device": c.device,
        "time": c.time,
        "key": c.key,
        # Keys are unique in a document, so the key identifies the winner.
        "winner": winner is not None and c.key == winner.key,
    }


def explain_resolution(
    record: str, field: str, resolution: Resolution, *, ctx: RuleContext | None = None
) -> dict[str, Any]:
    """Explain one field's resolution: its candidates, the rule, the winner and why.

    With ``ctx`` and an ``owner_wins`` resolution, adds ``record_owner`` and, per candidate,
    ``owner_tier``.
    """
    w = resolution.winner
    cands = [_cand(c, w) for c in resolution.candidates]
    out: dict[str, Any] = {
        "record": record,
        "field": field,
        "rule": resolution.rule,
        "candidates": cands,
        "winner": None if w is None else w.to_json(),
        "value": resolution.value,
        "reason": resolution.reason,
        "reason_text": registry.reason_text(resolution.reason),
        "concurrent": resolution.concurrent,
    }
    if ctx is not None and resolution.rule == owner_wins.NAME:
        out["record_owner"] = ctx.record_owner
        for d, c in zip(cands, resolution.candidates):
            d["owner_tier"] = owner_wins.in_owner_tier(c, ctx)
    return out


def explain_item(record: str, item: ItemResolution) -> dict[str, Any]:
    """Explain a union item: whether it is removed, each removal's seen-set, its fields.

    ``candidates`` are the item's live removal writes, each with ``seen`` (keys the remover
    saw), ``missing`` (live writes it did not see) and ``covers`` (it saw them all).
    """
    live = set(item.live_keys)
    w = item.removal.winner if item.removal else None
    removals = []
    for c in item.removal.candidates if item.removal else ():
        d = _cand(c, w)
        seen = seen_keys(c)
        d["seen"] = sorted(seen)
        d["missing"] = sorted(live - seen)
        d["covers"] = seen >= live
        removals.append(d)
    prefix = f"materials/{item.item_id}"
    return {
        "record": record,
        "field": prefix,
        "rule": union.NAME,
        "candidates": removals,
        "winner": None if w is None else w.to_json(),
        "value": item.values,
        "removed": item.removed,
        "reason": item.reason,
        "reason_text": registry.reason_text(item.reason),
        # An item is contested when a removal raced with something it did not see.
        "concurrent": item.removal is not None and (item.removal.concurrent or not item.removed),
        "live_keys": list(item.live_keys),
        "fields": {f: explain_resolution(record, f"{prefix}/{f}", r) for f, r in item.fields.items()},
    }


def explain_entries(record: str, field: str, entries: Sequence[Candidate]) -> dict[str, Any]:
    """Explain an append-only collection: every entry, in the agreed order."""
    ordered = append.order(entries)
    cands = [_cand(c, None) | {"position": i} for i, c in enumerate(ordered)]
    return {
        "record": record,
        "field": field,
        "rule": append.NAME,
        "candidates": cands,
        "winner": None,
        "value": [c.value for c in ordered],
        "reason": append.ALL_KEPT,
        "reason_text": registry.reason_text(append.ALL_KEPT),
        "concurrent": False,  # append never arbitrates: nothing is lost
    }
