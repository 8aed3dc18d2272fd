"""Which documents a principal may read and write: the one hook for per-document authorization.

For now every authenticated user may pull and push every document. Partial replication
(a crew device sees only the jobs assigned to it and those jobs' customers) and per-field
write rules will be decided here, and only here:

* :func:`can_read` is asked by the pull and status routes (and will be by live sync);
* :func:`can_push` is asked at the edge before an update reaches the engine;
* :func:`authorize_writes` is the engine's ``authorizer``: it sees the document's committed
  view and the exact writes an update adds, and raises ``syncd.errors.Forbidden`` to refuse
  the whole update (nothing is stored; the route audits the refusal).

They are pure functions of their arguments so they can be tested without a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.protocol import Principal

if TYPE_CHECKING:
    from schema.view import DocView
    from syncd.validation import ValidatedWrite

__all__ = ["can_read", "can_push", "authorize_writes"]


def can_read(principal: Principal, doc_id: str) -> bool:
    """Whether ``principal`` may receive ``doc_id``. Allows all (partial replication comes later)."""
    return True


def can_push(principal: Principal, doc_id: str) -> bool:
    """Whether ``principal`` may send updates to ``doc_id`` at all. Allows all for now."""
    return True


def authorize_writes(principal: Principal, doc_id: str, view_before: "DocView | None",
                     writes: "list[ValidatedWrite]") -> None:
    """Engine authorizer: raise ``syncd.errors.Forbidden`` to refuse an update. Allows all for now.

    Authorship is already enforced by the engine (every write must name the token's user,
    role and device); this hook is for *who may write which field of which record*.
    """
    return None
