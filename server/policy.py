"""Who may read and write which document and field: the one place authorization is decided.

The permission matrix (roles from :data:`schema.models.ROLES`)::

                         owner   office   crew
    list / pull / live   all     all      jobs assigned to them (deleted ones too) and the
                                          customers of their live assigned jobs
    create a document    yes     yes      no
    customer fields      yes     yes      no (read-only)
    job fields           yes     yes      only ``status``, only on a job whose crew lists them,
                                          only along CREW_STATUS_MOVES (see below)
    job materials        yes     yes      add, edit, tick, remove; every field except ``cost``
    job notes            yes     yes      add (notes are append-only for everyone)
    anything else        -       -        - (an unknown role may do nothing)

Office may change ``owner_id`` and ``crew``; nobody can write *as* someone else, because the
engine already requires every write to carry the token's user, role and device (so a crew
cannot make its status write count as the owner's under ``owner_wins``).

Crew status moves (:func:`crew_status_write_allowed`): a crew status write that saw the
committed status must be an allowed move from it; one concurrent with it (an offline crew
that could not see an office change) is arbitrated by owner-wins and may only name a
status a crew move can reach. A move is allowed when the new status is the current one (a harmless
re-assertion, e.g. two crew members both starting the job offline) or can be reached from it
by a chain of :data:`~schema.models.CREW_STATUS_MOVES` (``crew_may_move``). The chain is
needed because a replica pushes its outbox merged into one update per document, and the
engine checks all updates of one batch against the same committed view: a crew that started
then finished a job offline sends ``scheduled -> completed`` as one write. Every status so
reached is one the crew could set in steps anyway, so nothing is granted that single moves
would not.

Material ``cost`` is the price: office business (estimates, invoices), never set or changed
by a crew; a crew adds a material with name, quantity, unit and purchased only.

Three entry points:

* :func:`can_read` / :func:`readable` (async; pull, batch pull, status, live subscriptions)
  and :func:`can_push` / :func:`pushable` (async; at the edge, before an update reaches the
  engine) ask the SQL projection through :mod:`server.replication`;
* :func:`authorize_writes` is the engine's ``authorizer``: a fast pure function of the
  principal, the document's committed view and the exact writes an update adds. It raises
  ``syncd.errors.Forbidden`` naming the refused fields; the engine then refuses the update
  whole and stores nothing; the routes audit the refusal.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from schema.documents import KIND_CUSTOMER, KIND_JOB, REMOVED, parse_doc_id
from schema.models import CREW_STATUS_MOVES, crew_may_move
from syncd.errors import Forbidden
from syncd.protocol import Principal

from . import replication
from .replication import CREW, READ_ALL_ROLES, crew_of

if TYPE_CHECKING:
    from schema.view import DocView
    from syncd.validation import ValidatedWrite

__all__ = [
    "FULL_WRITE_ROLES",
    "CREW_JOB_FIELDS",
    "CREW_MATERIAL_FIELDS",
    "crew_status_allowed",
    "can_read",
    "can_push",
    "pushable",
    "readable",
    "authorize_writes",
]

#: roles that write every field of every document
FULL_WRITE_ROLES: frozenset[str] = READ_ALL_ROLES
#: job fields a crew member may write (status: along CREW_STATUS_MOVES only)
CREW_JOB_FIELDS: frozenset[str] = frozenset({"status"})
#: material fields a crew member may write (``_removed``: remove an item); not ``cost``
CREW_MATERIAL_FIELDS: frozenset[str] = frozenset({"name", "quantity", "unit", "purchased", REMOVED})


@lru_cache(maxsize=None)
def _reachable(status: str) -> frozenset[str]:
    """Statuses a crew can reach from ``status`` by one or more allowed moves."""
    seen: set[str] = set()
    todo = [status]
    while todo:
        s = todo.pop()
        for nxt in CREW_STATUS_MOVES.get(s, ()):
            if nxt not in seen and crew_may_move(s, nxt):
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


#: every status a crew move can lead to
CREW_TARGETS: frozenset[str] = frozenset(t for moves in CREW_STATUS_MOVES.values() for t in moves)


def crew_status_write_allowed(view_before: Any, write: Any, current: str | None) -> bool:
    """A crew status write that saw the committed status (it supersedes the winning write)
    must be an allowed move from it. One that did not see it is concurrent with it: the
    field's rule (owner-wins) arbitrates, and it may only name a status a crew move can
    reach, so an offline crew is never stuck behind an office change it could not see."""
    if crew_status_allowed(current, write.value):
        return True
    res = view_before.record_resolutions.get("status") if view_before is not None else None
    winner = res.winner if res is not None else None
    concurrent = winner is not None and winner.key not in set(getattr(write, "supersedes", ()) or ())
    return concurrent and write.value in CREW_TARGETS


def crew_status_allowed(current: str | None, new: Any) -> bool:
    """Whether a crew member may write ``status=new`` on a job whose status is ``current``."""
    if not isinstance(current, str) or not isinstance(new, str):
        return False
    return new == current or new in _reachable(current)


async def can_read(db: replication.DbLike, principal: Principal, doc_id: str) -> bool:
    """Whether ``principal`` may receive ``doc_id`` (list, pull, subscribe).

    ``db``: an AsyncEngine or AsyncConnection, or ``Services`` / ``app.state`` / a Starlette
    app. Office and owner need no query.
    """
    return await replication.may_read(db, principal, doc_id)


async def can_push(db: replication.DbLike, principal: Principal, doc_id: str) -> bool:
    """Whether ``principal`` may send updates to ``doc_id`` at all (checked at the edge).

    A crew member only to jobs assigned to it; which fields it may write is decided by
    :func:`authorize_writes` inside the engine.
    """
    return await replication.may_write_doc(db, principal, doc_id)


async def pushable(db: replication.DbLike, principal: Principal, doc_ids: "list[str] | set[str]") -> set[str]:
    """The subset of ``doc_ids`` :func:`can_push` allows, decided in one query."""
    return await replication.writable_doc_ids(db, principal, doc_ids)


async def readable(db: replication.DbLike, principal: Principal, doc_ids: "list[str] | set[str]") -> set[str]:
    """The subset of ``doc_ids`` :func:`can_read` allows, decided in one query (a batch pull)."""
    return await replication.readable_of(db, principal, doc_ids)


def _refuse(message: str, refused: list[tuple[str, str]]) -> Forbidden:
    return Forbidden(message, [{"field": f, "message": m} for f, m in refused])


def authorize_writes(principal: Principal, doc_id: str, view_before: "DocView | None",
                     writes: "list[ValidatedWrite]") -> None:
    """Engine authorizer: raise ``syncd.errors.Forbidden`` to refuse the whole update.

    ``view_before`` is the document's committed view (None for a new document); ``writes``
    are the writes the update adds, already validated (schema, author, role, device, clock).
    """
    role = principal.role
    if role in FULL_WRITE_ROLES:
        return
    if role != CREW:
        raise _refuse(f"role {role!r} may not write documents", [("document", "unknown role")])
    try:
        kind, _ = parse_doc_id(doc_id)
    except ValueError:
        raise _refuse(f"invalid document id {doc_id!r}", [("document", "invalid id")]) from None
    if kind == KIND_CUSTOMER:
        raise _refuse("a crew member may not write customers: customer documents are read-only for crew",
                      [("customer", "read-only for crew")])
    if kind != KIND_JOB:
        raise _refuse(f"a crew member may not write {kind} documents", [(kind, "not writable by crew")])
    if view_before is None:
        raise _refuse("a crew member may not create jobs", [("job", "crew may not create documents")])
    if principal.user_id not in crew_of(view_before):
        raise _refuse(f"you are not in the crew of {doc_id}: a crew member writes only jobs assigned to them",
                      [("job.crew", "not assigned to this job")])
    current = view_before.record.get("status")
    refused: list[tuple[str, str]] = []
    for w in writes:
        k = w.key
        if k.root == "fields":
            name = f"job.{k.field}"
            if k.field not in CREW_JOB_FIELDS:
                refused.append((name, f"a crew member may not change {name}"))
            elif not crew_status_write_allowed(view_before, w, current):
                refused.append((name, f"a crew member may not move a job from {current!r} to {w.value!r}"))
        elif k.root == "materials":
            if k.field not in CREW_MATERIAL_FIELDS:
                name = f"material.{k.field}"
                refused.append((name, f"a crew member may not set {name}"
                                + (" (the price is set by the office)" if k.field == "cost" else "")))
        elif k.root != "notes":
            refused.append((k.root, f"a crew member may not write {k.root}"))
    if refused:
        unique = list(dict.fromkeys(refused))
        fields = ", ".join(dict.fromkeys(f for f, _ in unique))
        first = unique[0][1]
        raise _refuse(f"{first}; update refused (forbidden for crew: {fields})", unique)
