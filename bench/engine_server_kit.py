"""Shared machinery of the server measurements (bench/engine_server.py); registers nothing.

* servers, each in its own process, started and stopped here: ours (``python -m syncd.cli
  serve``, exactly what ``syncd serve`` runs, on a scratch SQLite file or a scratch PostgreSQL
  database), Hocuspocus 4.7 (``bench/peers/hocuspocus.mjs``, default configuration, no
  persistence) and pycrdt-websocket 0.16 (``bench/peers_py/pycrdt_server.py``, uvicorn);
* identities for ours: users and devices inserted directly, access tokens minted with the
  server's own signing key and :class:`server.auth.tokens.TokenService` (a login costs an
  argon2id hash, ~22 ms, which would dominate the setup of 500 devices; one real login is
  timed by ``server.crew_initial_sync``);
* the Node load generator (``bench/peers/loadgen.mjs``) driven over stdin/stdout;
* a sampler of the server process (psutil: CPU, peak RSS) and of the whole machine.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from .registry import BENCH_DIR, Context, Skip

PEERS_DIR = BENCH_DIR / "peers"
REPO = BENCH_DIR.parent
STARTUP_TIMEOUT = 90.0
#: rate limits lifted for the benchmark (per user and per IP, per minute)
NO_LIMIT = str(10**9)


# --- node -----------------------------------------------------------------------------------

def _node_installed() -> bool:
    nm = PEERS_DIR / "node_modules"
    return (nm / ".package-lock.json").exists() and (nm / "@hocuspocus" / "server" / "package.json").exists() \
        and (nm / "ws" / "package.json").exists()


def require_node() -> str:
    """The node binary with bench/peers installed (``npm ci`` once, under a file lock)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        raise Skip("node not found on PATH")
    if not _node_installed():
        if npm is None:
            raise Skip("npm not found on PATH and bench/peers/node_modules is missing")
        lock_path = Path(tempfile.gettempdir()) / f"bench-peers-{hashlib.sha1(str(PEERS_DIR).encode()).hexdigest()[:12]}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _node_installed():
                print("  npm ci in bench/peers ...", file=sys.stderr, flush=True)
                proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS_DIR,
                                      capture_output=True, text=True, timeout=600)
                if proc.returncode != 0 or not _node_installed():
                    raise Skip(f"npm ci failed in bench/peers: {proc.stderr[-500:]}")
    return node


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- servers ---------------------------------------------------------------------------------

@dataclass
class Server:
    """A running server process."""

    name: str  # row label: ours-sqlite, ours-pg, hocuspocus, pycrdt-websocket
    kind: str  # ours | hocuspocus | pycrdt
    proc: asyncio.subprocess.Process
    port: int
    protocol: str  # loadgen framing: y | hocuspocus
    backend: str | None = None
    db: Any = None  # ours: AsyncEngine on the server's database (setup only)
    db_url: str | None = None
    keys_dir: str | None = None
    log_path: str | None = None
    pg_name: str | None = None  # ours on PostgreSQL: the scratch database
    admin_dsn: str | None = None
    _restart: Any = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, doc: str, token: str | None = None) -> str:
        if self.kind == "ours":
            return f"ws://127.0.0.1:{self.port}/ws/{doc}?token={token}"
        if self.kind == "pycrdt":
            return f"ws://127.0.0.1:{self.port}/{doc}"
        return f"ws://127.0.0.1:{self.port}/"

    async def restart(self) -> None:
        """Ours only: stop the process and start it again on the same database and keys."""
        await self._restart(self)

    def pg_sessions(self) -> int | None:
        """PostgreSQL sessions ever opened on the scratch database (pg_stat_database.sessions):
        a delta over a step counts the connections the server opened (pool churn)."""
        if self.pg_name is None:
            return None
        import psycopg

        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=3, autocommit=True) as c:
                r = c.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.pg_name,)).fetchone()
            return int(r[0]) if r else None
        except psycopg.Error:
            return None

    def exit_info(self) -> str:
        """'' while the process runs, else its exit status and the tail of its log."""
        if self.proc is None or self.proc.returncode is None:
            return ""
        return f" (server exited with {self.proc.returncode}: {_tail(self.log_path, 600)!r})"

    def log_problems(self) -> str:
        """Ours only: counts of error lines in the server log ('' if none)."""
        text = _tail(self.log_path, 50_000_000)
        counts = {k: text.count(k) for k in ("Traceback", "database is locked", "unhandled error", "ERROR")}
        found = {k: v for k, v in counts.items() if v}
        return ", ".join(f"{v} x {k!r}" for k, v in found.items())


