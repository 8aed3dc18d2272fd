"""Raw pycrdt limits for the job-document workload (no engine code involved)."""

from __future__ import annotations

import statistics
import time

import orjson
from pycrdt import Doc, Map, merge_updates

from .registry import Context, measurement, row
from .workload import big_history_doc, decode_state_vector, job_edits


def _apply_all(per_job: list[list[bytes]], order: list[tuple[int, bytes]], observe: str | None
               ) -> tuple[float, list[Doc]]:
    """Apply in order; ``observe``: None, "doc" (Doc.observe, no-op callback) or "map"
    (fields Map.observe, callback reads event.keys: what validation needs)."""
    docs = [Doc() for _ in per_job]
    seen = [0]

    def on_txn(ev) -> None:
        seen[0] += 1

    def on_keys(ev) -> None:
        seen[0] += len(ev.keys)

    subs = []
    for d in docs:
        m = d.get("fields", type=Map)
        if observe == "doc":
            subs.append(d.observe(on_txn))
        elif observe == "map":
            subs.append(m.observe(on_keys))
    t0 = time.perf_counter()
    for j, u in order:
        docs[j].apply_update(u)
    elapsed = time.perf_counter() - t0
    del subs
    return elapsed, docs


def _apply_merged(per_job: list[list[bytes]], batch: int) -> tuple[float, float, list[Doc]]:
    docs = [Doc() for _ in per_job]
    merge_s = 0.0
    t0 = time.perf_counter()
    for d, ups in zip(docs, per_job):
        for k in range(0, len(ups), batch):
            tm = time.perf_counter()
            merged = merge_updates(*ups[k:k + batch])
            merge_s += time.perf_counter() - tm
            d.apply_update(merged)
    return time.perf_counter() - t0, merge_s, docs


@measurement("crdt.apply_raw", group="crdt")
def apply_raw(ctx: Context):
    """pycrdt apply rate of job-document edit updates into fresh server docs, merge_updates
    batches, and the full-state encode cost of a long-edited document."""
    n = ctx.size(20_000, 2_000)
    n_jobs = 50
    reps = ctx.size(5, 2)
    t0 = time.perf_counter()
    wl = job_edits(n, n_clients=4, n_jobs=n_jobs, seed=ctx.seed)
    gen_s = time.perf_counter() - t0
    per_job = wl.per_job()
    order = [(e.job, e.update) for e in wl.edits]
    sizes = [len(u) for _, u in order]
    rows = [
        row("workload", n, "updates",
            f"4 clients x {n_jobs} job docs, write_field per txn; generated in {gen_s:.1f}s; "
            f"update size median {statistics.median(sizes):.0f} B"),
    ]

    plain, bare, observed = [], [], []
    ref_states = None
    for _ in range(reps):
        s, docs = _apply_all(per_job, order, observe=None)
        plain.append(s)
        ref_states = [decode_state_vector(d.get_state()) for d in docs]
        s, docs = _apply_all(per_job, order, observe="doc")
        bare.append(s)
        s, docs = _apply_all(per_job, order, observe="map")
        observed.append(s)
        if [decode_state_vector(d.get_state()) for d in docs] != ref_states:
            raise RuntimeError("observed apply diverged from plain apply")
    best, med = min(plain), statistics.median(plain)
    rows += [
        row("apply one by one", n / med, "updates/s",
            f"{med / n * 1e6:.2f} us/update median of {reps} (best {n / best:,.0f}/s); in generation order"),
        row("apply one by one + Doc.observe", n / statistics.median(bare), "updates/s",
            f"{statistics.median(bare) / n * 1e6:.2f} us/update; TransactionEvent, no-op callback"),
        row("apply one by one + Map.observe", n / statistics.median(observed), "updates/s",
            f"{statistics.median(observed) / n * 1e6:.2f} us/update; MapEvent on 'fields', callback reads event.keys"),
    ]

    merged_runs = []
    for _ in range(reps):
        total, merge_s, docs = _apply_merged(per_job, 100)
        merged_runs.append((total, merge_s))
        if [decode_state_vector(d.get_state()) for d in docs] != ref_states:
            raise RuntimeError("merged apply diverged from plain apply")
    total, merge_s = sorted(merged_runs)[len(merged_runs) // 2]
    rows.append(row("merge_updates(100) then apply", n / total, "updates/s",
                    f"{total / n * 1e6:.2f} us/update incl. merge; merge is {merge_s / total:.0%} of it"))

    # full-state encode of a doc with a long history (anchors.md: 100k edits of 500 fields)
    n_edits = ctx.size(100_000, 10_000)
    n_fields = 500
    t0 = time.perf_counter()
    doc = big_history_doc(n_edits, n_fields, seed=ctx.seed)
    build_s = time.perf_counter() - t0
    enc = []
    for _ in range(ctx.size(7, 3)):
        t = time.perf_counter()
        state = doc.get_update()
        enc.append(time.perf_counter() - t)
    live = len(orjson.dumps(doc.get("fields", type=Map).to_py()))
    sv = doc.get_state()
    diffs = []
    for _ in range(ctx.size(7, 3)):
        t = time.perf_counter()
        diff = doc.get_update(sv)
        diffs.append(time.perf_counter() - t)
    check = Doc()
    t = time.perf_counter()
    check.apply_update(state)
    load_s = time.perf_counter() - t
    if decode_state_vector(check.get_state()) != decode_state_vector(sv):
        raise RuntimeError("full state did not reload")
    label = f"{n_edits // 1000}k edits of {n_fields} fields"
    plain_doc = big_history_doc(n_edits, n_fields, seed=ctx.seed, keyed=False)
    plain_enc = []
    for _ in range(ctx.size(7, 3)):
        t = time.perf_counter()
        plain_state = plain_doc.get_update()
        plain_enc.append(time.perf_counter() - t)
    plain_live = len(orjson.dumps(plain_doc.get("fields", type=Map).to_py()))
    rows += [
        row("local write_field rate", n_edits / build_s, "edits/s", f"building the {label} doc, 1 txn per edit"),
        row("full-state encode", statistics.median(enc) * 1e3, "ms", f"{label}; median of {len(enc)}"),
        row("full-state size", len(state) / 1024, "KB", f"{label}; live content {live / 1024:.1f} KB JSON (rest: tombstones)"),
        row("full-state load (apply)", load_s * 1e3, "ms", f"{label}, into a fresh doc"),
        row("diff for an up-to-date peer", statistics.median(diffs) * 1e3, "ms",
            f"get_update(own state vector): {len(diff) / 1024:.1f} KB (the delete set is always sent)"),
        row("plain Map.set: full-state encode", statistics.median(plain_enc) * 1e3, "ms",
            f"same edits as m[field] = value (one key per field, the usual Yjs way); for comparison"),
        row("plain Map.set: full-state size", len(plain_state) / 1024, "KB",
            f"live content {plain_live / 1024:.1f} KB JSON; a write-key tombstone also keeps its key string"),
    ]
    return rows
