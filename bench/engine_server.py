"""The server over real sockets, side by side with the peers a user would pick instead.

Every measurement starts its servers itself, each in its own process, and drives them from
one Node load generator process (``bench/peers/loadgen.mjs``): ours (``syncd serve`` on a
scratch SQLite file and/or a scratch PostgreSQL database), Hocuspocus 4.7 (default
configuration, no persistence extension) and pycrdt-websocket 0.16 (uvicorn, in memory).

The machine has 2 cores: the load generator, the server and (for ours on PostgreSQL) the
database share them. Every step reports the server's CPU (% of one core), the load
generator's CPU and the whole machine's CPU (at most 200 %), so a saturated load generator is
visible. Ours acknowledges and broadcasts an edit only after its durable commit (SQLite
synchronous=FULL / PostgreSQL fsync on) and checks every write (author, role, device, clock,
schema, policy); the peers keep documents in memory and check nothing.

See bench/README.md ("Server measurements") for the workloads and the row meanings.
"""

from __future__ import annotations

import asyncio
import base64
import random
import sys
import time
import uuid
from typing import Any

from .engine_server_kit import (Identity, LoadGen, Sampler, Server, Writer, fmt_ms, hocuspocus, identities, ours,
                                push_http, pycrdt_websocket, require_node, uuid4s)
from .registry import Context, Skip, measurement, row

P99_TARGET_MS = 50.0
FIELD_TARGET_RATE = 1000
FIELD_RSS_TARGET_MB = 300
HTTP_P99_TARGET_MS = 25.0
CREW_TARGET_MS = 200.0


def _pg_ok(ctx: Context) -> bool:
    try:
        from .engine_common import pg_admin_connect

        with pg_admin_connect(ctx):
            return True
    except Skip:
        return False


# --- the shape of a step -----------------------------------------------------------------------------

def _passed(res: dict[str, Any], rate: float, p99_target: float) -> tuple[bool, str]:
    """Did the server sustain ``rate``: p99 within target, everything delivered, no closes, and
    the load generator actually sent at the rate?"""
    why = []
    if res["p99_ms"] is None or res["p99_ms"] > p99_target:
        why.append(f"p99 {fmt_ms(res['p99_ms'])} ms > {p99_target:.0f}")
    if res["expected"] and res["missing"] > 0.001 * res["expected"]:
        why.append(f"{res['missing']} of {res['expected']} deliveries missing after the drain")
    if res["closes"]:
        why.append(f"{res['closes']} connections closed ({res['close_samples'][:1]})")
    if res["errors"]:
        why.append(f"{res['errors']} errors ({res['error_samples'][:1]})")
    if res["send_rate"] < 0.95 * rate:
        why.append(f"load generator sent only {res['send_rate']:.0f}/s")
    return (not why), "; ".join(why)


def _bound(s: Any) -> str:
    """Where the CPU went in a failed step: the likely bottleneck, in words."""
    out = []
    if s.cpu_pct >= 85:
        out.append(f"server CPU-bound ({s.cpu_pct:.0f}% of a core)")
    if s.loadgen_cpu_pct >= 85:
        out.append(f"load generator saturated ({s.loadgen_cpu_pct:.0f}%)")
    if s.postgres_cpu_pct >= 50:
        out.append(f"PostgreSQL busy ({s.postgres_cpu_pct:.0f}%)")
    if s.other_cpu_pct >= 40:
        out.append(f"other work on the machine (outside this benchmark) took {s.other_cpu_pct:.0f}%")
    if not out and s.machine_cpu_pct >= 180:
        out.append(f"machine saturated ({s.machine_cpu_pct:.0f}%/200%)")
    return ", ".join(out) or f"no CPU saturated (server {s.cpu_pct:.0f}%, machine {s.machine_cpu_pct:.0f}%/200%)"


