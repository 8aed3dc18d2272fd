"""Helpers for the live-sync tests (no tests here): a real uvicorn server, a pycrdt client.

``live_server(db_url, keys_dir, ...)`` serves ``create_app`` with uvicorn on a free loopback
port inside the test's event loop; ``YClient`` speaks y-protocols over the ``websockets``
library with pycrdt's own sync helpers. Waiting is always on received messages (with a
timeout), never on sleeps.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
import uvicorn
from pycrdt import Doc, Map, YMessageType, YSyncMessageType, create_sync_message, create_update_message, \
    handle_sync_message, read_message, write_message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from schema import documents as D
from server.app import create_app
from server.ws import WsSettings
from syncd.users import add_user

from server_testkit import PASSWORD, Device, Session  # type: ignore[import-not-found]

TIMEOUT = 15.0


def job_doc() -> str:
    return D.doc_id_for("job", str(uuid.uuid4()))


def customer_doc() -> str:
    return D.doc_id_for("customer", str(uuid.uuid4()))


def fields_of(doc: Doc) -> dict[str, Any]:
    """field -> value of the live writes (one live write per field in these tests)."""
    return {k.split("/")[0]: v["v"] for k, v in doc.get("fields", type=Map).items()}


@dataclass
class LiveServer:
    app: Any
    port: int
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def db(self) -> Any:
        return self.app.state.db

    async def add_user(self, role: str) -> dict[str, Any]:
        return await add_user(self.db, f"{role}-{uuid.uuid4().hex[:8]}@example.com", f"{role} user", role, PASSWORD)

    async def login(self, email: str) -> Session:
        r = await self.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        d = r.json()["data"]
        return Session(d["access_token"], d["refresh_token"], d["device_id"], d["csrf_token"], d["user"])

    async def user_session(self, role: str) -> Session:
        return await self.login((await self.add_user(role))["email"])

    async def count(self, table: Any) -> int:
        from sqlalchemy import func, select

        async with self.db.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(table))).scalar_one()

    async def client(self, session: Session | None, doc_id: str, **kw: Any) -> "YClient":
        return await YClient.open(self.ws_url, doc_id, session, **kw)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


@asynccontextmanager
async def live_server(db_url: str, keys_dir: Path, redis_url: str | None = None, *,
                      ws_settings: WsSettings | None = None, **overrides: Any) -> AsyncIterator[LiveServer]:
    """``create_app`` served by uvicorn on 127.0.0.1 until the block ends."""
    ready = asyncio.Event()

    @asynccontextmanager
    async def started(app: Any) -> AsyncIterator[None]:
        ready.set()
        yield

    settings = {"login_rate_limit": 10_000, "api_rate_limit": 100_000, **overrides}
    app = create_app(db_url, redis_url, keys_dir=str(keys_dir), extensions=[started], **settings)
    app.state.ws_settings = ws_settings or WsSettings(channel_prefix=f"test:{uuid.uuid4().hex[:8]}:")
    sock = free_socket()
    port = sock.getsockname()[1]
    # as deployed: no per-message deflate (it would compress each once-encoded broadcast per
    # connection), frames bounded just above the app's own limit
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", ws="websockets-sansio",
                                           ws_per_message_deflate=False, ws_max_size=4 << 20))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        done, _ = await asyncio.wait([task, asyncio.ensure_future(ready.wait())], timeout=TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            raise RuntimeError("uvicorn stopped during startup")
        assert ready.is_set(), "the app did not start in time"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
            yield LiveServer(app, port, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)
        sock.close()


@dataclass
class Received:
    kind: int
    sub: int | None
    payload: bytes


@dataclass
class YClient:
    """A y-protocols client: a pycrdt ``Doc`` synced over one WebSocket."""

    ws: ClientConnection
    doc: Doc
    device: Device | None
    messages: list[Received] = field(default_factory=list)
    closed: tuple[int, str] | None = None
    #: answer the server's sync step 1 (a stock client always does)
    answer_step1: bool = True
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task | None = None

    @classmethod
    async def open(cls, ws_url: str, doc_id: str, session: Session | None, *, token: str | None = None,
                   headers: dict[str, str] | None = None, origin: str | None = None, query: bool = True,
                   answer_step1: bool = True) -> "YClient":
        """Connect to ``{ws_url}/{doc_id}`` (token in the query unless ``query=False``)."""
        tok = token if token is not None else (session.access_token if session else None)
        url = f"{ws_url}/{doc_id}" + (f"?token={tok}" if tok is not None and query else "")
        ws = await connect(url, additional_headers=headers or {}, origin=origin, max_size=8 << 20,
                           open_timeout=TIMEOUT)
        device = session.device() if session else None
        doc = Doc(client_id=device.client_id) if device else Doc()
        if device is not None:
            device.docs[doc_id] = doc
        c = cls(ws, doc, device, answer_step1=answer_step1)
        c._task = asyncio.create_task(c._read())
        return c

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if isinstance(raw, str):
                    continue
                kind = raw[0]
                if kind == YMessageType.SYNC:
                    sub = raw[1]
                    if sub != YSyncMessageType.SYNC_STEP1 or self.answer_step1:
                        reply = handle_sync_message(raw[1:], self.doc)
                        if reply is not None:
                            await self.ws.send(reply)
                    rec = Received(kind, sub, read_message(raw[2:]))
                else:
                    rec = Received(kind, None, raw[1:])
                async with self._changed:
                    self.messages.append(rec)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            async with self._changed:
                self.closed = (rcvd.code, rcvd.reason) if rcvd else (1006, "")
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every message); return its value."""
        async def check() -> Any:
            async with self._changed:
                while True:
                    v = predicate()
                    if v:
                        return v
                    if self.closed is not None:
                        raise AssertionError(f"connection closed {self.closed} while waiting")
                    await self._changed.wait()
        return await asyncio.wait_for(check(), timeout)

    async def wait_closed(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        async def check() -> tuple[int, str]:
            async with self._changed:
                while self.closed is None:
                    await self._changed.wait()
                return self.closed
        return await asyncio.wait_for(check(), timeout)

    def of(self, kind: int, sub: int | None = None) -> list[Received]:
        return [m for m in self.messages if m.kind == kind and (sub is None or m.sub == sub)]

    @property
    def updates(self) -> list[bytes]:
        """Payloads of the update messages received (type 0/2)."""
        return [m.payload for m in self.of(YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE)]

    async def sync(self) -> "YClient":
        """Send sync step 1 and wait for the answer (sync step 2)."""
        n = len(self.of(YMessageType.SYNC, YSyncMessageType.SYNC_STEP2))
        await self.ws.send(create_sync_message(self.doc))
        await self.wait_for(lambda: len(self.of(YMessageType.SYNC, YSyncMessageType.SYNC_STEP2)) > n)
        return self

    async def write(self, doc_id: str, **values: Any) -> bytes:
        """Write fields as this device (schema key scheme) and send the update; return it."""
        assert self.device is not None
        update = self.device.set_fields(doc_id, **values)
        await self.ws.send(create_update_message(update))
        return update

    async def answer(self, state_vector: bytes) -> None:
        """Send sync step 2: what a peer with ``state_vector`` lacks of this doc."""
        await self.ws.send(bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2])
                           + write_message(self.doc.get_update(state_vector)))

    async def send(self, data: bytes | str) -> None:
        await self.ws.send(data)

    def fields(self) -> dict[str, Any]:
        return fields_of(self.doc)

    async def close(self) -> None:
        await self.ws.close()
        if self._task is not None:
            await self._task
