"""Live sync over WebSocket: ``GET /ws/{doc_id}`` speaking the standard Yjs sync protocol.

A stock y-websocket provider connects with ``new WebsocketProvider("wss://host/ws", docId,
ydoc, {params: {token}})``; pycrdt's sync helpers work the same way. This module is the
transport: authentication at connect, a reader, a writer with a bounded queue, pushes into
the engine. Every protocol decision is made by :mod:`server.ws_protocol`, every broadcast
by :mod:`server.fanout`.

Connect (nothing is read from the socket before all of this is done):

1. Credentials: ``?token=<access token>``, else an ``Authorization: Bearer`` header, else the
   ``access_token`` cookie. With the cookie (sent by browsers on their own) the ``Origin``
   must be this host or one of ``WsSettings.allowed_origins``. Failures are accepted and
   closed at once with 4401 (no or bad credentials) or 4403 (foreign origin), and audited,
   so a client can tell them apart; no frame is ever processed.
2. ``policy.can_read`` or close 4403; ``policy.can_push`` decides if the connection may write.
3. Join the document's room, send sync step 1 (the server's state vector; writable only)
   and the room's awareness states. The client's sync step 1 is answered with sync step 2
   = ``engine.pull(principal, doc_id, client_state_vector)`` (an unknown document is empty).

Client updates (step 2 / update) go through ``engine.push`` in arrival order, pipelined (at
most ``max_inflight_pushes`` in flight, then reading pauses). They are broadcast only after
the durable commit, never back to this connection. A refusal closes the connection with
the code of :func:`server.ws_protocol.close_code_for` and the engine's reason, except
missing dependencies: the server answers with sync step 1 and the client re-sends what the
server lacks (standard y-protocols behaviour). The access token's expiry closes with 4401, and
so does ending its session (logout, refresh-token reuse; from another process too with Redis,
see :mod:`server.auth.notices`) or changing its user (re-checked on
``Sessions.invalidate_user``).

Fan-out updates that commit while the client's first step 1 is unanswered are not sent
(the answer contains them) and those committing while it is being computed are held and
sent after it, so a client never receives an update before the state it builds on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from pycrdt import get_state
from starlette.requests import HTTPConnection
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from schema.documents import parse_doc_id
from syncd.errors import ClientIdConflict, Forbidden as SyncForbidden, SyncError, Unavailable, UnknownDocument
from syncd.protocol import Principal

from . import policy, replication
from .auth.notices import auth_notices
from .deps import Auth, audit_refusal, authenticate, bearer_token
from .errors import ApiError, Forbidden
from .fanout import CHANNEL_PREFIX, Fanout, Room
from .services import Services, services
from .ws_protocol import (CLOSE_BAD_REQUEST, CLOSE_FORBIDDEN, CLOSE_INTERNAL, CLOSE_TRY_AGAIN_LATER,
                          CLOSE_UNAUTHORIZED, EMPTY_UPDATE, Action, AnswerAwarenessQuery, AnswerStep1, Close,
                          Limits, Push, RelayAwareness, Send, SyncSession, close_code_for, close_reason, sync_step2)

__all__ = ["routes", "WsSettings", "extension", "origin_allowed", "LiveConnection", "RedactTokens"]

log = logging.getLogger("server.ws")

_AUDITED = (SyncForbidden, ClientIdConflict)
_AWAITING, _PULLING, _LIVE = "awaiting", "pulling", "live"


@dataclass(frozen=True)
class WsSettings:
    """Live-sync settings (``app.state.ws_settings``; defaults from the environment)."""

    #: origins allowed besides this host for cookie-authenticated connections, e.g.
    #: ``"https://app.example.com"`` (env ``WS_ALLOWED_ORIGINS``, comma separated)
    allowed_origins: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    #: per-connection send queue: bytes and messages queued before the connection is closed
    #: as too slow (1013; it resyncs on reconnect). One message is always allowed.
    send_queue_bytes: int = 8 << 20
    send_queue_messages: int = 4096
    max_inflight_pushes: int = 64
    close_timeout_s: float = 5.0
    #: Redis channels are ``{channel_prefix}{doc_id}`` (env ``WS_CHANNEL_PREFIX``; several
    #: deployments can share one Redis)
    channel_prefix: str = CHANNEL_PREFIX

    @classmethod
    def from_env(cls, max_update_bytes: int = 1 << 20) -> "WsSettings":
        origins = frozenset(_norm_origin(o) for o in os.environ.get("WS_ALLOWED_ORIGINS", "").split(",") if o.strip())
        return cls(allowed_origins=origins, limits=Limits(max_frame_bytes=max_update_bytes + 16),
                   channel_prefix=os.environ.get("WS_CHANNEL_PREFIX") or CHANNEL_PREFIX)


def _norm_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """May a cookie-authenticated WebSocket from ``origin`` connect to ``host``?

    No Origin means no browser (browsers always send it on WebSocket handshakes), so no
    cross-site risk. Otherwise the origin must be this host (scheme http/https) or listed.
    """
    if origin is None:
        return True
    o = _norm_origin(origin)
    if o in allowed:
        return True
    parts = urlsplit(o)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == (host or "").lower()


# --- connect ------------------------------------------------------------------------------

async def _authenticate(ws: WebSocket, settings: WsSettings) -> tuple[Auth, float | None]:
    """The caller and the expiry of its token; raise Unauthorized / Forbidden."""
    cfg = services(ws).config
    token = ws.query_params.get("token")
    if token:
        # verify exactly as the HTTP API does, with the query token as the bearer token
        try:
            header = b"Bearer " + token.encode("latin-1")
        except UnicodeEncodeError:
            header = b"Bearer invalid"
        scope = dict(ws.scope)
        scope["headers"] = [(k, v) for k, v in ws.scope["headers"] if k not in (b"authorization", b"cookie")]
        scope["headers"].append((b"authorization", header))
        auth = await authenticate(HTTPConnection(scope))
    else:
        token = bearer_token(ws)
        if token is None:
            token = ws.cookies.get(cfg.access_cookie)
            if token and not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"),
                                            settings.allowed_origins):
                raise Forbidden(f"origin {ws.headers.get('origin')!r} may not use cookie authentication here",
                                code="ORIGIN_FORBIDDEN")
        auth = await authenticate(ws)
    return auth, float(auth.expires_at) if auth.expires_at is not None else None


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept and close at once, so the client sees why (a refused handshake shows no code)."""
    await ws.accept()
    await ws.close(code, close_reason(reason))


