"""Shared setup for the engine measurements (bench/engine_*.py): scratch databases, users,
devices that build real updates, bulk-loaded histories, and small statistics helpers.

Nothing here registers a measurement. Every scratch resource is removed at the end, also on
error: a SQLite file in a temporary directory, or a PostgreSQL database named
``bench_engine_<pid>_<random>`` created next to ``ctx.pg_dsn``'s database and dropped with
``WITH (FORCE)``. Both are migrated with ``schema.db.migrate`` (the real schema).

The devices mirror ``tests/syncd/engine_helpers.BareDevice`` (not imported: bench code does
not depend on tests): one pycrdt doc per document with the device's own client id, an HLC, and
updates captured from the device's local transactions with ``Doc.observe``.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import shutil
import tempfile
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

from pycrdt import Doc

from .registry import Context, Skip

__all__ = [
    "Backend",
    "Device",
    "scratch_db",
    "add_users",
    "add_devices",
    "insert_users",
    "load_history",
    "job_history",
    "clear_history_cache",
    "History",
    "bulk_history",
    "percentile",
    "median",
    "JOB_LWW",
    "uuid_from",
]

#: The job fields edited as plain last-writer-wins values (schema.models FIELDS["job"]).
JOB_LWW = ("title", "description", "address", "estimate", "scheduled_start", "scheduled_end")


def uuid_from(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@contextmanager
def daemon_gc():
    """The garbage-collector policy ``syncd serve`` runs under (``syncd/gc_policy.py``), for a
    measurement of the engine in this process; the bench's own thresholds come back after."""
    from syncd import gc_policy

    previous = gc_policy.apply()
    try:
        yield
    finally:
        gc_policy.undo(previous)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    import math

    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


# --- scratch databases ------------------------------------------------------------------


@dataclass
class Backend:
    """A migrated scratch database: ``url`` (async SQLAlchemy URL), ``db`` (AsyncEngine)."""

    name: str  # "sqlite" | "postgresql"
    url: str
    db: Any
    pg_dsn: str | None = None  # libpq URL of the scratch database (PostgreSQL only)


def _pg_urls(dsn: str, database: str) -> tuple[str, str]:
    """(libpq URL, SQLAlchemy psycopg URL) of another database on the same server."""
    from sqlalchemy.engine import make_url

    u = make_url(dsn).set(database=database)
    libpq = u.set(drivername="postgresql").render_as_string(hide_password=False)
    sa = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return libpq, sa


