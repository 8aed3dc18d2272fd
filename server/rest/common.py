"""What the CRM routes share: query and body parsing, path ids, who may read what, writes.

Reads come from the SQL projection (``engine.reader``: on SQLite a deferred transaction that
never takes the write lock). Writes go through :func:`edit`, i.e. ``SyncEngine.edit``: the
change becomes a CRDT update authored by the caller's user, role and device, accepted like
any device's push, and is projected before the call returns, so the route can answer by
reading the projection.

Crew scope: a crew member reads only the jobs assigned to them and those jobs' customers;
:func:`read_scope` asks partial replication (``server.replication``) for that set. What a
crew may *write* (status moves, material fields) is the engine's write policy
(``server.policy.authorize_writes``): its refusals come back from :func:`edit` as 403,
audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import false, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schema import documents as D
from schema import tables as t
from syncd.errors import ClientIdConflict, Forbidden as SyncForbidden
from syncd.protocol import Principal, PushAck

from .. import replication
from ..deps import Auth, audit_refusal
from ..errors import Forbidden, InvalidJson, NotFound, ValidationFailed, validation_details
from ..services import services

__all__ = ["OFFICE", "api", "route", "handlers_of", "parse_query", "read_body", "path_id", "Scope", "read_scope", "refuse",
           "edit", "reader", "user_roles"]

M = TypeVar("M", bound=BaseModel)

#: roles that manage customers, jobs and assignments
OFFICE = ("owner", "office")

_UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def api(summary: str, *, query: type[BaseModel] | None = None, body: Any = None, response: Any = None,
        status: int = 200, paginated: bool = False, tags: Iterable[str] = (),
        errors: Iterable[int] = (), extra_models: Iterable[type[BaseModel]] = ()) -> Callable[[Any], Any]:
    """Describe an endpoint for the OpenAPI document (``server.rest.openapi``).

    ``body``/``response``: a pydantic model, ``list[Model]``, a ``TypeAdapter``-able type, or a
    raw JSON schema dict (``$ref`` to ``#/components/schemas/<Model>`` of any model named here
    or in ``extra_models``). ``paginated``: the response is a page (``meta.next_cursor``).
    ``errors``: statuses this endpoint answers besides the common ones (401, 422, 429).
    """

    def mark(endpoint: Any) -> Any:
        endpoint.__openapi__ = {"summary": summary, "query": query, "body": body, "response": response,
                                "status": status, "paginated": paginated, "tags": list(tags),
                                "errors": list(errors), "extra_models": list(extra_models)}
        return endpoint

    return mark


def route(path: str, **handlers: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route per path, one handler per method (``GET=..., PUT=...``), so a request with
    another method gets 405 with the complete ``Allow`` header. HEAD is served by GET."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    dispatch.__handlers__ = dict(handlers)  # type: ignore[attr-defined]
    dispatch.__name__ = dispatch.__qualname__ = "_".join(h.__name__ for h in handlers.values())
    return Route(path, dispatch, methods=list(handlers))


def handlers_of(route_: Route) -> dict[str, Any]:
    """``{METHOD: endpoint}`` of a route (HEAD left out), for the OpenAPI document."""
    found = getattr(route_.endpoint, "__handlers__", None)
    if found is not None:
        return dict(found)
    return {m: route_.endpoint for m in sorted(route_.methods or ()) if m != "HEAD"}


def reader(request: Request) -> Any:
    """A connection context for projection reads."""
    return services(request).engine.reader.connect()


# --- input ---------------------------------------------------------------------------------

def parse_query(model: type[M], request: Request) -> M:
    """The query string as ``model``: 422 VALIDATION_ERROR naming each bad parameter."""
    params = request.query_params
    data: dict[str, Any] = {}
    for k in params.keys():
        values = params.getlist(k)
        data[k] = values[-1] if len(values) == 1 else values
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed("invalid query parameters", validation_details(e)) from None


async def read_body(request: Request, adapter: Any) -> Any:
    """The JSON body validated by ``adapter`` (a model class or a TypeAdapter): 400 / 422."""
    raw = await request.body()
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidJson(f"the request body is not valid JSON: {e}") from None
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_python(data)
        return adapter.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed("the request body is not valid", validation_details(e)) from None


def path_id(request: Request, name: str = "id") -> str:
    """A record id from the path; an id that cannot exist is simply not found."""
    raw = str(request.path_params.get(name, "")).strip().lower()
    if not _UUID.match(raw):
        raise NotFound(f"no record with id {request.path_params.get(name)!r}")
    return raw


# --- who may read what ------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """The records a principal may read. ``everything`` for office and owner."""

    everything: bool
    job_ids: frozenset[str] = frozenset()
    customer_ids: frozenset[str] = frozenset()

    def job_ok(self, job_id: str) -> bool:
        return self.everything or job_id in self.job_ids

    def customer_ok(self, customer_id: str) -> bool:
        return self.everything or customer_id in self.customer_ids

    def jobs_where(self, column: Any) -> ColumnElement[bool] | None:
        if self.everything:
            return None
        return column.in_(sorted(self.job_ids)) if self.job_ids else false()

    def customers_where(self, column: Any) -> ColumnElement[bool] | None:
        if self.everything:
            return None
        return column.in_(sorted(self.customer_ids)) if self.customer_ids else false()


async def read_scope(conn: AsyncConnection, principal: Principal) -> Scope:
    """What ``principal`` may read, as partial replication decides it
    (:func:`server.replication.readable_doc_ids`), so REST and sync never disagree:
    everything for office and owner; for a crew member the assigned jobs (soft-deleted ones
    included; the routes hide those from crews anyway) and the customers of the live ones;
    nothing for any other role.
    """
    if replication.reads_everything(principal):
        return Scope(True)
    jobs: set[str] = set()
    customers: set[str] = set()
    for doc_id in await replication.readable_doc_ids(conn, principal):
        try:
            kind, rid = D.parse_doc_id(doc_id)
        except ValueError:
            continue
        (jobs if kind == D.KIND_JOB else customers).add(rid)
    return Scope(False, frozenset(jobs), frozenset(customers))


async def refuse(request: Request, auth: Auth, message: str, resource: str) -> Forbidden:
    """Audit a refusal decided by a route and return the 403 to raise."""
    await audit_refusal(request, f"FORBIDDEN: {message}", auth=auth, resource=resource)
    return Forbidden(message)


async def user_roles(conn: AsyncConnection, user_ids: Iterable[str]) -> dict[str, str]:
    """``{user_id: role}`` of the given users that exist and are active."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    u = t.users
    rows = (await conn.execute(select(u.c.id, u.c.role).where(u.c.id.in_(ids), u.c.active.is_(True)))).all()
    return {r.id: r.role for r in rows}


# --- writes ------------------------------------------------------------------------------------

#: engine refusals that are authorization decisions, hence audited (as in sync_routes)
_AUDITED = (SyncForbidden, ClientIdConflict)


async def edit(request: Request, auth: Auth, doc_id: str, fn: Callable[[Any, dict[str, Any]], Any]) -> tuple[PushAck, Any]:
    """Write ``doc_id`` as the caller through ``SyncEngine.edit``; returns once projected.

    The engine's errors propagate (rendered with their own status and code); authorization
    refusals are audited first.
    """
    try:
        return await services(request).engine.edit(auth.principal, doc_id, fn)
    except _AUDITED as e:
        await audit_refusal(request, f"{e.code}: {e.message}", auth=auth, resource=doc_id)
        raise
