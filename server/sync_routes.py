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
from syncd.protocol import PushAck

from . import policy
from .deps import Auth, audit_refusal, current_auth, requires
from .errors import ApiError, Forbidden, InvalidBase64, InvalidJson, ValidationFailed, error_body, ok, validation_details
from .replication import readable_heads_clause, reading
from .services import services

__all__ = ["routes", "PushItem", "PushBatch", "decode_b64"]

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
    log.error("push of %s failed unexpectedly", doc_id, exc_info=e)
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
    return ok({"doc_id": res.doc_id, "update": _b64(res.update), "seq": res.seq, "server_time": res.server_time})


@requires()
async def status(request: Request) -> Response:
    auth = current_auth(request)
    q: StatusQuery = _query(StatusQuery, request)
    h, a = t.doc_heads, t.device_doc_acks
    stmt = (select(h.c.doc_id, h.c.kind, h.c.last_seq, a.c.acked_seq)
            .select_from(h.outerjoin(a, and_(a.c.doc_id == h.c.doc_id, a.c.device_id == auth.device_id)))
            .order_by(h.c.doc_id).limit(q.limit + 1))
    if q.after:
        stmt = stmt.where(h.c.doc_id > q.after)
    readable = readable_heads_clause(auth.principal, h)
    if readable is not None:
        stmt = stmt.where(readable)
    async with reading(services(request).db) as conn:
        rows = (await conn.execute(stmt)).all()
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    docs = [{"doc_id": r.doc_id, "kind": r.kind, "seq": r.last_seq, "acked_seq": r.acked_seq or 0,
             "behind": max(0, r.last_seq - (r.acked_seq or 0))}
            for r in rows]
    next_cursor = rows[-1].doc_id if more and rows else None
    return ok({"device_id": auth.device_id, "server_time": services(request).engine.server_time(), "docs": docs},
              next_cursor=next_cursor)


routes = [
    Route("/api/sync/push", push, methods=["POST"]),
    Route("/api/sync/pull", pull, methods=["GET"]),
    Route("/api/sync/status", status, methods=["GET"]),
]
