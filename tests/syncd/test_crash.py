"""kill -9 the daemon at random points during a stream of updates, restart, repeat.

No acknowledged update may be lost or duplicated, the devices' outboxes drain after the last
restart, every device's edits are on the server, and ``syncd verify`` passes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from schema import tables as t
from schema.db import create_engine
from server.auth.passwords import hash_password

from engine_helpers import BareDevice, add_user, job_doc  # type: ignore[import-not-found]

ROUNDS = 5
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``syncd serve`` in a child process that can be killed without warning."""

    def __init__(self, db_url: str, workdir: Path) -> None:
        self.db_url, self.workdir, self.port = db_url, workdir, free_port()
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.db_url, "SYNCD_API_RATE_LIMIT": "1000000",
               "SYNCD_LOGIN_RATE_LIMIT": "1000", "PYTHONUNBUFFERED": "1"}
        env.pop("REDIS_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd.cli", "serve", "--port", str(self.port), "--no-migrate"],
            cwd=self.workdir, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        # readiness: uvicorn says so on stderr once the lifespan (engine start) is complete
        lines = []
        while True:
            line = await asyncio.to_thread(self.proc.stderr.readline)
            lines.append(line)
            if "Application startup complete" in line:
                break
            if not line:
                raise AssertionError("syncd serve did not start:\n" + "".join(lines))
        self.drain = asyncio.create_task(asyncio.to_thread(self.proc.stderr.read))

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)
        await self.drain
        self.proc.stderr.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.mark.slow
async def test_kill_9_at_random_points_loses_and_duplicates_nothing(db_url, tmp_path):
    rnd = random.Random(int.from_bytes(os.urandom(4), "big"))
    db = create_engine(db_url)
    devices: list[BareDevice] = []
    docs: dict[str, list[str]] = {}
    try:
        for i in range(3):
            uid = await add_user(db, "office", email=f"dev{i}@crash.test")
            async with db.begin() as conn:
                await conn.execute(t.users.update().where(t.users.c.id == uid).values(
                    password_hash=hash_password("pw-crash-test")))
            dev = BareDevice(uid, "office")
            devices.append(dev)
            docs[dev.principal.device_id] = [job_doc() for _ in range(3)]
        outbox: dict[str, list[tuple[str, bytes]]] = {d.principal.device_id: [] for d in devices}
        acked: dict[bytes, int] = {}  # digest -> seq, as acknowledged to the device
        crash = {"at": 0, "event": asyncio.Event()}
        tokens: dict[str, str] = {}
        daemon = Daemon(db_url, tmp_path)

        async def stream(client: httpx.AsyncClient, dev: BareDevice, n: int) -> None:
            for _ in range(n):
                doc_id = rnd.choice(docs[dev.principal.device_id])
                outbox[dev.principal.device_id].append(
                    (doc_id, dev.set_fields(doc_id, title=f"t{rnd.randrange(10**6)}", estimate=float(rnd.randrange(999)))))
                await flush(client, dev, batch=rnd.randint(1, 4))

        async def flush(client: httpx.AsyncClient, dev: BareDevice, batch: int = 100) -> None:
            box = outbox[dev.principal.device_id]
            while box:
                items = box[:batch]
                r = await client.post("/api/sync/push", headers={"authorization": f"Bearer {tokens[dev.principal.device_id]}"},
                                      json={"updates": [{"doc_id": d, "update": base64.b64encode(u).decode()} for d, u in items]})
                assert r.status_code == 200, r.text
                results = r.json()["data"]["results"]
                for (d, u), res in zip(items, results):
                    assert "error" not in res, res
                    digest = hashlib.sha256(u).digest()
                    if digest in acked:
                        assert acked[digest] == res["seq"], "a re-sent update got a different answer"
                    acked[digest] = res["seq"]
                del box[:len(items)]
                if len(acked) >= crash["at"]:
                    crash["event"].set()

        for rnd_no in range(ROUNDS):
            await daemon.start()
            async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
                if not tokens:
                    for dev in devices:
                        r = await client.post("/api/auth/login", json={
                            "email": (await _email(db, dev.principal.user_id)), "password": "pw-crash-test",
                            "device_id": dev.principal.device_id})
                        assert r.status_code == 200, r.text
                        tokens[dev.principal.device_id] = r.json()["data"]["access_token"]
                for dev in devices:  # whatever was in flight at the last crash is re-sent
                    await flush(client, dev)
                # let a random number of acknowledgements happen, then kill -9 mid-stream
                crash["at"], crash["event"] = len(acked) + rnd.randint(3, 60), asyncio.Event()
                streams = [asyncio.create_task(stream(client, dev, 1000)) for dev in devices]
                await asyncio.wait([asyncio.create_task(crash["event"].wait()), *streams],
                                   return_when=asyncio.FIRST_COMPLETED)
                await daemon.kill()
                for s in streams:
                    s.cancel()
                await asyncio.gather(*streams, return_exceptions=True)
        await daemon.start()
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            for dev in devices:
                await flush(client, dev)
            for dev in devices:  # every device's edits are on the server
                for doc_id in docs[dev.principal.device_id]:
                    if doc_id not in dev.docs:
                        continue
                    r = await client.get("/api/sync/pull", params={"doc_id": doc_id},
                                         headers={"authorization": f"Bearer {tokens[dev.principal.device_id]}"})
                    assert r.status_code == 200, r.text
                    from pycrdt import Doc, Map
                    server = Doc()
                    server.apply_update(base64.b64decode(r.json()["data"]["update"]))
                    assert server.get("fields", type=Map).to_py() == dev.docs[doc_id].get("fields", type=Map).to_py()
        await daemon.kill()
        async with db.connect() as conn:
            rows = (await conn.execute(select(t.oplog.c.digest, t.oplog.c.seq))).all()
        stored = {bytes(d): s for d, s in rows}
        assert len(stored) == len(rows)  # no update stored twice
        for digest, seq in acked.items():  # every acknowledged update is there, at its acknowledged seq
            assert stored.get(digest) == seq
        v = subprocess.run([sys.executable, "-m", "syncd.cli", "verify", "--json"], cwd=tmp_path,
                           env={**os.environ, "DATABASE_URL": db_url}, capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
    finally:
        await db.dispose()


async def _email(db, uid: str) -> str:
    async with db.connect() as conn:
        return (await conn.execute(select(t.users.c.email).where(t.users.c.id == uid))).scalar_one()