async def _stop(proc: asyncio.subprocess.Process, timeout: float = 15.0) -> None:
    if proc.returncode is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout)
    except (asyncio.TimeoutError, ProcessLookupError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()


def _tail(path: str | None, n: int = 1500) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:] if path else ""
    except OSError:
        return ""


async def _wait_http(proc: asyncio.subprocess.Process, url: str, log_path: str | None) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with {proc.returncode} during startup: {_tail(log_path)}")
            try:
                r = await client.get(url)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} within {STARTUP_TIMEOUT}s: {_tail(log_path)}")


_GC_LOGGER = """
import gc, sys, time
_t = [0.0]
def _cb(phase, info):
    if phase == "start":
        _t[0] = time.perf_counter()
    else:
        ms = (time.perf_counter() - _t[0]) * 1000
        if ms > 20:
            print(f"GC gen{info['generation']} {ms:.0f} ms collected {info['collected']}", file=sys.stderr, flush=True)
gc.callbacks.append(_cb)
sys.argv[0] = "syncd"
from syncd.cli import main
main()
"""


async def _spawn_ours(srv: Server, env: dict[str, str]) -> None:
    log = open(srv.log_path, "ab")
    try:
        # BENCH_SERVER_GC_LOG=1 (diagnostics): log every garbage-collector pass over 20 ms to the
        # server log; BENCH_SERVER_GC_THRESHOLD="a,b,c" replaces the daemon's gc thresholds
        # (syncd/gc_policy.py: SYNCD_GC_THRESHOLD; what-if runs)
        entry = ["-c", _GC_LOGGER] if os.environ.get("BENCH_SERVER_GC_LOG") else ["-m", "syncd.cli"]
        if os.environ.get("BENCH_SERVER_GC_THRESHOLD"):
            env = {**env, "SYNCD_GC_THRESHOLD": os.environ["BENCH_SERVER_GC_THRESHOLD"]}
        srv.proc = await asyncio.create_subprocess_exec(
            sys.executable, *entry, "serve", "--host", "127.0.0.1", "--port", str(srv.port),
            cwd=str(REPO), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()
    await _wait_http(srv.proc, f"{srv.http_url}/healthz", srv.log_path)


@asynccontextmanager
async def ours(ctx: Context, backend: str, *, redis_url: str | None = None) -> AsyncIterator[Server]:
    """``syncd serve`` on a scratch database (``sqlite`` or ``postgresql``), rate limits lifted.

    The server's stdout/stderr (uvicorn's access log included, as deployed) go to a file in
    the scratch directory, not to a pipe, so the log never blocks the server.
    """
    from schema.db import create_engine

    from .engine_common import _pg_urls, pg_admin_connect

    tmp = tempfile.mkdtemp(prefix="bench-server-", dir=ctx.tmpdir)
    pg_name = None
    srv: Server | None = None
    try:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp}/syncd.sqlite3"
        elif backend == "postgresql":
            pg_name = f"bench_server_{os.getpid()}_{secrets.token_hex(3)}"
            with pg_admin_connect(ctx) as admin:
                admin.execute(f"CREATE DATABASE {pg_name}")
            url = _pg_urls(ctx.pg_dsn, pg_name)[1]
        else:
            raise ValueError(backend)
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env.update(DATABASE_URL=url, SYNCD_DATA_DIR=tmp, SYNCD_API_RATE_LIMIT=NO_LIMIT,
                   SYNCD_LOGIN_RATE_LIMIT=NO_LIMIT, PYTHONUNBUFFERED="1")
        if redis_url:
            env["REDIS_URL"] = redis_url
        label = "ours-pg" if backend == "postgresql" else "ours-sqlite"
        srv = Server(label, "ours", None, free_port(), "y", backend=backend, db_url=url,  # type: ignore[arg-type]
                     keys_dir=f"{tmp}/keys", log_path=f"{tmp}/server.log", pg_name=pg_name, admin_dsn=ctx.pg_dsn)

        async def restart(s: Server) -> None:
            await _stop(s.proc)
            await _spawn_ours(s, env)

        srv._restart = restart
        await _spawn_ours(srv, env)
        srv.db = create_engine(url)
        try:
            yield srv
        finally:
            await srv.db.dispose()
    finally:
        if srv is not None and srv.proc is not None:
            await _stop(srv.proc)
        if pg_name is not None:
            with pg_admin_connect(ctx) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)


