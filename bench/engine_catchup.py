"""Catch-up pulls of a device that is 100 updates behind on a long-edited job document.

History: one job document, H updates (1k, 10k, 100k; --quick: 1k, 5k) made by 4 devices over
~50 fields (6 lww job fields + status, 8 materials x 5 fields), writers catching up with the
others before 30% of their edits (``engine_common.job_history``). The history is inserted
into ``oplog`` in bulk (digest = sha256(update)) with its ``doc_heads`` row and a
``doc_snapshots`` row as of last - 1,000 (the log rows it covers are kept, so the tail query
runs over all H rows of the document); a fresh engine then loads snapshot + the last 1,000
entries. Loading the whole log instead costs minutes at H=100k: ``merge_updates`` of every
entry is quadratic (engine.compaction measures that path on smaller documents).

A fifth device holds the document as of seq S = last - 100 and pulls through ``engine.pull``
on SQLite and PostgreSQL, 20 times per path after one warm-up:

* log tail: ``pull(p, doc, its_state_vector, since_seq=S)`` (reads the 100 entries after S
  and merges them; also records the device's acknowledgement of S, a write transaction)
* state-vector diff: ``pull(p, doc, its_state_vector, None)`` (``get_update(sv)`` of the
  in-memory document)

Every pull result is checked to bring the device to the server's document (state vector and
content). Also reported: a new device's full-state pull, 10 sequential one-field pushes by the
caught-up device (accept latency on a long history) and the engine's first access.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone
from typing import Any

from pycrdt import Doc

from .engine_common import (Device, add_devices, insert_users, job_history, load_history, median,
                            pg_admin_connect, scratch_db)
from .registry import Context, Skip, measurement, row

BEHIND = 100
PUSHES = 10
SNAPSHOT_TAIL = 1_000  # the engine loads a snapshot as of last - 1,000 plus the log after it
LOG_RATIO_TARGET = 2.0


def _replay(updates: list[bytes], doc: Doc | None = None) -> Doc:
    """Apply log entries one by one, in log order (causally valid). ``merge_updates`` of the
    whole history would give the same document but is quadratic in pycrdt 0.14 (minutes at
    100k updates: see engine.compaction)."""
    d = doc if doc is not None else Doc()
    for u in updates:
        d.apply_update(u)
    return d


def _copy(doc: Doc) -> Doc:
    d = Doc()
    d.apply_update(doc.get_update())
    return d


def _json(doc: Doc) -> dict:
    from pycrdt import Map

    return {r: doc.get(r, type=Map).to_py() for r in ("fields", "materials", "notes")}


async def _write_snapshot(db: Any, doc_id: str, state: bytes, upto: int) -> int:
    """A ``doc_snapshots`` row as of ``upto``; the log rows stay (the tail query still runs
    over all H rows of the document). Returns how many log rows it covers."""
    from sqlalchemy import func, select

    from schema import tables as t

    async with db.begin() as conn:
        await conn.execute(t.doc_snapshots.insert().values(doc_id=doc_id, state=state, upto_seq=upto,
                                                           folded_entries=0, updated_at=datetime.now(timezone.utc)))
        n = (await conn.execute(select(func.count()).select_from(t.oplog).where(
            t.oplog.c.doc_id == doc_id, t.oplog.c.seq <= upto))).scalar_one()
    return n


async def _one(ctx: Context, backend: str, n: int, reps: int) -> dict[str, Any]:
    from schema import documents as D
    from syncd.engine import EngineConfig, SyncEngine
    from syncd.update_scan import decode_state_vector

    t0 = time.perf_counter()
    hist, writers = job_history(n, ctx.seed + n)
    gen_s = time.perf_counter() - t0
    rng = random.Random(ctx.seed)
    snap_at = max(0, n - SNAPSHOT_TAIL)
    ref = _replay(hist.updates[:snap_at])
    snapshot = ref.get_update() if snap_at else None
    reader_doc = _copy(_replay(hist.updates[snap_at:n - BEHIND], ref))
    _replay(hist.updates[n - BEHIND:], ref)
    ref_sv, ref_json = decode_state_vector(ref.get_state()), _json(ref)
    sv = reader_doc.get_state()
    out: dict[str, Any] = {"n": n, "gen_s": gen_s, "log_bytes": sum(map(len, hist.updates)), "sv_bytes": len(sv)}
    async with scratch_db(ctx, backend) as b:
        t0 = time.perf_counter()
        last = await load_history(b.db, hist, writers)
        out["insert_s"] = time.perf_counter() - t0
        if snapshot is not None:
            upto = last - n + snap_at
            if await _write_snapshot(b.db, hist.doc_id, snapshot, upto) != snap_at:
                raise RuntimeError("log sequence numbers are not contiguous")
        reader_uid = f"00000000-0000-4000-8000-{rng.getrandbits(48):012x}"
        await insert_users(b.db, [(reader_uid, "office")])
        reader = Device.make(reader_uid, "office", 99, rng, prefix="reader")
        await add_devices(b.db, [reader])
        since = last - BEHIND
        async with SyncEngine(b.db, EngineConfig()) as eng:
            t0 = time.perf_counter()
            await eng.view(hist.doc_id)  # first access: snapshot + the log after it
            out["load_s"] = time.perf_counter() - t0
            for path, since_seq in (("log", since), ("sv", None)):
                times = []
                res = await eng.pull(reader.principal, hist.doc_id, sv, since_seq)  # warm-up
                for _ in range(reps):
                    t = time.perf_counter()
                    res = await eng.pull(reader.principal, hist.doc_id, sv, since_seq)
                    times.append(time.perf_counter() - t)
                check = _copy(reader_doc)
                check.apply_update(res.update)
                if decode_state_vector(check.get_state()) != ref_sv or _json(check) != ref_json:
                    raise RuntimeError(f"{path} pull did not bring the device to the server state (H={n})")
                if res.seq != last:
                    raise RuntimeError(f"{path} pull returned seq {res.seq}, expected {last}")
                out[path] = {"median": median(times), "min": min(times), "bytes": len(res.update)}
            t = time.perf_counter()
            full = await eng.pull(reader.principal, hist.doc_id, None, None)
            out["full"] = {"s": time.perf_counter() - t, "bytes": len(full.update)}
            # the caught-up device now edits the document: accept cost on a long history
            reader.apply(hist.doc_id, check.get_update())
            push_t = []
            for i in range(PUSHES):
                u = reader.edit(hist.doc_id, lambda d, st: D.write_field(d, "title", f"caught up {i}", **st))
                t = time.perf_counter()
                await eng.push(reader.principal, hist.doc_id, u)
                push_t.append(time.perf_counter() - t)
            out["push"] = median(push_t)
    return out


def _backends(ctx: Context) -> list[str]:
    try:
        pg_admin_connect(ctx).close()
    except Skip:
        return ["sqlite"]
    return ["sqlite", "postgresql"]


@measurement("engine.catchup", group="engine")
async def catchup(ctx: Context):
    """Pull latency of a device 100 updates behind on one job document with 1k..100k updates
    of history: log-tail path vs state-vector diff path, SQLite and PostgreSQL."""
    sizes = [1_000, 5_000] if ctx.quick else [1_000, 10_000, 100_000]
    reps = 20
    rows = []
    for backend in _backends(ctx):
        results = [await _one(ctx, backend, n, reps) for n in sizes]
        tag = "sqlite" if backend == "sqlite" else "pg"
        for r in results:
            h = f"H={r['n'] // 1000}k"
            rows += [
                row(f"{tag} {h}: log-tail pull", r["log"]["median"] * 1e3, "ms",
                    f"median of {reps} (min {r['log']['min'] * 1e3:.2f} ms); {r['log']['bytes']:,} B returned "
                    f"for {BEHIND} entries; includes the ack write"),
                row(f"{tag} {h}: state-vector pull", r["sv"]["median"] * 1e3, "ms",
                    f"median of {reps} (min {r['sv']['min'] * 1e3:.2f} ms); {r['sv']['bytes']:,} B returned; "
                    f"device state vector {r['sv_bytes']} B"),
                row(f"{tag} {h}: full-state pull", r["full"]["bytes"] / 1024, "KB",
                    f"pull(p, doc, None, None), a new device: {r['full']['s'] * 1e3:.1f} ms once; "
                    f"the log holds {r['log_bytes'] / 1024:,.0f} KB"),
                row(f"{tag} {h}: push onto the doc", r["push"] * 1e3, "ms",
                    f"median of {PUSHES} sequential one-field pushes by the caught-up device (one commit each)"),
                row(f"{tag} {h}: engine load", r["load_s"] * 1e3, "ms",
                    f"first access: snapshot + last {min(r['n'], SNAPSHOT_TAIL):,} entries (untimed: bulk insert "
                    f"{r['insert_s']:.1f}s, history generated in {r['gen_s']:.1f}s)"),
            ]
        lo, hi = results[0], results[-1]
        ratio = hi["log"]["median"] / lo["log"]["median"]
        rows.append(row(f"{tag} log-tail H={hi['n'] // 1000}k / H={lo['n'] // 1000}k", ratio, "ratio",
                        f"target <= {LOG_RATIO_TARGET:g}x: {'MET' if ratio <= LOG_RATIO_TARGET else 'NOT met'} "
                        f"(ratio of the minimums {hi['log']['min'] / lo['log']['min']:.2f}x); state-vector path "
                        f"{hi['sv']['median'] / lo['sv']['median']:.1f}x"))
    return rows
