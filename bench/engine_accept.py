"""Engine acceptance throughput: push -> scan -> validate -> group commit (log + projection
+ events + watermarks) -> ack, with many devices pushing concurrently.

Workload (both databases): 200 job documents, 40 devices (users of role ``office``, one pycrdt
client id each). Setup, untimed: every job is created by one device (6 fields + 2 materials),
then every device pulls 20 random jobs through ``engine.pull``. The edits are generated
before timing from each device's own replica (no pulls during the run, so a device's updates
depend only on committed content and on its own earlier updates, and the devices sharing a
job write concurrently: several live candidates per field). The timed phase runs one asyncio
task per device that pushes its edits in order with ``await engine.push(...)``; the engine's
batcher group-commits whatever is queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any

from .engine_common import JOB_LWW, Device, add_users, daemon_gc, median, percentile, scratch_db, uuid_from
from .registry import Context, measurement, row

N_JOBS = 200
N_DEVICES = 40
DOCS_PER_DEVICE = 20
STATUSES = ("lead", "estimate", "scheduled", "in_progress", "completed", "invoiced", "on_hold")
SQLITE_TARGET = 5_000  # field updates/s end to end
PG_TARGET_RATIO = 0.5  # of the raw batched upsert rows/s


@dataclasses.dataclass
class _Plan:
    device: Device
    edits: list[tuple[str, bytes, int]]  # (doc_id, update, field writes), in push order


def _gen_edits(dev: Device, docs: list[str], mats: dict[str, list[str]], n: int, rng: random.Random
               ) -> list[tuple[str, bytes, int]]:
    from schema import documents as D

    out = []
    known = {d: list(mats.get(d, ())) for d in docs}
    for i in range(n):
        doc_id = rng.choice(docs)
        r = rng.random()
        if r < 0.55:  # one lww field
            f = rng.choice(JOB_LWW[:4])  # title, description, address, estimate
            v = _value(rng, f, i)
            u = dev.edit(doc_id, lambda d, s: D.write_field(d, f, v, **s))
            w = 1
        elif r < 0.65:  # two fields in one transaction
            vals = {"address": _value(rng, "address", i), "scheduled_start": f"2025-{rng.randint(1, 12):02d}-"
                    f"{rng.randint(1, 28):02d}"}
            u = dev.edit(doc_id, lambda d, s: D.write_fields(d, vals, **s))
            w = 2
        elif r < 0.80:  # status change
            st = rng.choice(STATUSES)
            u = dev.edit(doc_id, lambda d, s: D.write_field(d, "status", st, **s))
            w = 1
        elif r < 0.90 or not known[doc_id]:  # material add: name, quantity, unit
            mid = uuid_from(rng)
            known[doc_id].append(mid)
            name, qty, unit = rng.choice(("tile", "grout", "PEX pipe", "2x4 studs")), float(rng.randint(1, 99)), "pcs"
            u = dev.edit(doc_id, lambda d, s: (D.write_material_field(d, mid, "name", name, **s),
                                               D.write_material_field(d, mid, "quantity", qty, **s),
                                               D.write_material_field(d, mid, "unit", unit, **s)))
            w = 3
        else:  # material update
            mid = rng.choice(known[doc_id])
            mf = rng.choice(("quantity", "purchased", "cost"))
            mv: Any = rng.random() < 0.5 if mf == "purchased" else float(rng.randint(1, 500))
            u = dev.edit(doc_id, lambda d, s: D.write_material_field(d, mid, mf, mv, **s))
            w = 1
        out.append((doc_id, u, w))
    return out


def _value(rng: random.Random, f: str, i: int) -> Any:
    if f == "estimate":
        return round(rng.uniform(100, 90_000), 2)
    if f == "address":
        return f"{rng.randint(1, 9999)} Oak Ave, unit {i % 40}"
    if f == "description":
        return f"rev {i}: " + "scope of work " * rng.randint(0, 5)
    return f"Job rev {i}"


async def _setup(eng: Any, db: Any, rng: random.Random, edits_per_device: int) -> tuple[list[_Plan], float]:
    """Create the jobs, let every device pull its jobs, generate the edits (untimed)."""
    from schema import documents as D

    users = await add_users(db, N_DEVICES, "office", rng)
    devices = [Device.make(users[i], "office", i, rng) for i in range(N_DEVICES)]
    jobs = [D.doc_id_for("job", uuid_from(rng)) for _ in range(N_JOBS)]
    mats: dict[str, list[str]] = {}

    async def create(dev: Device, mine: list[str]) -> None:
        for doc_id in mine:
            m = [uuid_from(rng), uuid_from(rng)]
            mats[doc_id] = m
            u = dev.edit(doc_id, lambda d, s: (
                D.write_fields(d, {"title": "New job", "status": "lead", "customer_id": uuid_from(rng),
                                   "owner_id": dev.principal.user_id, "estimate": 1000.0,
                                   "address": "1 Main St"}, **s),
                [(D.write_material_field(d, x, "name", "drywall", **s),
                  D.write_material_field(d, x, "quantity", 10.0, **s)) for x in m]))
            await eng.push(dev.principal, doc_id, u)

    await asyncio.gather(*(create(dev, jobs[i::N_DEVICES]) for i, dev in enumerate(devices)))
    plans = []
    t0 = time.perf_counter()
    for i, dev in enumerate(devices):
        mine = jobs[i::N_DEVICES]
        others = [j for j in jobs if j not in mine]
        docs = mine + rng.sample(others, DOCS_PER_DEVICE - len(mine))
        for doc_id in docs:
            if doc_id not in mine:
                res = await eng.pull(dev.principal, doc_id, None, None)
                dev.apply(doc_id, res.update)
        plans.append(_Plan(dev, []))
    pull_s = time.perf_counter() - t0
    for p in plans:
        docs = list(p.device.docs)
        p.edits = _gen_edits(p.device, docs, mats, edits_per_device, rng)
    return plans, pull_s


async def _run(eng: Any, plans: list[_Plan]) -> dict[str, Any]:
    lat: list[float] = []
    before = dict(eng.stats)

    async def device_loop(p: _Plan) -> None:
        for doc_id, u, _ in p.edits:
            t = time.perf_counter()
            ack = await eng.push(p.device.principal, doc_id, u)
            lat.append(time.perf_counter() - t)
            if ack.duplicate:
                raise RuntimeError(f"unexpected duplicate ack for {doc_id}")

    t0 = time.perf_counter()
    await asyncio.gather(*(device_loop(p) for p in plans))
    elapsed = time.perf_counter() - t0
    delta = {k: eng.stats[k] - before.get(k, 0) for k in eng.stats}
    n = sum(len(p.edits) for p in plans)
    if delta["accepted"] != n or delta["refused"]:
        raise RuntimeError(f"expected {n} accepted updates, engine stats delta {delta}")
    return {"elapsed": elapsed, "lat": lat, "delta": delta, "updates": n,
            "writes": sum(w for p in plans for _, _, w in p.edits)}


def _merge_outboxes(plans: list[_Plan]) -> None:
    """Reconnect workload: each device pushes its outbox merged into one update per document
    (what ``replica.sync.push`` does after working offline). Only the writes that survive the
    merge count as field updates (a value changed twice offline is one write on the server)."""
    from pycrdt import Doc, Map, merge_updates

    for p in plans:
        by_doc: dict[str, list[bytes]] = {}
        for doc_id, u, _ in p.edits:
            by_doc.setdefault(doc_id, []).append(u)
        merged = []
        for doc_id, ups in by_doc.items():
            m = merge_updates(*ups) if len(ups) > 1 else ups[0]
            scratch = Doc()
            scratch.apply_update(m)  # inserts integrate alone (map items have no origins)
            live = sum(len(list(scratch.get(r, type=Map).keys())) for r in ("fields", "materials", "notes"))
            merged.append((doc_id, m, live))
        p.edits = merged


async def _accept(ctx: Context, backend: str, mode: str = "live") -> tuple[list[dict], dict[str, Any], Any]:
    from syncd.engine import EngineConfig, SyncEngine

    rng = random.Random(ctx.seed)
    edits_per_device = ctx.size(150, 20)
    out: list[dict] = []
    async with scratch_db(ctx, backend) as b:
        async with SyncEngine(b.db, EngineConfig()) as eng:
            t0 = time.perf_counter()
            plans, pull_s = await _setup(eng, b.db, rng, edits_per_device)
            if mode == "reconnect":
                _merge_outboxes(plans)
            setup_s = time.perf_counter() - t0
            with daemon_gc():
                res = await _run(eng, plans)
        s, n, w = res["elapsed"], res["updates"], res["writes"]
        d, lat = res["delta"], res["lat"]
        batches = d["batches"]
        common = (("reconnect: merged outboxes, " if mode == "reconnect" else "")
                  + f"{N_DEVICES} devices x {edits_per_device} edits over {N_JOBS} jobs "
                  f"({DOCS_PER_DEVICE} each), {s:.2f}s; {batches} commits, {n / max(batches, 1):.1f} updates/commit")
        fw_rate = w / s
        target = (f"; target >= {SQLITE_TARGET:,} field updates/s: {'MET' if fw_rate >= SQLITE_TARGET else 'NOT met'}"
                  if backend == "sqlite" else "")
        out += [
            row("updates/s", n / s, "updates/s", common),
            row("field updates/s", fw_rate, "writes/s", f"{w:,} field writes ({w / n:.2f}/update){target}"),
            row("rows written/s", d["rows_written"] / s, "rows/s",
                f"engine.stats rows_written delta {d['rows_written']:,} ({d['rows_written'] / n:.2f}/update: "
                "oplog + projection upserts + events + doc_heads)"),
            row("push latency p50", median(lat) * 1e3, "ms", "push() call to ack (after durable commit)"),
            row("push latency p99", percentile(lat, 99) * 1e3, "ms", f"max {max(lat) * 1e3:.0f} ms"),
            row("setup (untimed)", setup_s, "s",
                f"{N_JOBS} creates + {N_DEVICES * (DOCS_PER_DEVICE - N_JOBS // N_DEVICES)} pulls ({pull_s:.2f}s) "
                "+ edit generation"),
        ]
        raw = None
        if backend == "postgresql":
            raw = _raw_reference(ctx, b.pg_dsn, rng)
    return out, res, raw


def _raw_reference(ctx: Context, dsn: str, rng: random.Random) -> tuple[float, int]:
    """bench/m_sql.py's psycopg executemany upsert (1,000 rows per commit, 95% updates)."""
    from .m_sql import _fresh_table, _psycopg_executemany, _scratch, _workload

    rctx = dataclasses.replace(ctx, pg_dsn=dsn)  # a table in the scratch database, dropped with it
    n = ctx.size(20_000, 3_000)
    pre, rows = _workload(n, "update", rng)
    table = _scratch("upsert")
    _fresh_table(rctx, table, pre)
    s = _psycopg_executemany(rctx, table, rows)
    return n / s, n


