"""Owner wins: a write by the record's owner (or by a user with role ``owner``) beats others.

The *owner tier* is the candidates whose author is ``ctx.record_owner`` (a job's resolved
``owner_id``) or whose role is ``"owner"``. If the tier is non-empty the winner is the
``lww`` winner of the tier, else the ``lww`` winner of all candidates. Author and role are
verified by the server at acceptance, so a client cannot put itself in the tier.

``Resolution.candidates``: winner first, then the others by (time, device, key) descending.
"""

from __future__ import annotations

from typing import Sequence

from conflict_rules import lww
from conflict_rules.candidates import Candidate, Resolution, RuleContext

__all__ = ["NAME", "OWNER_ROLE", "OWNER_WINS", "REASONS", "in_owner_tier", "resolve"]

NAME = "owner_wins"
OWNER_ROLE = "owner"

OWNER_WINS = "owner_wins"

REASONS: dict[str, str] = {
    OWNER_WINS: "The winner was written by the record's owner (or a user with role owner), "
                "which beats concurrent writes by others whatever their timestamps.",
}


def in_owner_tier(c: Candidate, ctx: RuleContext) -> bool:
    """Whether ``c`` was written by the record's owner or by a user with role ``owner``."""
    return c.role == OWNER_ROLE or (ctx.record_owner is not None and c.author == ctx.record_owner)


def resolve(candidates: Sequence[Candidate], ctx: RuleContext = RuleContext()) -> Resolution:
    """Resolve one field's concurrent candidates: owner tier first, ``lww`` inside a tier."""
    cs = list(candidates)
    tier = [c for c in cs if in_owner_tier(c, ctx)]
    winner, reason = lww.pick(tier or cs)
    if tier and len(tier) < len(cs):
        # Someone outside the tier lost because of who wrote the winner, not when.
        reason = OWNER_WINS
    return Resolution(rule=NAME, winner=winner, candidates=lww.ranked(cs, winner), reason=reason)
