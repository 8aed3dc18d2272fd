"""Append: every entry is kept, ordered by (timestamp, device id, key) ascending.

Used for notes (and any timeline): entries are never superseded, so there is nothing to
arbitrate, only a deterministic order to agree on.
"""

from __future__ import annotations

from typing import Iterable

from conflict_rules import lww
from conflict_rules.candidates import Candidate

__all__ = ["NAME", "ALL_KEPT", "REASONS", "order"]

NAME = "append"

ALL_KEPT = "all_kept"

REASONS: dict[str, str] = {
    ALL_KEPT: "Every entry is kept, ordered by timestamp, then device id, then key.",
}


def order(entries: Iterable[Candidate]) -> list[Candidate]:
    """All entries, sorted ascending by (time, device, key); keys must be distinct."""
    out = sorted(entries, key=lww.order_key)
    if len({c.key for c in out}) != len(out):
        raise ValueError("entries must have distinct keys")
    return out