@measurement("engine.accept_sqlite", group="engine")
async def accept_sqlite(ctx: Context):
    """Accepted -> durable -> projected rate on SQLite (synchronous=FULL): 40 devices pushing
    concurrently to 200 job documents; updates/s, field writes/s, rows/s, push latency."""
    rows, _, _ = await _accept(ctx, "sqlite")
    return rows


@measurement("engine.accept_pg", group="engine")
async def accept_pg(ctx: Context):
    """Accepted -> durable -> projected rate on PostgreSQL (same workload), against the raw
    psycopg batched upsert (1,000 rows per commit) measured in the same run."""
    rows, res, raw = await _accept(ctx, "postgresql")
    raw_rate, n_raw = raw
    eng_rate = res["delta"]["rows_written"] / res["elapsed"]
    ratio = eng_rate / raw_rate
    rows += [
        row("raw batched upsert (reference)", raw_rate, "rows/s",
            f"psycopg executemany, {n_raw:,} rows, 1,000 per commit, 95% updates (bench/m_sql.py)"),
        row("engine rows/s / raw rows/s", ratio, "ratio",
            f"target >= {PG_TARGET_RATIO}: {'MET' if ratio >= PG_TARGET_RATIO else 'NOT met'}"),
    ]
    return rows


@measurement("engine.reconnect_sqlite", group="engine")
async def reconnect_sqlite(ctx: Context):
    """The offline-first case on SQLite: 40 devices come back online and push their outboxes
    (150 edits each over 20 jobs) merged into one update per document, as the replica does."""
    rows, _, _ = await _accept(ctx, "sqlite", "reconnect")
    return rows