def _step_notes(res: dict[str, Any], s: Any, extra: str = "") -> str:
    pct = 100.0 * res["delivered"] / res["expected"] if res["expected"] else 100.0
    p99 = "undelivered" if res["missing"] and res["p99_ms"] and res["p99_ms"] >= 60000 else f"{fmt_ms(res['p99_ms'])}"
    return (f"p50 {fmt_ms(res['p50_ms'])} / p99 {p99} ms (delivered only: p99 {fmt_ms(res['p99_delivered_ms'])}, "
            f"max {fmt_ms(res['max_ms'])}); sent {res['send_rate']:.0f}/s; delivered {pct:.1f}% of "
            f"{res['expected']:,}; server CPU {s.cpu_pct:.0f}% RSS {s.rss_mb:.0f} MB; loadgen CPU "
            f"{s.loadgen_cpu_pct:.0f}%" + (f"; postgres CPU {s.postgres_cpu_pct:.0f}%" if s.postgres_cpu_pct >= 1 else "")
            + f"; other work CPU {s.other_cpu_pct:.0f}% (machine {s.machine_cpu_pct:.0f}%/200%)"
            + (f"; PostgreSQL sessions opened by the server during the step: {res['pg_sessions_opened']}"
               if res.get("pg_sessions_opened") else "")
            + (f"; {extra}" if extra else ""))