async def sync_endpoint(ws: WebSocket) -> None:
    svc = services(ws)
    settings: WsSettings = ws.app.state.ws_settings
    fanout: Fanout = ws.app.state.fanout
    doc_id = ws.path_params["doc_id"]
    auth: Auth | None = None
    try:
        auth, exp = await _authenticate(ws, settings)
    except ApiError as e:
        await audit_refusal(ws, f"{e.code}: {e.message}", resource=doc_id[:200])
        await _refuse(ws, CLOSE_FORBIDDEN if e.status == 403 else CLOSE_UNAUTHORIZED, f"{e.code}: {e.message}")
        return
    try:
        parse_doc_id(doc_id)
    except ValueError:
        await _refuse(ws, CLOSE_BAD_REQUEST, f"invalid document id {doc_id[:60]!r}")
        return
    principal = auth.principal
    if not await policy.can_read(svc, principal, doc_id):
        await audit_refusal(ws, "FORBIDDEN: may not read", auth=auth, resource=doc_id)
        await _refuse(ws, CLOSE_FORBIDDEN, f"FORBIDDEN: you may not read {doc_id}")
        return
    writable = await policy.can_push(svc, principal, doc_id)
    await ws.accept()
    await LiveConnection(ws, svc, fanout, settings, auth, doc_id, writable, exp).run()