@measurement("engine.reconnect_pg", group="engine")
async def reconnect_pg(ctx: Context):
    """The same reconnect workload on PostgreSQL, against the raw batched upsert."""
    rows, res, raw = await _accept(ctx, "postgresql", "reconnect")
    if raw is not None:
        raw_rate, raw_n = raw
        eng_rate = res["delta"]["rows_written"] / res["elapsed"]
        rows.append(row("raw batched upsert (reference)", raw_rate, "rows/s", f"psycopg executemany, {raw_n:,} rows"))
        rows.append(row("engine rows/s / raw rows/s", eng_rate / raw_rate, "ratio",
                        f"target >= {PG_TARGET_RATIO}: {'MET' if eng_rate / raw_rate >= PG_TARGET_RATIO else 'NOT met'}"))
    return rows


async def _single(ctx: Context, backend: str) -> list[dict]:
    """One device pushing one update at a time (each waits for its ack): every batch holds one
    update, so this is the engine's fixed cost per commit, what a lightly loaded server pays
    per HTTP push."""
    import threading

    from schema import documents as D
    from syncd.engine import EngineConfig, SyncEngine

    rng = random.Random(ctx.seed)
    n = ctx.size(1000, 100)
    async with scratch_db(ctx, backend) as b:
        (uid,) = await add_users(b.db, 1, "office", rng)
        dev = Device.make(uid, "office", 0, rng)
        docs = [D.doc_id_for("job", uuid_from(rng)) for _ in range(20)]
        async with SyncEngine(b.db, EngineConfig()) as eng:
            for doc_id in docs:
                await eng.push(dev.principal, doc_id, dev.edit(doc_id, lambda d, s: D.write_fields(
                    d, {"title": "New job", "status": "lead"}, **s)))
            edits = [(docs[i % len(docs)], dev.edit(docs[i % len(docs)], lambda d, s, i=i: D.write_field(
                d, "title", f"Job rev {i}", **s))) for i in range(n)]
            assert threading.current_thread() is threading.main_thread()
            lat = []
            with daemon_gc():
                c0, m0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
                for doc_id, u in edits:
                    t = time.perf_counter()
                    await eng.push(dev.principal, doc_id, u)
                    lat.append(time.perf_counter() - t)
                wall, cpu, main = time.perf_counter() - t0, time.process_time() - c0, time.thread_time() - m0
    return [
        row("CPU per push", cpu / n * 1e6, "us", f"{n:,} sequential single-field pushes over 20 jobs, one update "
            f"per commit; process CPU (event loop + {'aiosqlite thread' if backend == 'sqlite' else 'psycopg'})"),
        row("  of which the event loop's thread", main / n * 1e6, "us", "time.thread_time() of the main thread"),
        row("push latency p50", median(lat) * 1e3, "ms", f"p99 {percentile(lat, 99) * 1e3:.2f} ms; {n / wall:,.0f} pushes/s"),
    ]


@measurement("engine.single_push_sqlite", group="engine")
async def single_push_sqlite(ctx: Context):
    """The engine's fixed cost per commit on SQLite: one device, one update per batch."""
    return await _single(ctx, "sqlite")


@measurement("engine.single_push_pg", group="engine")
async def single_push_pg(ctx: Context):
    """The engine's fixed cost per commit on PostgreSQL: one device, one update per batch."""
    return await _single(ctx, "postgresql")