def pg_admin_connect(ctx: Context):
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover
        raise Skip(f"psycopg not installed: {e}") from e
    try:
        return psycopg.connect(ctx.pg_dsn, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as e:
        raise Skip(f"PostgreSQL unreachable at {ctx.pg_dsn}: {str(e).strip()[:160]}") from e


@asynccontextmanager
async def scratch_db(ctx: Context, backend: str, **engine_kw: Any) -> AsyncIterator[Backend]:
    """A freshly migrated scratch database (``"sqlite"`` or ``"postgresql"``), removed after."""
    from schema.db import create_engine, migrate

    if backend == "sqlite":
        d = tempfile.mkdtemp(prefix="bench-engine-", dir=ctx.tmpdir)
        try:
            url = f"sqlite+aiosqlite:///{os.path.join(d, 'engine.sqlite3')}"
            await migrate(url)
            db = create_engine(url, **engine_kw)
            try:
                yield Backend("sqlite", url, db)
            finally:
                await db.dispose()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return
    if backend != "postgresql":
        raise ValueError(backend)
    name = f"bench_engine_{os.getpid()}_{secrets.token_hex(3)}"
    with pg_admin_connect(ctx) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        libpq, url = _pg_urls(ctx.pg_dsn, name)
        await migrate(url)
        db = create_engine(url, **engine_kw)
        try:
            yield Backend("postgresql", url, db, libpq)
        finally:
            await db.dispose()
    finally:
        with pg_admin_connect(ctx) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- users, devices -----------------------------------------------------------------------


async def add_users(db: Any, n: int, role: str, rng: random.Random) -> list[str]:
    """Insert ``n`` active users of ``role``; return their ids."""
    ids = [uuid_from(rng) for _ in range(n)]
    await insert_users(db, [(u, role) for u in ids])
    return ids


async def insert_users(db: Any, users: list[tuple[str, str]]) -> None:
    """Insert active users given as (id, role)."""
    from schema import tables as t

    now = datetime.now(timezone.utc)
    async with db.begin() as conn:
        await conn.execute(t.users.insert(), [
            {"id": u, "email": f"{u}@bench.test", "name": f"{role} {i}", "role": role,
             "password_hash": None, "active": True, "created_at": now} for i, (u, role) in enumerate(users)])


async def add_devices(db: Any, devices: list["Device"]) -> None:
    """Register devices and their client ids directly (what the engine does on a first push)."""
    from schema import tables as t

    now = datetime.now(timezone.utc)
    async with db.begin() as conn:
        await conn.execute(t.devices.insert(), [
            {"id": d.principal.device_id, "user_id": d.principal.user_id, "created_at": now, "last_seen_at": now}
            for d in devices])
        await conn.execute(t.client_bindings.insert(), [
            {"client_id": d.client_id, "device_id": d.principal.device_id, "created_at": now} for d in devices])


class Device:
    """A device: one pycrdt doc per document (its own client id), an HLC, and the updates of
    its local transactions captured with ``Doc.observe`` (remote applies are not captured)."""

    def __init__(self, user_id: str, role: str, device_id: str, client_id: int) -> None:
        from conflict_rules.hlc import HLC
        from syncd.protocol import Principal

        self.principal = Principal(user_id, role, device_id)
        self.client_id = client_id
        self.hlc = HLC()
        self.docs: dict[str, Doc] = {}
        self._subs: dict[str, Any] = {}
        self._captured: list[bytes] = []
        self._remote = False

    @classmethod
    def make(cls, user_id: str, role: str, index: int, rng: random.Random, prefix: str = "bench") -> "Device":
        return cls(user_id, role, f"{prefix}-{index:03d}-{rng.getrandbits(32):08x}", rng.getrandbits(52) + 1)

    def doc(self, doc_id: str) -> Doc:
        d = self.docs.get(doc_id)
        if d is None:
            d = self.docs[doc_id] = Doc(client_id=self.client_id)
            self._subs[doc_id] = d.observe(self._on_txn)
        return d

    def _on_txn(self, ev: Any) -> None:
        if not self._remote:
            self._captured.append(ev.update)

    def stamp(self) -> dict[str, str]:
        p = self.principal
        return {"ts": self.hlc.now(), "device": p.device_id, "author": p.user_id, "role": p.role}

    def edit(self, doc_id: str, fn: Callable[[Doc, dict[str, str]], Any]) -> bytes:
        """Run ``fn(doc, stamp)`` in one local transaction; return the update it produced."""
        d = self.doc(doc_id)
        n = len(self._captured)
        with d.transaction(origin="local"):
            fn(d, self.stamp())
        if len(self._captured) != n + 1:
            raise RuntimeError(f"expected one captured update, got {len(self._captured) - n}")
        return self._captured.pop()

    def apply(self, doc_id: str, update: bytes) -> None:
        self._remote = True
        try:
            self.doc(doc_id).apply_update(update)
        finally:
            self._remote = False


# --- bulk-loaded history ----------------------------------------------------------------------


@dataclass
class History:
    """Updates of one document in log order (causally valid), with who made each."""

    doc_id: str
    updates: list[bytes] = field(default_factory=list)
    authors: list[int] = field(default_factory=list)  # index into the writer devices
    writes: int = 0  # field writes in all updates


async def bulk_history(db: Any, hist: History, writers: list["Device"], chunk: int = 5_000) -> int:
    """Insert ``hist`` into ``oplog`` (one transaction, executemany in chunks) plus its
    ``doc_heads`` row, as if the engine had accepted it; return the last seq. Projection rows
    are not written (pulls and compaction do not read them)."""
    from schema import tables as t
    from schema.documents import parse_doc_id

    now = datetime.now(timezone.utc)
    kind, rid = parse_doc_id(hist.doc_id)
    async with db.begin() as conn:
        for k in range(0, len(hist.updates), chunk):
            await conn.execute(t.oplog.insert(), [
                {"doc_id": hist.doc_id, "digest": hashlib.sha256(u).digest(), "update": u,
                 "user_id": writers[a].principal.user_id, "device_id": writers[a].principal.device_id,
                 "received_at": now}
                for u, a in zip(hist.updates[k:k + chunk], hist.authors[k:k + chunk])])
        last = (await conn.execute(t.oplog.select().with_only_columns(t.oplog.c.seq)
                                   .where(t.oplog.c.doc_id == hist.doc_id)
                                   .order_by(t.oplog.c.seq.desc()).limit(1))).scalar_one()
        await conn.execute(t.doc_heads.insert().values(doc_id=hist.doc_id, kind=kind, record_id=rid, last_seq=last,
                                                       projected_seq=last, updated_at=now))
    return last


async def load_history(db: Any, hist: History, writers: list[Device]) -> int:
    """Users, devices, client bindings and the bulk log of ``hist``; return the last seq."""
    await insert_users(db, [(w.principal.user_id, w.principal.role) for w in writers])
    await add_devices(db, writers)
    return await bulk_history(db, hist, writers)


_HISTORY_CACHE: dict[tuple[int, int], tuple[History, list[Device]]] = {}


def clear_history_cache() -> None:
    _HISTORY_CACHE.clear()


class _VisibleWrites:
    """A writer's index of the live write keys it sees, per field (``"title"``) or material
    field (``"<mid>/quantity"``), maintained from ``Map.observe`` events.

    ``schema.documents.write_field`` finds the writes to supersede with ``Map.keys()``, which
    in pycrdt walks every key the map ever held: with one unique key per write that is
    O(history) per edit. This index makes an edit O(1) and produces the same updates."""

    def __init__(self, doc: Doc, roots: tuple[str, ...]) -> None:
        from pycrdt import Map

        self.by_group: dict[tuple[str, str], set[str]] = {}
        self.maps = {r: doc.get(r, type=Map) for r in roots}
        self._subs = [m.observe(self._observer(r)) for r, m in self.maps.items()]

    def _observer(self, root: str) -> Callable[[Any], None]:
        def on_event(ev: Any) -> None:
            for key, ch in ev.keys.items():
                group = (root, key.rsplit("/", 2)[0])
                if ch["action"] == "delete":
                    self.by_group.get(group, set()).discard(key)
                else:
                    self.by_group.setdefault(group, set()).add(key)
        return on_event

    def write(self, root: str, group: str, key: str, value: dict[str, Any]) -> None:
        """Inside a transaction: delete the visible writes of ``group``, insert ``key``."""
        m = self.maps[root]
        for k in list(self.by_group.get((root, group), ())):
            del m[k]
        m[key] = value


def job_history(n_updates: int, seed: int, *, n_writers: int = 4, n_materials: int = 8,
                sync_prob: float = 0.3) -> tuple[History, list[Device]]:
    """One job document edited ``n_updates`` times by ``n_writers`` devices over ~50 fields:
    the 6 lww job fields + status (7) and ``n_materials`` materials x 5 fields (40).
    Before an edit, with probability ``sync_prob`` the writer first applies, in log order, the
    other writers' updates it has not seen yet (a pull from the server), so writes supersede
    foreign writes and some stay concurrent. Every update is one field write with the
    semantics of ``schema.documents.write_field`` / ``write_material_field``.

    Returns the history and the writer devices (their users and devices are not in any
    database yet: see :func:`load_history`); cached per (n_updates, seed) within the process
    (compaction reuses the catch-up histories; :func:`clear_history_cache` frees them)."""
    key = (n_updates, seed)
    if key in _HISTORY_CACHE:
        return _HISTORY_CACHE[key]
    from schema import documents as D

    rng = random.Random(seed)
    doc_id = D.doc_id_for("job", uuid_from(rng))
    writers = [Device.make(uuid_from(rng), "office", i, rng, prefix="hist") for i in range(n_writers)]
    index = [_VisibleWrites(w.doc(doc_id), ("fields", "materials")) for w in writers]
    materials = [uuid_from(rng) for _ in range(n_materials)]
    hist = History(doc_id)
    w0 = writers[0]
    first = w0.edit(doc_id, lambda d, s: D.write_fields(d, {
        "title": "Kitchen remodel", "status": "scheduled", "customer_id": uuid_from(rng),
        "owner_id": w0.principal.user_id}, **s))
    hist.updates.append(first)
    hist.authors.append(0)
    hist.writes += 4
    cursor = [0] * n_writers  # log position each writer has caught up to
    cursor[0] = 1
    statuses = ("lead", "estimate", "scheduled", "in_progress", "completed", "on_hold")
    mat_fields = ("name", "quantity", "unit", "purchased", "cost")
    named: set[str] = set()
    while len(hist.updates) < n_updates:
        c = rng.randrange(n_writers)
        me = writers[c]
        if cursor[c] == 0 or rng.random() < sync_prob:  # catch up with the log, in log order
            for k in range(cursor[c], len(hist.updates)):
                if hist.authors[k] != c:
                    me.apply(doc_id, hist.updates[k])
            cursor[c] = len(hist.updates)
        r = rng.random()
        i = len(hist.updates)
        if r < 0.65:
            f = rng.choice(JOB_LWW) if r < 0.55 else "status"
            v = _lww_value(rng, f, i) if r < 0.55 else rng.choice(statuses)
            root, group, item = "fields", f, None
        else:
            mid = rng.choice(materials)
            f = rng.choice(mat_fields) if mid in named else "name"
            named.add(mid)
            v = _material_value(rng, f, i)
            root, group, item = "materials", f"{mid}/{f}", mid
        u = me.edit(doc_id, lambda d, s: index[c].write(
            root, group, D.make_key(root, ts=s["ts"], device=s["device"], field=f, item=item),
            D.entry_value(v, author=s["author"], role=s["role"])))
        hist.updates.append(u)
        hist.authors.append(c)
        hist.writes += 1
    out = (hist, writers)
    _HISTORY_CACHE[key] = out
    return out


def _lww_value(rng: random.Random, f: str, i: int) -> Any:
    if f == "estimate":
        return round(rng.uniform(100, 90_000), 2)
    if f in ("scheduled_start", "scheduled_end"):
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if f == "address":
        return f"{rng.randint(1, 9999)} Main St, unit {i % 50}"
    if f == "description":
        return f"rev {i}: " + "lorem ipsum " * rng.randint(0, 6)
    return f"Job {f} rev {i}"


def _material_value(rng: random.Random, f: str, i: int) -> Any:
    if f == "name":
        return rng.choice(("2x4 studs", "drywall screws", "tile", "grout", "paint", "PEX pipe")) + f" #{i % 7}"
    if f in ("quantity", "cost"):
        return float(rng.randint(1, 500))
    if f == "unit":
        return rng.choice(("pcs", "box", "m", "kg", "gal"))
    return rng.random() < 0.5  # purchased