async def _spawn_listening(name: str, kind: str, protocol: str, argv: list[str], cwd: str) -> Server:
    """A peer that prints ``{"event": "listening", "port": N}``; its stderr goes to a temp file."""
    fd, log_path = tempfile.mkstemp(prefix=f"bench-{kind}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)
        info = json.loads(line)
    except (asyncio.TimeoutError, ValueError) as e:
        await _stop(proc)
        raise RuntimeError(f"{name} did not start: {e}: {_tail(log_path)}") from None
    return Server(name, kind, proc, int(info["port"]), protocol, log_path=log_path)


@asynccontextmanager
async def _peer(srv: Server) -> AsyncIterator[Server]:
    try:
        yield srv
    finally:
        await _stop(srv.proc)
        try:
            os.unlink(srv.log_path or "")
        except OSError:
            pass


@asynccontextmanager
async def hocuspocus() -> AsyncIterator[Server]:
    node = require_node()
    srv = await _spawn_listening("hocuspocus", "hocuspocus", "hocuspocus", [node, "hocuspocus.mjs", "0"],
                                 str(PEERS_DIR))
    async with _peer(srv):
        yield srv


@asynccontextmanager
async def pycrdt_websocket() -> AsyncIterator[Server]:
    try:
        import pycrdt.websocket  # noqa: F401
    except ImportError as e:
        raise Skip(f"pycrdt-websocket not installed (pip install pycrdt-websocket==0.16.5): {e}") from None
    srv = await _spawn_listening("pycrdt-websocket", "pycrdt", "y",
                                 [sys.executable, "-m", "bench.peers_py.pycrdt_server", "0"], str(REPO))
    async with _peer(srv):
        yield srv


# --- identities (ours) ---------------------------------------------------------------------------

@dataclass
class Identity:
    user: str
    role: str
    device: str
    token: str

    def json(self) -> dict[str, str]:
        return {"user": self.user, "role": self.role, "device": self.device, "token": self.token}


async def identities(srv: Server, roles: list[str], *, users: list[str] | None = None,
                     prefix: str = "bench") -> list[Identity]:
    """One device (and, unless ``users`` is given, one user) per entry of ``roles``; tokens are
    minted with the server's signing key (valid 2 h)."""
    from schema import tables as t
    from server.auth.keys import load_or_create_keys
    from server.auth.tokens import TokenService
    from server.config import ServerConfig

    now = datetime.now(timezone.utc)
    if users is None:
        users = [str(uuid.uuid4()) for _ in roles]
        async with srv.db.begin() as conn:
            await conn.execute(t.users.insert(), [
                {"id": u, "email": f"{prefix}-{i}-{u[:8]}@bench.test", "name": f"{role} {i}", "role": role,
                 "password_hash": None, "active": True, "created_at": now}
                for i, (u, role) in enumerate(zip(users, roles))])
    devices = [f"{prefix}-{i:04d}-{secrets.token_hex(4)}" for i in range(len(roles))]
    async with srv.db.begin() as conn:
        await conn.execute(t.devices.insert(), [
            {"id": d, "user_id": u, "name": f"bench device {i}", "created_at": now, "last_seen_at": now}
            for i, (d, u) in enumerate(zip(devices, users))])
    cfg = ServerConfig()
    tokens = TokenService(load_or_create_keys(srv.keys_dir), issuer=cfg.issuer, audience=cfg.audience,
                          ttl_s=7200, leeway_s=cfg.leeway_s)
    return [Identity(u, r, d, tokens.issue(user_id=u, role=r, device_id=d, family_id=uuid.uuid4().hex)[0])
            for u, r, d in zip(users, roles, devices)]


def uuid4s(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


# --- seeding documents through the server's HTTP push ----------------------------------------------

class Writer:
    """A pycrdt replica of one identity building valid writes (like tests' BareDevice)."""

    def __init__(self, ident: Identity) -> None:
        from conflict_rules.hlc import HLC

        self.ident = ident
        self.hlc = HLC()
        self.client_id = secrets.randbits(52) + 1
        self.docs: dict[str, Any] = {}

    def edit(self, doc_id: str, fn: Any) -> bytes:
        """Run ``fn(doc, stamp)`` in one transaction; the update it made."""
        from pycrdt import Doc

        d = self.docs.get(doc_id)
        if d is None:
            d = self.docs[doc_id] = Doc(client_id=self.client_id)
        before = d.get_state()
        with d.transaction(origin="local"):
            fn(d, {"ts": self.hlc.now(), "device": self.ident.device, "author": self.ident.user,
                   "role": self.ident.role})
        return d.get_update(before)


async def push_http(srv: Server, ident: Identity, updates: list[tuple[str, bytes]], batch: int = 100) -> None:
    """Push (doc_id, update) in order through ``POST /api/sync/push`` batches; raise on refusal."""
    import httpx

    async with httpx.AsyncClient(base_url=srv.http_url, timeout=120.0,
                                 headers={"Authorization": f"Bearer {ident.token}"}) as http:
        for k in range(0, len(updates), batch):
            body = {"updates": [{"doc_id": d, "update": base64.b64encode(u).decode()} for d, u in updates[k:k + batch]]}
            r = await http.post("/api/sync/push", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"seeding push failed: {r.status_code} {r.text[:500]}")
            bad = [x for x in r.json()["data"]["results"] if "error" in x]
            if bad:
                raise RuntimeError(f"seeding push refused: {bad[:2]}")


# --- load generator ----------------------------------------------------------------------------------

class LoadGen:
    """``node bench/peers/loadgen.mjs`` with a config file; commands over stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, cfg_path: str) -> None:
        self.proc = proc
        self.cfg_path = cfg_path

    @classmethod
    async def start(cls, config: dict[str, Any]) -> "LoadGen":
        node = require_node()
        fd, path = tempfile.mkstemp(prefix="bench-loadgen-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        proc = await asyncio.create_subprocess_exec(node, "loadgen.mjs", path, cwd=str(PEERS_DIR),
                                                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, limit=1 << 24)
        lg = cls(proc, path)
        await lg.event("ready", timeout=60)
        return lg

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def event(self, name: str, timeout: float = 600) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                err = await self.proc.stderr.read() if self.proc.stderr else b""
                raise RuntimeError(f"load generator exited: {err.decode(errors='replace')[-2000:]}")
            ev = json.loads(line)
            if ev.get("event") == "error":
                raise RuntimeError(f"load generator: {ev.get('message')}")
            if ev.get("event") == name:
                return ev

    async def cmd(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()

    async def connect(self) -> dict[str, Any]:
        await self.cmd(cmd="connect")
        return await self.event("connected")

    async def step(self, rate: float, seconds: float, drain: float) -> dict[str, Any]:
        await self.cmd(cmd="step", rate=rate, seconds=seconds, drain=drain)
        return await self.event("step", timeout=seconds + drain + 120)

    async def prime(self, rate: float, drain: float) -> dict[str, Any]:
        """Every sending connection writes once, in order, at ``rate``."""
        await self.cmd(cmd="prime", rate=rate, drain=drain)
        return await self.event("step", timeout=3600)

    async def close(self) -> None:
        try:
            if self.proc.returncode is None:
                try:
                    await self.cmd(cmd="close")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                try:
                    await asyncio.wait_for(self.proc.wait(), 10)
                except asyncio.TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
        finally:
            try:
                os.unlink(self.cfg_path)
            except OSError:
                pass


# --- sampling --------------------------------------------------------------------------------------

@dataclass
class Sample:
    cpu_pct: float  # server process, % of one core
    rss_mb: float  # peak during the window
    rss_end_mb: float
    machine_cpu_pct: float  # all cores, % of one core (2 cores: at most 200)
    loadgen_cpu_pct: float = 0.0
    postgres_cpu_pct: float = 0.0  # every postgres process (ours on PostgreSQL: its backends)

    @property
    def other_cpu_pct(self) -> float:
        """CPU used by everything else on the machine (other work sharing the box)."""
        return max(0.0, self.machine_cpu_pct - self.cpu_pct - self.loadgen_cpu_pct - self.postgres_cpu_pct)


def _cpu_of(p: Any) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except Exception:  # noqa: BLE001 - the process may be gone
        return 0.0


class Sampler:
    """CPU and peak RSS of the server process over a window (psutil, 4 samples/s), plus the
    CPU of the load generator, of PostgreSQL and of the whole machine."""

    def __init__(self, pid: int, loadgen_pid: int | None = None) -> None:
        import psutil

        self.p = psutil.Process(pid)
        self.lg = psutil.Process(loadgen_pid) if loadgen_pid else None
        self._task: asyncio.Task | None = None
        self._peak = 0
        self._t0 = 0.0
        self._cpu0 = self._lg0 = self._pg0 = 0.0
        self._pg: list[Any] = []
        self._m0: Any = None

    def _rss(self) -> int:
        try:
            return self.p.memory_info().rss
        except Exception:  # noqa: BLE001 - the process may be gone
            return 0

    def rss_mb(self) -> float:
        return self._rss() / 2**20

    async def _loop(self) -> None:
        while True:
            self._peak = max(self._peak, self._rss())
            await asyncio.sleep(0.25)

    def start(self) -> None:
        import psutil

        self._pg = [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]
        self._peak = self._rss()
        self._t0 = time.monotonic()
        self._cpu0 = _cpu_of(self.p)
        self._lg0 = _cpu_of(self.lg) if self.lg else 0.0
        self._pg0 = sum(_cpu_of(p) for p in self._pg)
        self._m0 = psutil.cpu_times()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> Sample:
        import psutil

        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        dt = max(1e-6, time.monotonic() - self._t0)
        m1 = psutil.cpu_times()
        busy = sum(getattr(m1, f) - getattr(self._m0, f) for f in ("user", "system", "nice", "irq", "softirq")
                   if hasattr(m1, f))
        end = self._rss()
        lg = (_cpu_of(self.lg) - self._lg0) if self.lg else 0.0
        pg = sum(_cpu_of(p) for p in self._pg) - self._pg0
        return Sample(100 * (_cpu_of(self.p) - self._cpu0) / dt, max(self._peak, end) / 2**20, end / 2**20,
                      100 * busy / dt, 100 * lg / dt, 100 * max(0.0, pg) / dt)


def fmt_ms(v: Any) -> str:
    if v is None:
        return "-"
    if v == float("inf") or (isinstance(v, (int, float)) and v >= 1e8):
        return "inf"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"
