"""Several server processes on one PostgreSQL + Redis: live edits cross processes; Redis
outages are recovered by resync (fail-open)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from schema.db import create_engine
from server.auth.keys import load_or_create_keys
from syncd.users import add_user

from server_testkit import PASSWORD, REDIS_URL, Session, require_redis  # type: ignore[import-not-found]
from test_ws_kit import TIMEOUT, YClient, job_doc  # type: ignore[import-not-found]

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

SYNCD = str(Path(sys.executable).with_name("syncd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``syncd serve`` in a subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.log: list[str] = []
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def wait_started(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = await asyncio.wait_for(self.proc.stderr.readline(), TIMEOUT * 2)
            if not line:
                raise AssertionError("syncd serve exited:\n" + "".join(self.log[-50:]))
            self.log.append(line.decode(errors="replace"))
            if b"Application startup complete" in line:
                break
        self._drain = asyncio.create_task(self._keep_reading())

    async def _keep_reading(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace"))

    async def login(self, email: str) -> Session:
        r = await self.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        d = r.json()["data"]
        return Session(d["access_token"], d["refresh_token"], d["device_id"], d["csrf_token"], d["user"])

    async def client(self, session: Session, doc_id: str) -> YClient:
        return await (await YClient.open(self.ws_url, doc_id, session)).sync()

    async def stop(self) -> None:
        await self.http.aclose()
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if hasattr(self, "_drain"):
            await self._drain


@asynccontextmanager
async def serve(db_url: str, data_dir: Path, redis_url: str, prefix: str) -> AsyncIterator[ServerProcess]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "SYNCD_PORT": str(port),
           "SYNCD_DATA_DIR": str(data_dir), "WS_CHANNEL_PREFIX": prefix, "SYNCD_LOGIN_RATE_LIMIT": "1000",
           "SYNCD_API_RATE_LIMIT": "100000"}
    proc = await asyncio.create_subprocess_exec(SYNCD, "serve", "--no-migrate", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    sp = ServerProcess(proc, port)
    try:
        await sp.wait_started()
        yield sp
    finally:
        await sp.stop()


class TcpProxy:
    """A loopback TCP proxy to Redis that can be cut (connections dropped, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        tasks = {asyncio.create_task(pipe(reader, up_w)), asyncio.create_task(pipe(up_r, writer))}
        self._pipes |= tasks
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pipes -= tasks
        self._conns -= {writer, up_w}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for w in list(self._conns):
            w.transport.abort()
        await asyncio.gather(*list(self._pipes), return_exceptions=True)

    async def stop(self) -> None:
        await self.cut()


def redis_port() -> int:
    from urllib.parse import urlsplit
    return urlsplit(REDIS_URL).port or 6379


@pytest.fixture
async def cluster(pg_url: str, tmp_path: Path):
    """Prepare two processes' shared state; yields a starter and users."""
    require_redis()
    load_or_create_keys(tmp_path / "data" / "keys")  # both processes sign and verify with one key
    db = create_engine(pg_url)
    emails = []
    for role in ("office", "office", "owner", "office"):
        u = await add_user(db, f"{role}-{uuid.uuid4().hex[:8]}@example.com", "user", role, PASSWORD)
        emails.append(u["email"])
    await db.dispose()
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    async with AsyncExitStack() as stack:
        async def start(redis_url: str = REDIS_URL) -> ServerProcess:
            return await stack.enter_async_context(serve(pg_url, tmp_path / "data", redis_url, prefix))
        yield start, emails


async def test_edit_through_one_process_reaches_a_client_of_the_other_live(cluster):
    start, emails = cluster
    a, b = await start(), await start()
    doc_id = job_doc()
    sa, sb = await a.login(emails[0]), await b.login(emails[1])
    on_a = await a.client(sa, doc_id)
    on_b = await b.client(sb, doc_id)
    await on_b.write(doc_id, title="Written on B", status="lead", customer_id=str(uuid.uuid4()))
    await on_a.wait_for(lambda: on_a.fields().get("title") == "Written on B")
    await on_a.write(doc_id, status="estimate")
    await on_b.wait_for(lambda: on_b.fields().get("status") == "estimate")
    # the writer never gets its own update back, across processes either
    assert len(on_b.updates) == 1 and len(on_a.updates) == 1
    # B's engine was caught up: a late joiner on B, and then a write on B building on A's
    late = await b.client(await b.login(emails[2]), doc_id)
    assert late.fields() == on_a.fields()
    await late.write(doc_id, description="late on B")
    await on_a.wait_for(lambda: on_a.fields().get("description") == "late on B")
    for c in (on_a, on_b, late):
        await c.close()


async def test_redis_outage_fails_open_and_resyncs_on_reconnect(cluster):
    start, emails = cluster
    proxy = TcpProxy(redis_port())
    await proxy.start()
    try:
        a = await start()
        b = await start(f"redis://127.0.0.1:{proxy.port}/0")
        doc_id = job_doc()
        on_a = await a.client(await a.login(emails[0]), doc_id)
        on_b = await b.client(await b.login(emails[1]), doc_id)
        on_b2 = await b.client(await b.login(emails[3]), doc_id)
        await on_a.write(doc_id, title="Before", status="lead", customer_id=str(uuid.uuid4()))
        await on_b.wait_for(lambda: on_b.fields().get("title") == "Before")  # B is subscribed

        await proxy.cut()
        # local fan-out on B goes on without Redis
        await on_b2.write(doc_id, description="B, during the outage")
        await on_b.wait_for(lambda: on_b.fields().get("description") == "B, during the outage")
        # A's commit during the outage cannot reach B yet
        await on_a.write(doc_id, title="A, during the outage")

        await proxy.start()
        # B resubscribes and resyncs its room; B announces the commits it could not publish
        await on_b.wait_for(lambda: on_b.fields().get("title") == "A, during the outage", timeout=30)
        await on_b2.wait_for(lambda: on_b2.fields().get("title") == "A, during the outage", timeout=30)
        await on_a.wait_for(lambda: on_a.fields().get("description") == "B, during the outage", timeout=30)
        # and live fan-out works again both ways
        await on_b.write(doc_id, address="after the outage")
        await on_a.wait_for(lambda: on_a.fields().get("address") == "after the outage")
        for c in (on_a, on_b, on_b2):
            await c.close()
        log = "".join(b.log)
        assert "Redis subscription lost" in log and "Redis publish failed" in log, log[-3000:]
        assert "token=eyJ" not in log  # access tokens are redacted from the server's log
    finally:
        await proxy.stop()
