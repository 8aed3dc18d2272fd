"""Compaction of long-edited job documents: op-log bytes before and after ``engine.compact``
and the size of the encoded document state.

The documents are the catch-up histories (``engine_common.job_history``: H = 1k, 10k and
20k updates; --quick: 1k, 5k; reused from engine.catchup when it ran in the same process),
bulk-inserted into a scratch SQLite database. No device acknowledgement is recorded, so
``compact`` folds the whole log into the snapshot. Also reported: the compaction time (it
rebuilds the folded prefix from snapshot + log), the first-access load of the document by a
fresh engine before compaction (whole log) and after it (snapshot only).

Not 100k: with pycrdt 0.14 both the engine's first access (``LiveDoc.build``) and ``compact``
merge every log entry with one ``merge_updates`` call, which is quadratic in the number of
updates here (1k: ~20 ms, 10k: ~1.5 s, 20k: ~4-6 s, 40k: ~14 s, 100k: ~2.5 min each), so a
100k document would add ~5 minutes to the run.
"""

from __future__ import annotations

import time

import orjson

from .engine_common import clear_history_cache, job_history, load_history, scratch_db
from .registry import Context, measurement, row

RATIO_TARGET = 2.0


async def _one(ctx: Context, n: int) -> dict:
    from syncd.engine import EngineConfig, SyncEngine
    from syncd.update_scan import decode_state_vector

    hist, writers = job_history(n, ctx.seed + n)
    out: dict = {"n": n}
    async with scratch_db(ctx, "sqlite") as b:
        last = await load_history(b.db, hist, writers)
        async with SyncEngine(b.db, EngineConfig()) as eng:
            t0 = time.perf_counter()
            await eng.view(hist.doc_id)
            out["load_log_s"] = time.perf_counter() - t0
            live = eng._docs[hist.doc_id]
            out["live_json"] = len(orjson.dumps(live.to_json()))
            sv = decode_state_vector(live.doc.get_state())
            t0 = time.perf_counter()
            res = await eng.compact(hist.doc_id)
            out["compact_s"] = time.perf_counter() - t0
            out["res"] = res
            if res["horizon"] != last or res["folded"] != n:
                raise RuntimeError(f"expected all {n} entries folded up to {last}, got {res}")
        async with SyncEngine(b.db, EngineConfig()) as again:
            t0 = time.perf_counter()
            await again.view(hist.doc_id)
            out["load_snap_s"] = time.perf_counter() - t0
            if decode_state_vector(again._docs[hist.doc_id].doc.get_state()) != sv:
                raise RuntimeError("the document reloaded from the snapshot differs")
    return out


@measurement("engine.compaction", group="engine")
async def compaction(ctx: Context):
    """Op-log bytes before/after engine.compact (everything folded) vs the encoded state,
    for job documents with 1k..20k updates of history; compaction and reload times."""
    sizes = [1_000, 5_000] if ctx.quick else [1_000, 10_000, 20_000]
    rows = []
    try:
        for n in sizes:
            r = await _one(ctx, n)
            res = r["res"]
            h = f"H={n // 1000}k"
            ratio = res["bytes_after"] / res["state_bytes"]
            rows += [
                row(f"{h}: log bytes before", res["bytes_before"] / 1024, "KB",
                    f"{n:,} log entries, {res['bytes_before'] / n:.0f} B/update"),
                row(f"{h}: bytes after", res["bytes_after"] / 1024, "KB",
                    f"snapshot + remaining log; {res['folded']:,} entries folded"),
                row(f"{h}: encoded state", res["state_bytes"] / 1024, "KB",
                    f"doc.get_update(); live content {r['live_json'] / 1024:.1f} KB JSON (the rest: tombstones)"),
                row(f"{h}: after / state", ratio, "ratio",
                    f"target <= {RATIO_TARGET:g}x: {'MET' if ratio <= RATIO_TARGET else 'NOT met'}; "
                    f"log shrank {res['bytes_before'] / max(res['bytes_after'], 1):.1f}x"),
                row(f"{h}: compact time", r["compact_s"] * 1e3, "ms",
                    "engine.compact: rebuild the prefix from the log (merge_updates) + encode + write + delete"),
                row(f"{h}: first access, whole log", r["load_log_s"] * 1e3, "ms",
                    "fresh engine, before compaction (merge of every log entry, applied)"),
                row(f"{h}: first access, snapshot", r["load_snap_s"] * 1e3, "ms",
                    "fresh engine, after compaction"),
            ]
    finally:
        clear_history_cache()
    return rows