# --- one connection ---------------------------------------------------------------------------

_DETACHED: set[asyncio.Task[None]] = set()  # refusals outliving their connection's task group


class _Outbox:
    """A bounded FIFO of frames for the writer."""

    def __init__(self, max_bytes: int, max_messages: int) -> None:
        self.max_bytes, self.max_messages = max_bytes, max_messages
        self._q: deque[bytes] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()

    def put(self, data: bytes) -> bool:
        if self._q and (self._bytes + len(data) > self.max_bytes or len(self._q) >= self.max_messages):
            return False
        self._q.append(data)
        self._bytes += len(data)
        self._ready.set()
        return True

    async def get(self) -> bytes:
        while not self._q:
            self._ready.clear()
            await self._ready.wait()
        data = self._q.popleft()
        self._bytes -= len(data)
        return data


class LiveConnection:
    """One client on one document: a :class:`server.fanout.Member`."""

    def __init__(self, ws: WebSocket, svc: Services, fanout: Fanout, settings: WsSettings, auth: Auth,
                 doc_id: str, writable: bool, token_exp: float | None) -> None:
        self.ws, self.svc, self.fanout, self.settings = ws, svc, fanout, settings
        self.auth = auth
        self.principal: Principal = auth.principal
        self.doc_id = doc_id
        self.token_exp = token_exp
        self.session = SyncSession(writable=writable, limits=settings.limits)
        self.closed_with: tuple[int, str] | None = None
        self._outbox = _Outbox(settings.send_queue_bytes, settings.send_queue_messages)
        self._phase = _AWAITING
        self._held: list[tuple[bytes, int]] = []
        self._finished = asyncio.Event()
        self._inflight = asyncio.Semaphore(settings.max_inflight_pushes)
        self._pushing = 0  # submitted, not settled
        self._drained = asyncio.Event()
        self._drained.set()
        self._tg: asyncio.TaskGroup | None = None
        self._writer: asyncio.Task[None] | None = None
        self._room: Room | None = None

    # --- Member ---------------------------------------------------------------------------
    def deliver(self, message: bytes, seq: int) -> None:
        if self._phase == _LIVE:
            self._put(message)
        elif self._phase == _PULLING:
            self._held.append((message, seq))
        # _AWAITING: the answer to the client's first sync step 1 will contain it

    def send(self, message: bytes) -> None:
        self._put(message)

    def close(self, code: int, reason: str) -> None:
        if self.closed_with is not None or self._tg is None:
            return
        self.closed_with = (code, reason)
        self.session.closed = True
        if self._finished.is_set():  # the client is gone already
            return
        if self._writer is not None:
            self._writer.cancel()  # drop what is queued; the client resyncs on reconnect
        self._tg.create_task(self._send_close(code, reason))

    def _put(self, data: bytes) -> None:
        if self.closed_with is not None or self._finished.is_set():
            return
        if not self._outbox.put(data):
            self.close(CLOSE_TRY_AGAIN_LATER, "too slow: send queue full; reconnect to resync")

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timer = None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._room = self.fanout.join(self.doc_id, self)
                self._writer = tg.create_task(self._write_loop(), name=f"ws-writer {self.doc_id}")
                if self.token_exp is not None:
                    timer = loop.call_later(max(0.0, self.token_exp - time.time()), self.close,
                                            CLOSE_UNAUTHORIZED, "token expired: reconnect with a fresh token")
                if await self._open():
                    reader = tg.create_task(self._read_loop(), name=f"ws-reader {self.doc_id}")
                    await self._finished.wait()
                    reader.cancel()
                else:
                    await self._finished.wait()
                if self._writer is not None:
                    self._writer.cancel()
                self._leave()
                await self._drained.wait()  # pushes in flight settle (refusals audited) in the group
        finally:
            if timer is not None:
                timer.cancel()
            self._leave()

    def _leave(self) -> None:
        if self._room is not None:
            self.fanout.leave(self._room, self)
            self._room = None

    async def _open(self) -> bool:
        try:
            await self.fanout.catch_up(self.doc_id)
            if self.session.writable:
                await self._perform(self.session.open(await self._server_state_vector()))
        except SyncError as e:
            self.close(close_code_for(e), f"{e.code}: {e.message}")
            return False
        snapshot = self._room.awareness_snapshot() if self._room else None
        if snapshot is not None:
            self.send(snapshot)
        return True

    async def _server_state_vector(self) -> bytes:
        engine = self.svc.engine
        try:
            fn = getattr(engine, "state_vector", None)
            if fn is not None:
                return await fn(self.doc_id)
            # no cheap accessor on this engine: derive it from the whole state
            return get_state((await engine.pull(self.principal, self.doc_id)).update)
        except UnknownDocument:
            return b"\x00"

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code, reason), self.settings.close_timeout_s)
        except (asyncio.TimeoutError, WebSocketDisconnect, OSError, RuntimeError):
            pass  # gone already, or too stuck to say goodbye: returning closes the transport
        finally:
            self._finished.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self.ws.send_bytes(await self._outbox.get())
        except (WebSocketDisconnect, OSError):
            self._finished.set()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if self.closed_with is not None:
                    continue
                data = msg.get("bytes")
                if data is None:
                    actions = self.session.receive_text()
                else:
                    actions = self.session.receive(data, loop.time())
                await self._perform(actions)
        except (WebSocketDisconnect, OSError):
            pass
        except Exception:
            log.exception("live sync of %s failed", self.doc_id)
            self.close(CLOSE_INTERNAL, "internal error")
            return
        self._finished.set()

    # --- actions --------------------------------------------------------------------------
    async def _perform(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._put(a.data)
            elif isinstance(a, Push):
                await self._inflight.acquire()  # back-pressure: stop reading when too many are pending
                self._submit(a.update)
            elif isinstance(a, AnswerStep1):
                await self._answer_step1(a.state_vector)
            elif isinstance(a, RelayAwareness):
                if self._room is not None:
                    self._room.relay_awareness(self, a.entries)
            elif isinstance(a, AnswerAwarenessQuery):
                snapshot = self._room.awareness_snapshot() if self._room else None
                if snapshot is not None:
                    self.send(snapshot)
            elif isinstance(a, Close):
                self.close(a.code, a.reason)

    async def _answer_step1(self, state_vector: bytes) -> None:
        first = self._phase == _AWAITING
        if first:
            self._phase = _PULLING
        try:
            res = await self.svc.engine.pull(self.principal, self.doc_id, state_vector)
            update, seq = res.update, res.seq
        except UnknownDocument:
            update, seq = EMPTY_UPDATE, 0
        except SyncError as e:
            self.close(close_code_for(e), f"{e.code}: {e.message}")
            return
        self._put(sync_step2(update))
        if first:
            held, self._held = self._held, []
            self._phase = _LIVE
            for message, s in held:
                if s > seq:
                    self._put(message)

    def _submit(self, update: bytes) -> None:
        """Hand one update to the engine, in frame order; its ack settles in :meth:`_pushed`
        (no task per push: the engine's future calls back)."""
        room = self._room
        if room is not None:
            room.pushing(update, self)
        self._pushing += 1
        self._drained.clear()
        try:
            fut = self.svc.engine.submit(self.principal, self.doc_id, update)
        except SyncError as e:  # refused before queueing (size, envelope): the same path
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(e)
        fut.add_done_callback(lambda f: self._pushed(f, update, room))

    def _pushed(self, fut: "asyncio.Future[Any]", update: bytes, room: Room | None) -> None:
        committed = False
        try:
            err = fut.exception() if not fut.cancelled() else Unavailable("the sync engine stopped; retry")
            if err is None:
                committed = not fut.result().duplicate
            elif isinstance(err, SyncError):
                self._spawn(self._refused(err))
            else:
                log.error("push to %s failed: %s: %s", self.doc_id, type(err).__name__, err)
                self.close(CLOSE_INTERNAL, "internal error")
        finally:
            if room is not None:
                room.push_settled(update, self, committed)
            self._inflight.release()
            self._pushing -= 1
            if not self._pushing:
                self._drained.set()

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in the connection's task group (run() keeps it open until every push
        settled); if the group already failed, on its own, so a refusal is still audited."""
        try:
            if self._tg is None:
                raise RuntimeError("no task group")
            self._tg.create_task(coro)
        except RuntimeError:
            task = asyncio.get_running_loop().create_task(coro)
            _DETACHED.add(task)
            task.add_done_callback(_DETACHED.discard)

    async def _refused(self, e: SyncError) -> None:
        if isinstance(e, _AUDITED):
            await audit_refusal(self.ws, f"{e.code}: {e.message}", auth=self.auth, resource=self.doc_id)
        await self._perform(self.session.push_refused(e))


# --- app wiring ---------------------------------------------------------------------------------

_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Hide ``?token=`` values in log lines (uvicorn logs WebSocket paths with their query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "token=" in a for a in record.args):
            record.args = tuple(_TOKEN_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _redact_server_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


@asynccontextmanager
async def extension(app: Any) -> AsyncIterator[Fanout]:
    """App extension: live fan-out (``app.state.fanout``) and closing revoked subscriptions."""
    svc: Services = app.state.services
    if getattr(app.state, "ws_settings", None) is None:
        app.state.ws_settings = WsSettings.from_env(svc.config.engine.max_update_bytes)
    settings: WsSettings = app.state.ws_settings
    _redact_server_logs()

    async def on_lost(doc_id: str, user_ids: frozenset[str]) -> None:
        for m in fanout.members(doc_id):
            if m.principal.user_id in user_ids and not await policy.can_read(svc, m.principal, doc_id):
                m.close(CLOSE_FORBIDDEN, "access revoked: you no longer see this document")

    watcher = replication.make_unassignment_listener(svc.engine, on_lost)
    fanout = Fanout(svc.engine, redis_url=getattr(app.state, "redis_url", None), limits=settings.limits,
                    prefix=settings.channel_prefix, on_remote_job=watcher.observe)
    app.state.fanout = fanout
    rechecks: set[asyncio.Task[None]] = set()

    async def recheck(members: list[Any]) -> None:
        for m in members:
            try:
                user, revoked = await svc.sessions.session_state(m.auth.user.id, m.auth.family_id)
            except Exception:
                log.exception("re-checking a live session failed")
                continue
            if user is None or not user.active or revoked or user.role != m.auth.user.role:
                m.close(CLOSE_UNAUTHORIZED, "session ended or account changed: log in again")

    def on_auth_notice(kind: str, ident: str) -> None:
        """A session was revoked or a user changed (here or, with Redis, in another process):
        live connections do not wait for their token to expire."""
        live = [m for room in fanout.rooms.values() for m in room.members if isinstance(m, LiveConnection)]
        if kind == "family":
            for m in live:
                if m.auth.family_id == ident:
                    m.close(CLOSE_UNAUTHORIZED, "session ended: log in again")
        elif kind == "user":
            mine = [m for m in live if m.auth.user.id == ident]
            if mine:
                task = asyncio.get_running_loop().create_task(recheck(mine))
                rechecks.add(task)
                task.add_done_callback(rechecks.discard)

    # session invalidations across processes live here until the app has its own extension slot
    async with watcher, fanout, auth_notices(app, on_auth_notice):
        yield fanout


routes = [WebSocketRoute("/ws/{doc_id}", sync_endpoint)]
