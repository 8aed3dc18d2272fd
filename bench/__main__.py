"""``python -m bench [--quick] [--only NAME ...] [--json PATH] [--list]``.

Runs every registered measurement (bench/m_*.py, bench/engine_*.py) in this one process,
prints a table and writes a JSON file (default bench/results/latest.json). Exit status 1 if a
measurement raised (a skipped one, e.g. PostgreSQL unreachable, does not count).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .registry import BENCH_DIR, Context, Measurement, Skip, discover, select

DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def _postgres_info(dsn: str) -> dict[str, Any] | None:
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            ver = conn.execute("SHOW server_version").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
            sc = conn.execute("SHOW synchronous_commit").fetchone()[0]
        return {"server_version": ver, "fsync": fsync, "synchronous_commit": sc}
    except Exception as e:  # noqa: BLE001 - informational only
        return {"error": f"{type(e).__name__}: {e}"[:200]}


def _git() -> dict[str, Any] | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(ctx: Context) -> dict[str, Any]:
    import sqlite3

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": _cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "pycrdt": _version("pycrdt"),
        "psycopg": _version("psycopg"),
        "sqlalchemy": _version("sqlalchemy"),
        "sqlite": sqlite3.sqlite_version,
        "postgres": _postgres_info(ctx.pg_dsn),
        "git": _git(),
    }


def run_one(m: Measurement, ctx: Context) -> dict[str, Any]:
    gc.collect()
    start = time.perf_counter()
    out: dict[str, Any] = {"name": m.name, "group": m.group, "module": m.module, "description": m.doc}
    try:
        res = m.func(ctx)
        if inspect.isawaitable(res):
            res = asyncio.run(_await(res))
        rows = list(res or [])
        for r in rows:
            if not isinstance(r, dict) or "metric" not in r or "value" not in r:
                raise TypeError(f"measurement {m.name} returned a malformed row: {r!r}")
        out.update(status="ok", rows=[{"name": m.name, **r} for r in rows])
    except Skip as e:
        out.update(status="skipped", rows=[], reason=str(e))
    except Exception as e:  # noqa: BLE001 - one broken measurement must not hide the others
        traceback.print_exc()
        out.update(status="error", rows=[], error=f"{type(e).__name__}: {e}")
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


async def _await(aw: Any) -> Any:
    return await aw


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:,.2f}"
        return f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def print_table(results: list[dict[str, Any]], quick: bool) -> None:
    header = ("name", "metric", "value", "unit", "notes")
    lines: list[tuple[str, ...]] = []
    for res in results:
        if res["status"] == "ok":
            for r in res["rows"]:
                lines.append((res["name"], str(r["metric"]), _fmt(r["value"]), str(r.get("unit", "")), str(r.get("notes", ""))))
        else:
            why = res.get("reason") or res.get("error") or ""
            lines.append((res["name"], res["status"].upper(), "", "", why))
    title = f"bench ({'quick' if quick else 'full'})"
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h) for i, h in enumerate(header)]
        widths[-1] = len(header[-1])
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for ln in lines:
            print("  ".join(c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in enumerate(zip(ln, widths))))
        return
    table = Table(title=title, show_lines=False)
    for h in header:
        table.add_column(h, justify="right" if h == "value" else "left", overflow="fold")
    prev = None
    for ln in lines:
        table.add_row(*(escape(c) for c in (ln[0] if ln[0] != prev else "", *ln[1:])))
        prev = ln[0]
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every measurement")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this measurement (exact name, group, or glob like 'sql.*'); repeatable")
    p.add_argument("--json", metavar="PATH", default=str(DEFAULT_JSON), help=f"result file (default {DEFAULT_JSON})")
    p.add_argument("--list", action="store_true", help="list the registered measurements and exit")
    p.add_argument("--pg-dsn", metavar="DSN", help="PostgreSQL DSN (default $BENCH_PG_DSN or the local test db)")
    args = p.parse_args(argv)

    discover()
    try:
        chosen = select(args.only)
    except KeyError as e:
        p.error(str(e.args[0]))
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.group:8} {m.doc}")
        return 0

    ctx = Context(quick=args.quick)
    if args.pg_dsn:
        ctx.pg_dsn = args.pg_dsn
    info = machine_info(ctx)
    results = []
    for m in chosen:
        print(f"running {m.name} ...", file=sys.stderr, flush=True)
        res = run_one(m, ctx)
        print(f"  {res['status']} in {res['seconds']:.1f}s", file=sys.stderr, flush=True)
        results.append(res)

    print_table(results, args.quick)
    doc = {"machine": info, "quick": args.quick, "argv": sys.argv[1:], "results": results}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if any(r["status"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
