"""Partial replication: which documents a principal may see, and who loses one when a job changes.

The read side of the permission matrix (the decisions live in :mod:`server.policy`; this
module answers them from SQL). Everything is decided from the projection tables, which the
engine updates in the same transaction as the op log, so an answer is never older than the
last acknowledged write.

* ``owner`` and ``office`` see every document.
* ``crew`` sees the job documents it is assigned to (``job_assignments``), **soft-deleted jobs
  included**, and the customer documents of the assigned jobs that are **not** deleted.

  Why keep a deleted job: a crew device may hold unacknowledged edits of it (materials ticked
  offline while the office deleted the job). While the job is visible and writable those edits
  still land; the replica hides deleted jobs from the user anyway. To take a job off a device,
  unassign it. Why not its customer: a deleted job is no reason to keep a customer's phone and
  address on a crew phone, and crews never write customers, so nothing can be stuck.
* any other role sees nothing.

For the WebSocket layer::

    from server import policy, replication

    await policy.can_read(app.state.services, principal, doc_id)     # before a subscription
    await policy.readable(db, principal, doc_ids)                     # a batch pull: one query
    ids = await replication.readable_doc_ids(db, principal)           # what a device may sync
    replication.reads_everything(principal)                           # skip the set for office/owner

    watcher = replication.make_unassignment_listener(engine, on_lost)  # on_lost(doc_id, user_ids)
    await watcher.start()          # primes its cache from SQL, then registers with the engine
    ...                            # on a remote commit hint: await watcher.observe(doc_id)
    await watcher.stop()           # (or ``async with watcher:``)

``on_lost(doc_id, removed_user_ids)`` is called (sync or async) after a commit took a job away
from some of its crew: with the job's document id and the users removed from its crew, and
with the customer's document id and the users who, through that change, can no longer read
the customer (unassigned, the job moved to another customer, or the job was deleted). It is a
hint for closing subscriptions: re-check :func:`server.policy.can_read` with the
connection's own principal before closing (an office user listed in a crew keeps reading).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable

from sqlalchemy import and_, exists, false, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from schema import tables as t
from schema.documents import KIND_CUSTOMER, KIND_JOB, doc_id_for, parse_doc_id
from syncd.errors import UnknownDocument
from syncd.protocol import Principal

if TYPE_CHECKING:
    from schema.view import DocView
    from syncd.engine import SyncEngine

__all__ = [
    "READ_ALL_ROLES",
    "CREW",
    "DbLike",
    "CrewScope",
    "reads_everything",
    "reading",
    "crew_scope",
    "readable_doc_ids",
    "readable_heads_clause",
    "may_read",
    "may_write_doc",
    "writable_doc_ids",
    "readable_of",
    "crew_of",
    "LostCallback",
    "UnassignmentListener",
    "make_unassignment_listener",
]

log = logging.getLogger("server.replication")

#: roles that read (and write) every document
READ_ALL_ROLES: frozenset[str] = frozenset({"owner", "office"})
CREW = "crew"

#: an AsyncConnection, an AsyncEngine, or anything with a ``db`` attribute holding one
#: (``Services``, ``app.state``, ``SyncEngine``); a Starlette app works too (its ``state``).
DbLike = Any

#: ``callback(doc_id, removed_user_ids)``; may return an awaitable
LostCallback = Callable[[str, frozenset[str]], Awaitable[None] | None]


def reads_everything(principal: Principal) -> bool:
    """Whether ``principal`` sees every document (office and owner): no set to compute."""
    return principal.role in READ_ALL_ROLES


def _engine_of(db: DbLike) -> AsyncEngine | AsyncConnection:
    seen = 0
    while not isinstance(db, (AsyncEngine, AsyncConnection)):
        seen += 1
        if seen > 4:
            break
        if hasattr(db, "db"):
            db = db.db
        elif hasattr(db, "services"):
            db = db.services
        elif hasattr(db, "state"):
            db = db.state
        else:
            break
    if not isinstance(db, (AsyncEngine, AsyncConnection)):
        raise TypeError(f"expected an AsyncEngine, an AsyncConnection or an object with .db, not {type(db).__name__}")
    return db


@asynccontextmanager
async def reading(db: DbLike) -> AsyncIterator[AsyncConnection]:
    """A connection to read the projection: the given one, or a new one (on SQLite a deferred
    transaction, which never waits for the engine's write lock)."""
    e = _engine_of(db)
    if isinstance(e, AsyncConnection):
        yield e
        return
    if e.dialect.name == "sqlite":
        e = e.execution_options(sqlite_begin="DEFERRED")
    async with e.connect() as conn:
        yield conn


# --- the crew's scope, in SQL ------------------------------------------------------------------


def _assigned_jobs(user_id: str) -> Any:
    a = t.job_assignments
    return select(a.c.job_id).where(a.c.user_id == user_id)


def _visible_customers(user_id: str) -> Any:
    a, j = t.job_assignments, t.jobs
    return (select(j.c.customer_id)
            .join(a, a.c.job_id == j.c.id)
            .where(a.c.user_id == user_id, j.c.deleted.is_(False), j.c.customer_id.is_not(None)))


@dataclass(frozen=True, slots=True)
class CrewScope:
    """The records a crew member may read: record ids (not document ids)."""

    job_ids: frozenset[str]
    customer_ids: frozenset[str]

    def doc_ids(self) -> set[str]:
        return {f"{KIND_JOB}:{j}" for j in self.job_ids} | {f"{KIND_CUSTOMER}:{c}" for c in self.customer_ids}


async def crew_scope(db: DbLike, user_id: str) -> CrewScope:
    """The jobs assigned to ``user_id`` (deleted ones included) and the customers of the live ones."""
    async with reading(db) as conn:
        jobs = frozenset((await conn.execute(_assigned_jobs(user_id))).scalars())
        customers = frozenset((await conn.execute(_visible_customers(user_id))).scalars()) if jobs else frozenset()
    return CrewScope(jobs, customers)


async def readable_doc_ids(db: DbLike, principal: Principal) -> set[str]:
    """Every document id ``principal`` may read.

    For office and owner that is every document the server holds (``doc_heads``): prefer
    :func:`reads_everything` to skip building it. For a crew member it may name a customer
    document that does not exist yet (a job can be written before its customer).
    """
    if reads_everything(principal):
        async with reading(db) as conn:
            return set((await conn.execute(select(t.doc_heads.c.doc_id))).scalars())
    if principal.role != CREW:
        return set()
    return (await crew_scope(db, principal.user_id)).doc_ids()


def readable_heads_clause(principal: Principal, heads: Any = None) -> ColumnElement[bool] | None:
    """A WHERE clause over ``doc_heads`` (or a table with ``kind`` and ``record_id`` columns)
    keeping the documents ``principal`` may read; None when it reads everything."""
    if reads_everything(principal):
        return None
    if principal.role != CREW:
        return false()
    h = heads if heads is not None else t.doc_heads
    return or_(
        and_(h.c.kind == KIND_JOB, h.c.record_id.in_(_assigned_jobs(principal.user_id))),
        and_(h.c.kind == KIND_CUSTOMER, h.c.record_id.in_(_visible_customers(principal.user_id))),
    )


def _parse(doc_id: str) -> tuple[str, str] | None:
    try:
        return parse_doc_id(doc_id)
    except ValueError:
        return None


async def may_read(db: DbLike, principal: Principal, doc_id: str) -> bool:
    """Whether ``principal`` may read ``doc_id`` (one indexed query for a crew member)."""
    if reads_everything(principal):
        return True
    parsed = _parse(doc_id)
    if principal.role != CREW or parsed is None:
        return False
    kind, rid = parsed
    a, j = t.job_assignments, t.jobs
    if kind == KIND_JOB:
        q = select(exists().where(a.c.job_id == rid, a.c.user_id == principal.user_id))
    else:
        q = select(exists().where(j.c.customer_id == rid, j.c.deleted.is_(False), a.c.job_id == j.c.id,
                                  a.c.user_id == principal.user_id))
    async with reading(db) as conn:
        return bool((await conn.execute(q)).scalar())


async def may_write_doc(db: DbLike, principal: Principal, doc_id: str) -> bool:
    """Whether ``principal`` may send updates to ``doc_id`` at all (fields are checked later, by
    :func:`server.policy.authorize_writes`): a crew member only to the jobs assigned to it."""
    if reads_everything(principal):
        return True
    parsed = _parse(doc_id)
    if principal.role != CREW or parsed is None or parsed[0] != KIND_JOB:
        return False
    a = t.job_assignments
    async with reading(db) as conn:
        return bool((await conn.execute(select(exists().where(
            a.c.job_id == parsed[1], a.c.user_id == principal.user_id)))).scalar())


def _record_ids(doc_ids: set[str], kind: str) -> dict[str, str]:
    """record id -> doc id of the ``doc_ids`` of this kind (ids that do not parse are left out)."""
    out: dict[str, str] = {}
    for d in doc_ids:
        parsed = _parse(d)
        if parsed is not None and parsed[0] == kind:
            out[parsed[1]] = d
    return out


async def writable_doc_ids(db: DbLike, principal: Principal, doc_ids: Iterable[str]) -> set[str]:
    """The ``doc_ids`` :func:`may_write_doc` allows, in one query (a batch push)."""
    ids = set(doc_ids)
    if reads_everything(principal):
        return ids
    if principal.role != CREW:
        return set()
    jobs = _record_ids(ids, KIND_JOB)
    if not jobs:
        return set()
    a = t.job_assignments
    async with reading(db) as conn:
        assigned = (await conn.execute(select(a.c.job_id).where(
            a.c.user_id == principal.user_id, a.c.job_id.in_(sorted(jobs))))).scalars()
        return {jobs[j] for j in assigned}


async def readable_of(db: DbLike, principal: Principal, doc_ids: Iterable[str]) -> set[str]:
    """The ``doc_ids`` :func:`may_read` allows, in one query (a batch pull).

    Same rules as :func:`may_read`: a crew member reads its assigned jobs (deleted ones too)
    and the customers of its live assigned jobs; ids that do not parse are never readable.
    """
    ids = set(doc_ids)
    if reads_everything(principal):
        return ids
    if principal.role != CREW:
        return set()
    jobs, customers = _record_ids(ids, KIND_JOB), _record_ids(ids, KIND_CUSTOMER)
    if not jobs and not customers:
        return set()
    a, j = t.job_assignments, t.jobs
    parts = []
    if jobs:
        parts.append(select(literal(KIND_JOB).label("kind"), a.c.job_id.label("rid")).where(
            a.c.user_id == principal.user_id, a.c.job_id.in_(sorted(jobs))))
    if customers:
        parts.append(select(literal(KIND_CUSTOMER).label("kind"), j.c.customer_id.label("rid"))
                     .join(a, a.c.job_id == j.c.id)
                     .where(a.c.user_id == principal.user_id, j.c.deleted.is_(False),
                            j.c.customer_id.in_(sorted(customers))))
    stmt = parts[0] if len(parts) == 1 else union_all(*parts)
    async with reading(db) as conn:
        rows = (await conn.execute(stmt)).all()
    return {(jobs if kind == KIND_JOB else customers)[rid] for kind, rid in rows}


# --- views -------------------------------------------------------------------------------------


def crew_of(view: "DocView | None") -> frozenset[str]:
    """The user ids of a job view's resolved crew (empty for None, a customer, or no crew)."""
    if view is None:
        return frozenset()
    crew = view.record.get("crew")
    if not isinstance(crew, (list, tuple)):
        return frozenset()
    return frozenset(u for u in crew if isinstance(u, str))


def _reach(view: "DocView | None") -> tuple[frozenset[str], str | None]:
    """(crew, customer id the crew reads through this job) of a job view."""
    if view is None:
        return frozenset(), None
    cust = view.record.get("customer_id")
    visible = isinstance(cust, str) and view.record.get("deleted") is not True
    return crew_of(view), cust if visible else None


# --- who loses a document when a job changes ---------------------------------------------------

#: key prefixes of the job fields that decide who reads the job and its customer. A write of a
#: field always carries its key ``"{field}/{ts}/{device}"`` in the update, so a commit whose
#: bytes contain none of them cannot have changed the crew's reach (a cheap pre-filter).
_REACH_MARKERS = (b"crew/", b"customer_id/", b"deleted/")


class UnassignmentListener:
    """Engine commit listener that reports users who lost a job (and its customer).

    Keeps the last seen ``(crew, visible customer)`` of every job that has a crew, primed from
    SQL by :meth:`start`. After a local commit whose update may touch the crew, the customer
    or the deletion flag of a job, it reads the committed view (``engine.view``, in a task of
    its own: a listener runs inside the engine's batch, which ``engine.view`` waits for) and
    calls ``callback`` for what was lost. Commits made by other server processes are not seen
    by the engine's listeners: call :meth:`observe` when told of one (Redis hint).
    """

    def __init__(self, engine: "SyncEngine", callback: LostCallback) -> None:
        self.engine = engine
        self.callback = callback
        self._reach: dict[str, tuple[frozenset[str], str | None]] = {}
        self._lock = asyncio.Lock()  # one check at a time: they are rare and short
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False

    # lifecycle
    async def start(self) -> "UnassignmentListener":
        """Prime the cache from ``job_assignments`` and register with the engine."""
        if self._started:
            return self
        await self.prime()
        self.engine.add_listener(self)
        self._started = True
        return self

    async def stop(self) -> None:
        """Stop reacting and cancel the pending checks (the engine keeps a no-op listener)."""
        self._stopped = True
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> "UnassignmentListener":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def prime(self) -> None:
        """Load the crew and the visible customer of every assigned job from SQL."""
        a, j = t.job_assignments, t.jobs
        q = (select(a.c.job_id, a.c.user_id, j.c.customer_id, j.c.deleted)
             .select_from(a.outerjoin(j, j.c.id == a.c.job_id)))
        async with reading(self.engine.db) as conn:
            rows = (await conn.execute(q)).all()
        crews: dict[str, set[str]] = {}
        custs: dict[str, str | None] = {}
        for r in rows:
            crews.setdefault(r.job_id, set()).add(r.user_id)
            custs[r.job_id] = r.customer_id if r.customer_id and not r.deleted else None
        self._reach = {f"{KIND_JOB}:{jid}": (frozenset(us), custs[jid]) for jid, us in crews.items()}

    async def drain(self) -> None:
        """Wait until every check scheduled so far has run (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # engine listener: (doc_id, update, seq, principal)
    def __call__(self, doc_id: str, update: bytes, seq: int, principal: Principal) -> None:
        if self._stopped or not doc_id.startswith(f"{KIND_JOB}:"):
            return
        if not any(m in update for m in _REACH_MARKERS):
            return
        task = asyncio.get_running_loop().create_task(self._observe_logged(doc_id), name=f"unassign-check {doc_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _observe_logged(self, doc_id: str) -> None:
        try:
            await self.observe(doc_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checking who lost %s failed", doc_id)

    async def observe(self, doc_id: str) -> None:
        """Compare the job's committed view with the last one seen; report what was lost."""
        if _parse(doc_id) is None or not doc_id.startswith(f"{KIND_JOB}:"):
            return
        async with self._lock:
            try:
                view = await self.engine.view(doc_id)
            except UnknownDocument:
                view = None
            before_crew, before_cust = self._reach.get(doc_id, (frozenset(), None))
            after_crew, after_cust = _reach(view)
            if after_crew:
                self._reach[doc_id] = (after_crew, after_cust)
            else:
                self._reach.pop(doc_id, None)
            lost_job = before_crew - after_crew
            if lost_job:
                await self._report(doc_id, lost_job)
            if before_cust is not None:
                candidates = before_crew - after_crew if before_cust == after_cust else before_crew
                lost_cust = await self._still_blind(before_cust, candidates)
                if lost_cust:
                    await self._report(doc_id_for(KIND_CUSTOMER, before_cust), lost_cust)

    async def _still_blind(self, customer_id: str, users: Iterable[str]) -> frozenset[str]:
        """The ``users`` that no longer read the customer through any other job."""
        users = sorted(users)
        if not users:
            return frozenset()
        a, j = t.job_assignments, t.jobs
        q = (select(a.c.user_id).join(j, j.c.id == a.c.job_id)
             .where(j.c.customer_id == customer_id, j.c.deleted.is_(False), a.c.user_id.in_(users)))
        async with reading(self.engine.db) as conn:
            still = set((await conn.execute(q)).scalars())
        return frozenset(u for u in users if u not in still)

    async def _report(self, doc_id: str, users: frozenset[str]) -> None:
        try:
            r = self.callback(doc_id, users)
            if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                await r
        except Exception:
            log.exception("unassignment callback failed for %s", doc_id)


def make_unassignment_listener(engine: "SyncEngine", callback: LostCallback) -> UnassignmentListener:
    """An :class:`UnassignmentListener` for ``engine``; ``await .start()`` to prime and register it."""
    return UnassignmentListener(engine, callback)
