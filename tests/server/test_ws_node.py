"""A stock y-websocket client (Node, tests/ws_node) against the server, with pycrdt clients.

The Node client writes valid writes (schema/documents.py key scheme) as the logged-in user,
role and device; the engine refuses anything else.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from schema import tables as t

from test_ws_kit import TIMEOUT, customer_doc, job_doc, live_server  # type: ignore[import-not-found]

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parents[1] / "ws_node"


def _installed() -> bool:
    return (NODE_DIR / "node_modules" / ".package-lock.json").exists() and \
        (NODE_DIR / "node_modules" / "y-websocket" / "package.json").exists()


def require_node() -> str:
    """The node binary, with tests/ws_node installed (npm ci); skip locally, fail in CI."""
    node, npm = shutil.which("node"), shutil.which("npm")
    reason = None
    if node is None or (npm is None and not _installed()):
        reason = "node/npm not found on PATH"
    elif not _installed():
        lock_path = Path(tempfile.gettempdir()) / f"ws-node-{hashlib.sha1(str(NODE_DIR).encode()).hexdigest()[:12]}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _installed():
                proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode != 0 or not _installed():
                    reason = f"npm ci failed in {NODE_DIR}: {proc.stderr[-1000:]}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    assert node is not None
    return node


class NodeClient:
    """One ``node client.mjs`` process: send commands, await events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, node: str) -> "NodeClient":
        proc = await asyncio.create_subprocess_exec(node, str(NODE_DIR / "client.mjs"), cwd=NODE_DIR,
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def cmd(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()

    async def event(self, *names: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event named one of ``names`` (others are kept in ``events``)."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"node client exited: {err.decode()[-2000:]}")
            ev = json.loads(line)
            self.events.append(ev)
            if ev["event"] == "error":
                raise AssertionError(ev["message"])
            if ev["event"] in names:
                return ev

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.cmd(cmd="close")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def node_client():
    node = require_node()
    clients: list[NodeClient] = []

    async def make() -> NodeClient:
        c = await NodeClient.start(node)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def server(db_url: str, tmp_path: Path):
    async with live_server(db_url, tmp_path / "keys") as s:
        yield s


async def connect_node(node_client, server, session, doc_id: str) -> NodeClient:
    n = await node_client()
    await n.cmd(cmd="connect", url=server.ws_url, room=doc_id, token=session.access_token,
                user=session.user["id"], role=session.user["role"], device=session.device_id)
    await n.event("synced")
    return n


async def test_node_and_python_clients_see_each_others_edits(server, node_client):
    office = await server.user_session("office")
    js_user = await server.user_session("office")
    doc_id = job_doc()
    py = await (await server.client(office, doc_id)).sync()
    await py.write(doc_id, title="From Python", status="lead", customer_id=str(uuid.uuid4()))
    await py.wait_for(lambda: py.of(0, 0))

    js = await connect_node(node_client, server, js_user, doc_id)
    await js.cmd(cmd="wait", field="title", value="From Python", timeout=10_000)
    assert (await js.event("seen", "timeout"))["event"] == "seen"

    await js.cmd(cmd="set", field="title", value="From Node")
    await js.event("done")
    await py.wait_for(lambda: py.fields().get("title") == "From Node")
    # the Node write was accepted as the Node user's device, through the engine
    await js.cmd(cmd="set", field="description", value="ünïcode ✓")
    await py.wait_for(lambda: py.fields().get("description") == "ünïcode ✓")
    async with server.db.connect() as conn:
        from sqlalchemy import select
        rows = (await conn.execute(select(t.oplog.c.user_id, t.oplog.c.device_id))).all()
    assert (js_user.user["id"], js_user.device_id) in {(r.user_id, r.device_id) for r in rows}
    await py.close()


async def test_node_client_offline_edits_and_a_second_node_client(server, node_client):
    a_user = await server.user_session("office")
    b_user = await server.user_session("owner")
    doc_id = customer_doc()
    a = await connect_node(node_client, server, a_user, doc_id)
    await a.cmd(cmd="set", field="name", value="ACME Homes")
    await a.event("done")
    b = await connect_node(node_client, server, b_user, doc_id)
    await b.cmd(cmd="wait", field="name", value="ACME Homes", timeout=10_000)
    assert (await b.event("seen", "timeout"))["event"] == "seen"
    await b.cmd(cmd="set", field="phone", value="+1 555 0100")
    await b.event("done")
    await a.cmd(cmd="wait", field="phone", value="+1 555 0100", timeout=10_000)
    assert (await a.event("seen", "timeout"))["event"] == "seen"
    # a late pycrdt client sees both, from the server's state
    py = await (await server.client(await server.user_session("office"), doc_id)).sync()
    assert py.fields() == {"name": "ACME Homes", "phone": "+1 555 0100"}
    await py.close()


async def test_node_client_is_told_when_refused(server, node_client):
    crew = await server.user_session("crew")
    n = await node_client()
    await n.cmd(cmd="connect", url=server.ws_url, room=job_doc(), token=crew.access_token,
                user=crew.user["id"], role="crew", device=crew.device_id)
    ev = await n.event("close")
    assert ev["code"] == 4403
    # y-websocket 3 does not retry 4400-4499: no second close event arrives
    n2 = await node_client()
    await n2.cmd(cmd="connect", url=server.ws_url, room=job_doc(), token="bad",
                 user="x", role="office", device="d")
    assert (await n2.event("close"))["code"] == 4401