async def _prime(srv: Server, lg: LoadGen, senders: int, rate: int, drain: float) -> tuple[dict[str, Any], Any, int]:
    """Each sending connection writes once (within ~5 s) before the ladder: the first write of
    a connection costs ours a client-id binding (one more query and row), which a steady
    state does not pay. Measured and reported apart."""
    rate = max(rate, (senders + 4) // 5)
    sampler = Sampler(srv.pid, lg.pid)
    sampler.start()
    res = await lg.prime(rate, max(drain, 5.0))
    return res, await sampler.stop(), rate


def _prime_row(label: str, prime: tuple[dict[str, Any], Any, int]) -> dict:
    res, s, rate = prime
    return row(f"{label}: first write of each connection @{rate}/s p99", res["p99_ms"] if not res["missing"] else None,
               "ms", "not part of the ladder (ours binds each new Yjs client id to its device on its first write); "
               + _step_notes(res, s))


async def _ladder(srv: Server, lg: LoadGen, rates: list[int], seconds: float, drain: float, p99_target: float,
                  warmup: float) -> list[tuple[int, dict[str, Any], Any, bool, str]]:
    """Step the aggregate rate up; stop after two failed steps in a row (one failed step can
    be a single stall, e.g. a garbage-collector pause, below the real limit)."""
    out = []
    if warmup > 0:
        await lg.step(rates[0], warmup, drain)
    for rate in rates:
        sampler = Sampler(srv.pid, lg.pid)
        pg0 = srv.pg_sessions()
        sampler.start()
        res = await lg.step(rate, seconds, drain)
        s = await sampler.stop()
        pg1 = srv.pg_sessions()
        res["pg_sessions_opened"] = (pg1 - pg0) if pg0 is not None and pg1 is not None else None
        ok, why = _passed(res, rate, p99_target)
        if not ok:
            why += f" [{_bound(s)}]"
        out.append((rate, res, s, ok, why))
        if len(out) >= 2 and not out[-1][3] and not out[-2][3]:
            break
    return out


def _summary(steps: list) -> tuple[Any, str]:
    """(best passed step or None, words about the failures)."""
    good = [st for st in steps if st[3]]
    best = good[-1] if good else None
    bad = [st for st in steps if not st[3]]
    words = []
    below = [st for st in bad if best is not None and st[0] < best[0]]
    if below:
        words.append("also failed below it: " + "; ".join(f"{st[0]}/s ({st[4]})" for st in below))
    above = [st for st in bad if best is None or st[0] > best[0]]
    if above:
        words.append("failed at " + "; ".join(f"{st[0]}/s: {st[4]}" for st in above))
    else:
        words.append(f"every step passed (highest tried {steps[-1][0]}/s)")
    return best, "; ".join(words)


# --- server.fanout_one_doc --------------------------------------------------------------------------

async def _fanout_conns(srv: Server, n: int, doc: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """n editors on one job document, each writing the name of its own material item."""
    if srv.kind == "ours":
        idents = await identities(srv, ["office"] * (n + 1), prefix=f"fan{n}")
        seeder, idents = idents[0], idents[1:]
        w = Writer(seeder)
        from schema import documents as D

        cust = str(uuid.uuid4())
        await push_http(srv, seeder, [(doc, w.edit(doc, lambda d, s: D.write_fields(
            d, {"title": "Shared job", "status": "scheduled", "customer_id": cust}, **s)))])
    else:
        idents = [Identity(str(uuid.uuid4()), "office", f"peer-{i:04d}", "") for i in range(n)]
    return [{"device": i, "doc": doc, "url": srv.ws_url(doc, ident.token),
             "send": {"root": "materials", "item": str(uuid.uuid4()), "field": "name", "weight": 1}}
            for i, ident in enumerate(idents)], [ident.json() for ident in idents]


async def _fanout_one(ctx: Context, srv: Server, n: int, rates: list[int], seconds: float, drain: float
                      ) -> tuple[list, Any]:
    doc = f"job:{uuid.uuid4()}"
    conns, devs = await _fanout_conns(srv, n, doc)
    lg = await LoadGen.start({"protocol": srv.protocol, "devices": devs, "connections": conns})
    try:
        info = await lg.connect()
        if info["failed"]:
            raise RuntimeError(f"{info['failed']} of {n} connections failed: {info['failures'][:2]}")
        print(f"    {srv.name} N={n}: connected in {info['ms']:.0f} ms", flush=True, file=sys.stderr)
        primed = await _prime(srv, lg, n, rates[0], drain)
        return await _ladder(srv, lg, rates, seconds, drain, P99_TARGET_MS, warmup=ctx.size(2, 0.5)), primed
    finally:
        await lg.close()


@measurement("server.fanout_one_doc", group="server")
async def fanout_one_doc(ctx: Context):
    """One shared job document, N editors over WebSocket sending small Map updates at a fixed
    aggregate rate stepped up; highest rate with p99 edit->other-clients latency <= 50 ms, for
    ours (SQLite, PostgreSQL), Hocuspocus 4.7 and pycrdt-websocket 0.16."""
    require_node()
    ns = [50, 200] if not ctx.quick else [50]
    rates = [50, 100, 200, 400, 800, 1600, 2400, 3200, 4800] if not ctx.quick else [100, 800]
    seconds = ctx.size(5, 1.5)
    drain = ctx.size(3, 1.5)
    servers: list[tuple[str, Any]] = [("ours-sqlite", lambda: ours(ctx, "sqlite"))]
    if not ctx.quick and _pg_ok(ctx):
        servers.append(("ours-pg", lambda: ours(ctx, "postgresql")))
    servers += [("hocuspocus", hocuspocus), ("pycrdt-websocket", pycrdt_websocket)]
    results: dict[tuple[str, int], list] = {}
    failed: dict[tuple[str, int], str] = {}
    problems: dict[tuple[str, int], str] = {}
    primes: dict[tuple[str, int], Any] = {}
    for n in ns:
        for name, factory in servers:  # a fresh server process for every N
            try:
                async with factory() as srv:
                    try:
                        results[(name, n)], primes[(name, n)] = await _fanout_one(ctx, srv, n, rates, seconds, drain)
                    except Exception as e:  # noqa: BLE001 - one broken server must not hide the others
                        failed[(name, n)] = f"{type(e).__name__}: {e}"[:400] + srv.exit_info()
                    if srv.kind == "ours" and srv.log_problems():
                        problems[(name, n)] = srv.log_problems()
            except Skip as e:
                failed[(name, n)] = f"skipped: {e}"
    rows = [row(f"N={n} {name}: server log", None, "", f"problems logged: {p}") for (name, n), p in problems.items()]
    for n in ns:
        for name, _ in servers:
            if (name, n) in failed:
                rows.append(row(f"N={n} {name}: highest rate p99<=50ms", None, "upd/s", failed[(name, n)]))
                continue
            steps = results[(name, n)]
            best, words = _summary(steps)
            notes = []
            if best is not None:
                rate, res, s, _, _ = best
                notes.append(f"at {rate}/s: p50 {fmt_ms(res['p50_ms'])} / p99 {fmt_ms(res['p99_ms'])} ms, server CPU "
                             f"{s.cpu_pct:.0f}%, RSS {s.rss_mb:.0f} MB, loadgen CPU {s.loadgen_cpu_pct:.0f}%")
            notes.append(words)
            if name.startswith("ours"):
                notes.append("acks after the durable commit")
            rows.append(row(f"N={n} {name}: highest rate p99<=50ms", best[0] if best else 0, "upd/s", "; ".join(notes)))
        for name, _ in servers:
            if (name, n) not in results:
                continue
            rows.append(_prime_row(f"N={n} {name}", primes[(name, n)]))
            for rate, res, s, ok, why in results[(name, n)]:
                rows.append(row(f"N={n} {name} @{rate}/s p99", res["p99_ms"] if not res["missing"] else None,
                                "ms", ("ok; " if ok else f"FAIL ({why}); ") + _step_notes(res, s)))
    return rows


# --- server.field_workload --------------------------------------------------------------------------

async def _seed_jobs(srv: Server, seeder: Identity, crews: list[list[str]], *, extra: Any = None
                     ) -> tuple[list[str], list[str]]:
    """One customer and one job per entry of ``crews`` (the crew's user ids); return the job
    and customer document ids. ``extra(writer, job_doc) -> [updates]`` adds history."""
    from schema import documents as D

    w = Writer(seeder)
    updates: list[tuple[str, bytes]] = []
    jobs, custs = [], []
    for i, crew in enumerate(crews):
        cid, jid = str(uuid.uuid4()), str(uuid.uuid4())
        cdoc, jdoc = D.doc_id_for("customer", cid), D.doc_id_for("job", jid)
        updates.append((cdoc, w.edit(cdoc, lambda d, s: D.write_fields(d, {
            "name": f"Customer {i}", "phone": f"+1 555 {i:04d}", "address": f"{i} Main St, Springfield"}, **s))))
        updates.append((jdoc, w.edit(jdoc, lambda d, s: D.write_fields(d, {
            "title": f"Job {i}", "status": "scheduled", "customer_id": cid, "crew": crew,
            "address": f"{i} Main St, Springfield", "scheduled_start": "2025-06-02"}, **s))))
        if extra is not None:
            updates += [(jdoc, u) for u in extra(w, jdoc, i)]
        jobs.append(jdoc)
        custs.append(cdoc)
    await push_http(srv, seeder, updates)
    return jobs, custs


def _field_plan(n_jobs: int, n_crew: int, n_office: int) -> list[list[int]]:
    """Crew device indexes per job: n_crew devices dealt round-robin over n_jobs jobs."""
    per_job: list[list[int]] = [[] for _ in range(n_jobs)]
    for c in range(n_crew):
        per_job[c % n_jobs].append(c)
    return per_job


async def _field_config(srv: Server, n_jobs: int, n_crew: int, n_office: int, office_share: float
                        ) -> dict[str, Any]:
    per_job = _field_plan(n_jobs, n_crew, n_office)
    if srv.kind == "ours":
        idents = await identities(srv, ["crew"] * n_crew + ["office"] * (n_office + 1), prefix="field")
        crew, office, seeder = idents[:n_crew], idents[n_crew:n_crew + n_office], idents[-1]
        jobs, _ = await _seed_jobs(srv, seeder, [[crew[c].user for c in cs] for cs in per_job])
        devs = [i.json() for i in crew + office]
    else:
        devs = [{"user": str(uuid.uuid4()), "role": "crew" if i < n_crew else "office", "device": f"peer-{i:04d}",
                 "token": ""} for i in range(n_crew + n_office)]
        jobs = [f"job:{uuid.uuid4()}" for _ in range(n_jobs)]
    conns = []
    for j, doc in enumerate(jobs):
        cs = per_job[j]
        for c in cs:
            conns.append({"device": c, "doc": doc, "url": srv.ws_url(doc, devs[c]["token"]),
                          "send": {"root": "materials", "item": str(uuid.uuid4()), "field": "name",
                                   "weight": (1 - office_share) / len(cs)}})
        for o in range(n_office):
            d = n_crew + o
            conns.append({"device": d, "doc": doc, "url": srv.ws_url(doc, devs[d]["token"]),
                          "send": {"root": "materials", "item": str(uuid.uuid4()), "field": "name",
                                   "weight": office_share / n_office}})
    return {"protocol": srv.protocol, "devices": devs, "connections": conns, "connect_concurrency": 32}


async def _field_run(ctx: Context, srv: Server, n_jobs: int, n_crew: int, n_office: int, rates: list[int],
                     seconds: float, drain: float) -> list[dict]:
    cfg = await _field_config(srv, n_jobs, n_crew, n_office, office_share=0.1)
    rss_idle = Sampler(srv.pid).rss_mb()
    lg = await LoadGen.start(cfg)
    try:
        info = await lg.connect()
        if info["failed"]:
            raise RuntimeError(f"{srv.name}: {info['failed']} connections failed: {info['failures'][:2]}")
        print(f"    {srv.name}: {len(cfg['connections'])} connections in {info['ms']:.0f} ms", flush=True,
              file=sys.stderr)
        rss_conn = Sampler(srv.pid).rss_mb()
        primed = await _prime(srv, lg, len(cfg["connections"]), rates[0], drain)
        steps = await _ladder(srv, lg, rates, seconds, drain, P99_TARGET_MS, warmup=ctx.size(2, 0.5))
    finally:
        await lg.close()
    name = srv.name
    problems = srv.log_problems() if srv.kind == "ours" else ""
    n_conn = len(cfg["connections"])
    best, words = _summary(steps)
    at_target = next((st for st in steps if st[0] == FIELD_TARGET_RATE), None)
    peak_rss = max(s.rss_mb for _, _, s, _, _ in steps)
    if ctx.quick:
        verdict = "quick run: smaller sizes, no verdict"
    elif at_target is None:
        verdict = f"NOT met: the ladder stopped before {FIELD_TARGET_RATE}/s"
    else:
        _, res, s, ok, why = at_target
        met = ok and s.rss_mb <= FIELD_RSS_TARGET_MB
        verdict = (f"{'MET' if met else 'NOT met'} at {FIELD_TARGET_RATE}/s: p99 {fmt_ms(res['p99_ms'])} ms, "
                   f"RSS {s.rss_mb:.0f} MB" + ("" if ok else f" ({why})"))
    if srv.kind != "ours":
        verdict = "peer, same load, no auth/validation/persistence; " + verdict
    rows = [row(f"{name}: highest rate p99<=50ms", best[0] if best else 0, "edits/s",
                f"{verdict}; {n_crew + n_office} devices, {n_conn} connections, {n_jobs} jobs; {words}"),
            row(f"{name}: server RSS", round(peak_rss, 1), "MB",
                f"idle {rss_idle:.0f} MB, with {n_conn} connections {rss_conn:.0f} MB, peak under load "
                f"{peak_rss:.0f} MB (target <= {FIELD_RSS_TARGET_MB} MB); connecting all took {info['ms']:.0f} ms")]
    rows.append(_prime_row(name, primed))
    for rate, res, s, ok, why in steps:
        rows.append(row(f"{name} @{rate}/s p99", res["p99_ms"] if not res["missing"] else None, "ms",
                        ("ok; " if ok else f"FAIL ({why}); ") + _step_notes(res, s)))
    if problems:
        rows.append(row(f"{name}: server log", None, "", f"problems logged: {problems}"))
    return rows


@measurement("server.field_workload", group="server")
async def field_workload(ctx: Context):
    """500 devices over WebSocket: 200 job documents, ~2.5 crew devices per job (one
    connection each) and 5 office devices watching every job (one connection per job each:
    1,000 connections); edits spread over the jobs, stepped up; target for ours >= 1,000
    edits/s with p99 <= 50 ms and server RSS <= 300 MB. Full runs add the peers, same load."""
    require_node()
    n_jobs, n_office = ctx.size(200, 20), ctx.size(5, 2)
    n_crew = ctx.size(495, 48)
    rates = [100, 250, 500, 1000, 1500, 2000] if not ctx.quick else [100, 500]
    seconds, drain = ctx.size(8, 1.5), ctx.size(3, 1.5)
    pg = _pg_ok(ctx)
    servers: list[Any] = []
    if pg:
        servers.append(lambda: ours(ctx, "postgresql"))
    if not ctx.quick or not pg:
        servers.append(lambda: ours(ctx, "sqlite"))
    if not ctx.quick:
        servers += [hocuspocus, pycrdt_websocket]
    rows = []
    for factory in servers:
        try:
            async with factory() as srv:
                rows += await _field_run(ctx, srv, n_jobs, n_crew, n_office, rates, seconds, drain)
        except Skip as e:
            rows.append(row("peer skipped", None, "", str(e)))
    return rows


# --- server.http_push -------------------------------------------------------------------------------

@measurement("server.http_push", group="server")
async def http_push(ctx: Context):
    """100 devices pushing one small update each per request via HTTP POST /api/sync/push at
    300 pushes/s aggregate (then higher, for headroom): p50/p99 acknowledgement latency
    (target p99 <= 25 ms at 300/s)."""
    require_node()
    n_dev, n_jobs = 100, 50
    rates = [100, 300, 600, 1200] if not ctx.quick else [100, 300]
    seconds, drain = ctx.size(10, 3), ctx.size(3, 2)
    backends = (["postgresql"] if _pg_ok(ctx) else []) + (["sqlite"] if not ctx.quick or not _pg_ok(ctx) else [])
    rows = []
    for backend in backends:
        async with ours(ctx, backend) as srv:
            idents = await identities(srv, ["office"] * (n_dev + 1), prefix="http")
            seeder, devs = idents[-1], idents[:-1]
            jobs, _ = await _seed_jobs(srv, seeder, [[] for _ in range(n_jobs)])
            conns = [{"device": i, "doc": jobs[i % n_jobs], "url": "",
                      "send": {"root": "materials", "item": str(uuid.uuid4()), "field": "name", "weight": 1}}
                     for i in range(n_dev)]
            lg = await LoadGen.start({"protocol": "http", "http_url": srv.http_url,
                                      "devices": [d.json() for d in devs], "connections": conns})
            try:
                await lg.connect()
                primed = await _prime(srv, lg, n_dev, rates[0], drain)
                steps = await _ladder(srv, lg, rates, seconds, drain, HTTP_P99_TARGET_MS, warmup=ctx.size(2, 0.5))
            finally:
                await lg.close()
            problems = srv.log_problems()
        name = srv.name
        if problems:
            rows.append(row(f"{name}: server log", None, "", f"problems logged: {problems}"))
        at = next((st for st in steps if st[0] == 300), None)
        if at is None:
            rows.append(row(f"{name}: ack p99 @300/s", None, "ms",
                            f"NOT met: the ladder stopped before 300/s ({_summary(steps)[1]})"))
        else:
            _, res, s, ok, why = at
            rows.append(row(f"{name}: ack p99 @300/s", res["p99_ms"] if not res["missing"] else None, "ms",
                            f"{'MET' if ok else f'NOT met ({why})'} (target <= {HTTP_P99_TARGET_MS:.0f} ms); "
                            f"p50 {fmt_ms(res['p50_ms'])} ms; request only: p50 {fmt_ms(res['http_service_p50_ms'])} "
                            f"/ p99 {fmt_ms(res['http_service_p99_ms'])} ms; {n_dev} devices over {n_jobs} jobs, one "
                            f"update per request, each device's pushes in order (latency from the scheduled time)"))
        rows.append(_prime_row(name, primed))
        for rate, res, s, ok, why in steps:
            rows.append(row(f"{name} @{rate}/s ack p99", res["p99_ms"] if not res["missing"] else None, "ms",
                            ("ok; " if ok else f"FAIL ({why}); ") + _step_notes(res, s, f"request only p99 "
                                                                               f"{fmt_ms(res['http_service_p99_ms'])} ms")))
    return rows


# --- server.crew_initial_sync -----------------------------------------------------------------------

def _job_history(rng: random.Random, n_edits: int):
    """Extra updates for a crew's job: materials, notes and field edits, one update each."""
    from schema import documents as D

    def make(w: Writer, jdoc: str, i: int) -> list[bytes]:
        out = []
        mats = uuid4s(5)
        for k, mid in enumerate(mats):
            out.append(w.edit(jdoc, lambda d, s: [D.write_material_field(d, mid, f, v, **s) for f, v in
                                                  (("name", f"material {k}"), ("quantity", float(k + 1)),
                                                   ("unit", "pcs"))]))
        for k in range(3):
            out.append(w.edit(jdoc, lambda d, s: D.add_note(d, str(uuid.uuid4()), f"note {k} on job {i}", **s)))
        for k in range(n_edits):
            f = rng.choice(("description", "address", "title"))
            out.append(w.edit(jdoc, lambda d, s: D.write_field(d, f, f"{f} rev {k}", **s)))
        return out
    return make


async def _initial_sync(http: Any, token: str, concurrency: int) -> tuple[float, int, int]:
    """The old way (one request per document): status (every page) then a pull of every listed
    doc from an empty state, applied to fresh pycrdt docs; (seconds, docs, bytes)."""
    from pycrdt import Doc

    t0 = time.perf_counter()
    h = {"Authorization": f"Bearer {token}"}
    docs: list[str] = []
    after = None
    while True:
        r = await http.get("/api/sync/status", params={"limit": 100, **({"after": after} if after else {})}, headers=h)
        r.raise_for_status()
        body = r.json()
        docs += [d["doc_id"] for d in body["data"]["docs"]]
        after = (body.get("meta") or {}).get("next_cursor") or body.get("next_cursor")
        if not after:
            break
    nbytes = 0
    sem = asyncio.Semaphore(concurrency)

    async def pull(doc_id: str) -> None:
        nonlocal nbytes
        async with sem:
            r = await http.get("/api/sync/pull", params={"doc_id": doc_id, "state_vector": "AA"}, headers=h)
            r.raise_for_status()
            upd = base64.b64decode(r.json()["data"]["update"])
            nbytes += len(upd)
            Doc().apply_update(upd)

    await asyncio.gather(*(pull(d) for d in docs))
    return time.perf_counter() - t0, len(docs), nbytes


async def _initial_sync_batch(http: Any, token: str) -> tuple[float, int, int]:
    """As ``replica.sync.pull`` does over ``replica.http.HttpTransport`` (page size 100): one
    ``POST /api/sync/pull {"all": true}`` per page, every answer applied to a fresh pycrdt
    doc; (seconds, docs, bytes)."""
    from pycrdt import Doc

    t0 = time.perf_counter()
    h = {"Authorization": f"Bearer {token}"}
    n = nbytes = 0
    after = None
    while True:
        r = await http.post("/api/sync/pull", json={"all": True, "limit": 100, **({"after": after} if after else {})},
                            headers=h)
        r.raise_for_status()
        body = r.json()
        for res in body["data"]["results"]:
            if "error" in res:
                raise RuntimeError(f"batch pull refused {res['doc_id']}: {res['error']}")
            upd = base64.b64decode(res["update"])
            nbytes += len(upd)
            n += 1
            Doc().apply_update(upd)
        after = body["meta"].get("next_cursor")
        if not after:
            break
    return time.perf_counter() - t0, n, nbytes


async def _initial_sync_replica(http: Any, token: str, user_id: str, path: str) -> tuple[float, int]:
    """A real ``replica.Replica`` (SQLite store, one commit per document) pulling from empty
    through ``replica.http.HttpTransport``; (seconds of the pull, docs)."""
    from replica import Replica
    from replica.http import HttpTransport

    rep = await Replica.open(path, user_id=user_id, role="crew")
    try:
        t0 = time.perf_counter()
        report = await rep.pull(HttpTransport(http, token))
        dt = time.perf_counter() - t0
        report.raise_for_errors()
        return dt, len(report.changed)
    finally:
        await rep.close()


@measurement("server.crew_initial_sync", group="server")
async def crew_initial_sync(ctx: Context):
    """A crew device assigned 20 jobs (with their customers) syncs from empty over HTTP on
    loopback as ``replica.sync.pull`` does (batch pull: one request per page), applied
    locally; cold (server just restarted) and warm; next to the old way (status + one pull per
    document) and a real replica storing what it pulls; target <= 200 ms."""
    import statistics
    import tempfile

    import httpx

    from server.auth.passwords import hash_password
    from schema import tables as t

    n_jobs, n_assigned = ctx.size(200, 40), 20
    n_edits = ctx.size(20, 10)
    reps = ctx.size(5, 2)
    pg = _pg_ok(ctx)
    backends = (["postgresql"] if pg else []) + (["sqlite"] if not ctx.quick or not pg else [])
    rows = []
    rng = random.Random(ctx.seed)
    for backend in backends:
        async with ours(ctx, backend) as srv:
            idents = await identities(srv, ["crew", "crew", "office"], prefix="crewsync")
            crew, other, seeder = idents
            crews = [[crew.user] if i < n_assigned else [other.user] for i in range(n_jobs)]
            hist = _job_history(rng, n_edits)
            await _seed_jobs(srv, seeder, crews, extra=lambda w, jdoc, i: hist(w, jdoc, i) if i < n_assigned else [])
            pw = "bench-password-123"
            pw_hash = hash_password(pw)
            async with srv.db.begin() as conn:
                await conn.execute(t.users.update().where(t.users.c.id == crew.user)
                                   .values(password_hash=pw_hash, email="crew-sync@bench.test"))
            await srv.restart()  # cold: nothing of these documents in the server's memory
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=60.0) as http:
                t0 = time.perf_counter()
                r = await http.post("/api/auth/login", json={"email": "crew-sync@bench.test", "password": pw})
                login_s = time.perf_counter() - t0
                r.raise_for_status()
                token = r.json()["data"]["access_token"]
                cold, n_docs, nbytes = await _initial_sync_batch(http, token)
                warm = [(await _initial_sync_batch(http, token))[0] for _ in range(reps)]
                with tempfile.TemporaryDirectory(dir=ctx.tmpdir) as tmp:
                    replica = [(await _initial_sync_replica(http, token, crew.user, f"{tmp}/crew-{k}.sqlite3"))[0]
                               for k in range(reps)]
            await srv.restart()  # cold again, for the old way
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=60.0) as http:
                r = await http.post("/api/auth/login", json={"email": "crew-sync@bench.test", "password": pw})
                r.raise_for_status()
                token = r.json()["data"]["access_token"]
                old_cold, _, _ = await _initial_sync(http, token, 1)
                old_warm = [(await _initial_sync(http, token, 1))[0] for _ in range(reps)]

        name = srv.name
        w, rp, ow = (statistics.median(x) * 1000 for x in (warm, replica, old_warm))

        def verdict(ms: float) -> str:
            return f"{'MET' if ms <= CREW_TARGET_MS else 'NOT met'} (target <= {CREW_TARGET_MS:.0f} ms)"

        rows.append(row(f"{name}: cold, batch pull", round(cold * 1000, 1), "ms",
                        f"{verdict(cold * 1000)}; POST /api/sync/pull {{all: true}} ({n_docs} docs: {n_assigned} jobs, "
                        f"{n_docs - n_assigned} customers) from empty in one request, as replica.sync.pull does over "
                        f"replica.http.HttpTransport, {nbytes / 1024:.0f} KB applied to pycrdt docs; server restarted "
                        f"before (documents loaded from the log); {n_jobs} jobs on the server"))
        rows.append(row(f"{name}: warm, batch pull", round(w, 1), "ms", f"{verdict(w)}; median of {reps}, same device"))
        rows.append(row(f"{name}: warm, replica (SQLite store)", round(rp, 1), "ms",
                        f"median of {reps}; a real replica.Replica pulling from empty through HttpTransport, "
                        "storing each document (one device commit, synchronous=FULL, per document)"))
        rows.append(row(f"{name}: cold, one request per doc (old)", round(old_cold * 1000, 1), "ms",
                        f"the old way: status + {n_docs} GET /api/sync/pull one at a time; server restarted before"))
        rows.append(row(f"{name}: warm, one request per doc (old)", round(ow, 1), "ms", f"median of {reps}"))
        rows.append(row(f"{name}: login", round(login_s * 1000, 1), "ms",
                        "POST /api/auth/login (argon2id verify), not part of the sync time"))
    return rows
