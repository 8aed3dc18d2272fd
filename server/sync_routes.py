"""HTTP sync for devices that are not live: ``/api/sync/{push,pull,status}``.

A thin adapter over :class:`syncd.engine.SyncEngine`: the same acceptance path as every
other transport. The principal (user, role, device) comes from the verified access token,
never from the request body.

``POST /api/sync/push``
    single ``{"doc_id", "update": base64, "idempotency_key"?}`` -> the ack, or the engine's
    error with its status; batch ``{"updates": [{doc_id, update, idempotency_key?}, ...]}``
    (at most ``max_batch_updates``) -> 200 with one result per update, in order: an ack or
    ``{"doc_id", "status", "error": {...}}``. Updates are acknowledged only once durable;
    re-sending one is harmless (``duplicate: true``).
``GET /api/sync/pull?doc_id=&state_vector=<base64url>&since=<seq>``
    what the device lacks of a document (``update`` base64) and the ``seq`` to pass as
    ``since`` next time.
``POST /api/sync/pull`` (batch: one request, one auth, one policy query, acks in one transaction)
    ``{"docs": [{"doc_id", "state_vector"?, "since"?}, ...]}`` (1 to ``MAX_PULL_DOCS``) ->
    200 ``{"device_id", "server_time", "results": [...]}`` with one result per entry, in
    order: ``{"doc_id", "update", "seq", "server_time"}`` as the GET form answers, or
    ``{"doc_id", "status", "error": {...}}`` (403 for a document the caller may not read,
    audited like a refused GET; 404 unknown document; 400 bad id, base64 or state vector).
    ``{"all": true, "after"?, "limit"?, "docs"?: [...]}`` -> the same answer for one page of
    the documents ``/api/sync/status`` lists (doc id order, ``limit`` default 100, at most
    ``MAX_PULL_DOCS``; ``meta.next_cursor`` is the ``after`` of the next page, null on the
    last). There ``docs`` (at most ``MAX_KNOWN_DOCS``) is what the device already holds: a
    listed document found there is pulled with its state vector and cursor, any other from
    empty; entries that are not listed are ignored (the device drops what is no longer
    listed, as after a status walk). A device syncing from empty needs one request per
    page; ``replica.sync.pull`` uses this form when the transport offers it.
``GET /api/sync/status?after=<doc_id>&limit=<n>``
    the documents the device may see (``server.policy``: a crew sees its assigned jobs and
    their customers), with their log heads and what this device acknowledged. A replica drops
    the documents no longer listed, so unassigning a job removes it from the crew's devices.

Refusals by the policy (403 ``FORBIDDEN``: reading or writing a document outside one's
scope, or a field one's role may not write) are written to ``audit_log``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

import orjson
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import and_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schema import tables as t
from syncd.errors import ClientIdConflict, Forbidden as SyncForbidden, SyncError
from syncd.protocol import PullResult, PushAck

from . import policy
from .deps import Auth, audit_refusal, current_auth, requires
from .errors import ApiError, Forbidden, InvalidBase64, InvalidJson, ValidationFailed, error_body, ok, validation_details
from .replication import readable_heads_clause, reading
from .rest.common import api, route
from .services import services

__all__ = ["routes", "PushItem", "PushBatch", "PullItem", "PullBatch", "decode_b64", "MAX_PULL_DOCS",
           "MAX_KNOWN_DOCS"]

#: most documents one ``POST /api/sync/pull`` answers (an explicit list, or a page of ``all``)
MAX_PULL_DOCS = 200
#: most ``docs`` entries (the documents the device holds) with ``"all": true``
MAX_KNOWN_DOCS = 1000

log = logging.getLogger("server.sync")

#: engine refusals that are authorization decisions, hence audited
_AUDITED = (SyncForbidden, ClientIdConflict)


class PushItem(BaseModel):
    doc_id: str = Field(min_length=1, max_length=80)
    update: str = Field(min_length=1)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)


class PushBatch(BaseModel):
    updates: list[PushItem] = Field(min_length=1)


class PullQuery(BaseModel):
    doc_id: str = Field(min_length=1, max_length=80)
    state_vector: str | None = None
    since: int | None = Field(default=None, ge=0)


class PullItem(BaseModel):
    doc_id: str = Field(min_length=1, max_length=80)
    state_vector: str | None = Field(default=None, description="base64 (standard or URL-safe) Yjs state vector; "
                                                                "absent: the whole document")
    since: int | None = Field(default=None, ge=0, description="the seq of the device's last pull of this document")


class PullBatch(BaseModel):
    docs: list[PullItem] = Field(default_factory=list, description=(
        f"the documents to pull, in order (1 to {MAX_PULL_DOCS}); with all=true what the device holds "
        f"(at most {MAX_KNOWN_DOCS})"))
    all: bool = Field(default=False, description="pull one page of every document the caller may read")
    after: str | None = Field(default=None, max_length=80, description="with all=true: the previous page's "
                                                                       "meta.next_cursor")
    limit: int | None = Field(default=None, ge=1, le=MAX_PULL_DOCS,
                              description="with all=true: documents per page (default 100)")


class PullResultOut(BaseModel):
    doc_id: str
    update: str = Field(description="base64 update to apply")
    seq: int = Field(description="pass as since next time")
    server_time: str


class PullErrorOut(BaseModel):
    doc_id: str
    status: int
    error: dict[str, Any]


class PullBatchOut(BaseModel):
    device_id: str
    server_time: str
    results: list[PullResultOut | PullErrorOut]


class StatusQuery(BaseModel):
    after: str | None = Field(default=None, max_length=80)
    limit: int = Field(default=100, ge=1, le=1000)


def decode_b64(value: str, field: str) -> bytes:
    """Standard or URL-safe base64, padding optional; 400 INVALID_BASE64 otherwise."""
    s = value.strip()
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64(f"{field} is not valid base64",
                            [{"field": field, "message": "not valid base64"}]) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ack_json(ack: PushAck, key: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"doc_id": ack.doc_id, "seq": ack.seq, "duplicate": ack.duplicate,
                           "server_time": ack.server_time}
    if key is not None:
        out["idempotency_key"] = key
    return out


async def _push_one(request: Request, auth: Auth, item: PushItem, field: str, allowed: bool | None = None) -> PushAck:
    """Edge check (``allowed`` when decided beforehand), then the engine. With ``allowed`` given
    nothing is awaited before the update is enqueued."""
    if allowed is None:
        allowed = await policy.can_push(services(request).db, auth.principal, item.doc_id)
    if not allowed:
        await audit_refusal(request, "FORBIDDEN: may not write", auth=auth, resource=item.doc_id)
        raise Forbidden(f"you may not write {item.doc_id}")
    update = decode_b64(item.update, field)
    try:
        return await services(request).engine.push(auth.principal, item.doc_id, update)
    except _AUDITED as e:
        await audit_refusal(request, f"{e.code}: {e.message}", auth=auth, resource=item.doc_id)
        raise


def _item_error(doc_id: str, e: BaseException) -> dict[str, Any]:
    if isinstance(e, SyncError):
        return {"doc_id": doc_id, "status": e.status, **e.to_json()}
    if isinstance(e, ApiError):
        return {"doc_id": doc_id, "status": e.status, **error_body(e.code, e.message, e.details)}
    log.error("sync of %s failed unexpectedly", doc_id, exc_info=e)
    return {"doc_id": doc_id, "status": 500, **error_body("INTERNAL_ERROR", "internal error; retry")}


@requires()
async def push(request: Request) -> Response:
    auth = current_auth(request)
    cfg = services(request).config
    try:
        data: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise InvalidJson(f"the request body is not valid JSON: {e}") from None
    if isinstance(data, dict) and "updates" in data:
        batch = PushBatch.model_validate(data)
        if len(batch.updates) > cfg.max_batch_updates:
            raise ValidationFailed("too many updates in one request", [
                {"field": "updates", "message": f"at most {cfg.max_batch_updates} updates per request"}])

        writable = await policy.pushable(services(request).db, auth.principal, {u.doc_id for u in batch.updates})

        async def guarded(i: int, item: PushItem) -> dict[str, Any]:
            try:
                return _ack_json(await _push_one(request, auth, item, f"updates.{i}.update", item.doc_id in writable),
                                 item.idempotency_key)
            except Exception as e:  # reported per update; the others still count
                return _item_error(item.doc_id, e)

        # Tasks are created in order and each enqueues its update before its first await (the
        # edge check was decided above), so the engine sees the batch in request order
        # (updates may build on earlier ones).
        results = await asyncio.gather(*(guarded(i, it) for i, it in enumerate(batch.updates)))
        return ok({"results": list(results)})
    item = PushItem.model_validate(data)
    ack = await _push_one(request, auth, item, "update")
    return ok(_ack_json(ack, item.idempotency_key))


def _query(model: type[BaseModel], request: Request) -> Any:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as e:
        raise ValidationFailed("invalid query parameters", validation_details(e)) from None


@requires()
async def pull(request: Request) -> Response:
    auth = current_auth(request)
    q: PullQuery = _query(PullQuery, request)
    if not await policy.can_read(services(request).db, auth.principal, q.doc_id):
        await audit_refusal(request, "FORBIDDEN: may not read", auth=auth, resource=q.doc_id)
        raise Forbidden(f"you may not read {q.doc_id}")
    sv = decode_b64(q.state_vector, "state_vector") if q.state_vector else None
    res = await services(request).engine.pull(auth.principal, q.doc_id, sv, q.since)
    return ok(_pull_json(res))


async def _listed(auth: Auth, request: Request, after: str | None, limit: int) -> tuple[list[Any], str | None]:
    """One page of the documents ``auth`` may read (doc id order): rows of (doc_id, kind,
    last_seq, acked_seq) and the cursor of the next page (None on the last)."""
    h, a = t.doc_heads, t.device_doc_acks
    stmt = (select(h.c.doc_id, h.c.kind, h.c.last_seq, a.c.acked_seq)
            .select_from(h.outerjoin(a, and_(a.c.doc_id == h.c.doc_id, a.c.device_id == auth.device_id)))
            .order_by(h.c.doc_id).limit(limit + 1))
    if after:
        stmt = stmt.where(h.c.doc_id > after)
    readable = readable_heads_clause(auth.principal, h)
    if readable is not None:
        stmt = stmt.where(readable)
    async with reading(services(request).db) as conn:
        rows = (await conn.execute(stmt)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].doc_id if more and rows else None)


@requires()
async def status(request: Request) -> Response:
    auth = current_auth(request)
    q: StatusQuery = _query(StatusQuery, request)
    rows, next_cursor = await _listed(auth, request, q.after, q.limit)
    docs = [{"doc_id": r.doc_id, "kind": r.kind, "seq": r.last_seq, "acked_seq": r.acked_seq or 0,
             "behind": max(0, r.last_seq - (r.acked_seq or 0))}
            for r in rows]
    return ok({"device_id": auth.device_id, "server_time": services(request).engine.server_time(), "docs": docs},
              next_cursor=next_cursor)


def _pull_json(res: PullResult) -> dict[str, Any]:
    return {"doc_id": res.doc_id, "update": _b64(res.update), "seq": res.seq, "server_time": res.server_time}


def _too_many(field: str, n: int, what: str) -> ValidationFailed:
    return ValidationFailed(f"too many {what} in one request", [{"field": field, "message": f"at most {n} {what}"}])


@api("Pull several documents in one request (a list, or a page of every readable one)", body=PullBatch,
     response=PullBatchOut, tags=["sync"])
@requires()
async def pull_batch(request: Request) -> Response:
    """Batch pull: see the module docstring of ``server.sync_routes``."""
    auth = current_auth(request)
    svc = services(request)
    try:
        data: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise InvalidJson(f"the request body is not valid JSON: {e}") from None
    try:
        batch = PullBatch.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed("the request body is not valid", validation_details(e)) from None
    next_cursor: str | None = None
    # (index in the request's docs or None, what to pull)
    items: list[tuple[int | None, PullItem]]
    if batch.all:
        if len(batch.docs) > MAX_KNOWN_DOCS:
            raise _too_many("docs", MAX_KNOWN_DOCS, "documents")
        rows, next_cursor = await _listed(auth, request, batch.after, batch.limit or 100)
        known = {d.doc_id: (i, d) for i, d in enumerate(batch.docs)}
        items = [known.get(r.doc_id) or (None, PullItem(doc_id=r.doc_id)) for r in rows]
        allowed = {r.doc_id for r in rows}
    else:
        if batch.after is not None or batch.limit is not None:
            field = "after" if batch.after is not None else "limit"
            raise ValidationFailed("after and limit page the listing: they need all=true",
                                   [{"field": field, "message": "only with all=true"}])
        if not batch.docs:
            raise ValidationFailed("name the documents to pull, or ask for all", [
                {"field": "docs", "message": "at least one document (or all=true)"}])
        if len(batch.docs) > MAX_PULL_DOCS:
            raise _too_many("docs", MAX_PULL_DOCS, "documents")
        items = list(enumerate(batch.docs))
        allowed = await policy.readable(svc.db, auth.principal, {d.doc_id for d in batch.docs})

    results: list[dict[str, Any] | None] = [None] * len(items)
    wanted: list[tuple[int, tuple[str, bytes | None, int | None]]] = []
    for k, (i, item) in enumerate(items):
        if item.doc_id not in allowed:
            await audit_refusal(request, "FORBIDDEN: may not read", auth=auth, resource=item.doc_id)
            results[k] = _item_error(item.doc_id, Forbidden(f"you may not read {item.doc_id}"))
            continue
        try:
            sv = decode_b64(item.state_vector, f"docs.{i}.state_vector") if item.state_vector else None
        except ApiError as e:
            results[k] = _item_error(item.doc_id, e)
            continue
        wanted.append((k, (item.doc_id, sv, item.since)))
    answers = await svc.engine.pull_many(auth.principal, [w for _, w in wanted]) if wanted else []
    for (k, (doc_id, _, _)), res in zip(wanted, answers):
        results[k] = _item_error(doc_id, res) if isinstance(res, BaseException) else _pull_json(res)
    data_out = {"device_id": auth.device_id, "server_time": svc.engine.server_time(), "results": results}
    if batch.all:
        return ok(data_out, next_cursor=next_cursor)
    return ok(data_out)


routes = [
    Route("/api/sync/push", push, methods=["POST"]),
    route("/api/sync/pull", GET=pull, POST=pull_batch),
    Route("/api/sync/status", status, methods=["GET"]),
]
