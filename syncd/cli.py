"""``syncd``: run and diagnose the sync daemon. A thin wrapper over the library."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import click

from .config import Settings
from .output import emit, emit_table, fail, json_option

__all__ = ["main", "cli"]


def _db(url: str | None):
    from schema.db import create_engine, normalize_url
    return create_engine(normalize_url(url))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@click.group()
@click.option("--database-url", envvar="DATABASE_URL", default=None,
              help="SQLAlchemy URL; default: SQLite file var/syncd.sqlite3")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """Offline-first sync daemon: serve devices, project to SQL, explain and verify."""
    ctx.obj = {"database_url": database_url}


@cli.command()
@json_option
@click.pass_context
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Create or upgrade the database schema (Alembic)."""
    from schema.db import migrate as do_migrate, normalize_url
    url = normalize_url(ctx.obj["database_url"])
    _run(do_migrate(url))
    emit({"migrated": True, "database": url.split("@")[-1]}, as_json, "database is at the latest schema")


@cli.command()
@click.option("--host", default=None, help="Bind address (default SYNCD_HOST or 127.0.0.1)")
@click.option("--port", default=None, type=int, help="Port (default SYNCD_PORT or 8000)")
@click.option("--no-migrate", is_flag=True, help="Do not upgrade the schema on start")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, no_migrate: bool) -> None:
    """Serve the API, live sync and the PWA."""
    import uvicorn

    from schema.db import migrate as do_migrate, normalize_url
    from syncd import gc_policy
    try:
        gc_thresholds = gc_policy.thresholds_from_env(os.environ.get("SYNCD_GC_THRESHOLD"))
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    settings = Settings.from_env()
    url = normalize_url(ctx.obj["database_url"])
    if not no_migrate:
        _run(do_migrate(url))
    from server.app import create_app
    overrides = {"keys_dir": f"{settings.data_dir}/keys"}
    for env, key in (("SYNCD_API_RATE_LIMIT", "api_rate_limit"), ("SYNCD_LOGIN_RATE_LIMIT", "login_rate_limit")):
        if os.environ.get(env):
            overrides[key] = int(os.environ[env])
    app = create_app(database_url=url, redis_url=settings.redis_url, **overrides)
    # Long-lived objects (documents, connections) would make every full GC pass walk them all:
    # freeze what startup built and collect the oldest generation rarely (bench: p99 347 -> 27 ms).
    gc_policy.apply(gc_thresholds)
    # uvloop and httptools when installed (dependencies; the pure-Python fallbacks still work)
    import importlib.util
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    # SYNCD_ACCESS_LOG=0 turns uvicorn's access log off (one log record + write per request)
    access_log = os.environ.get("SYNCD_ACCESS_LOG", "1").strip().lower() not in ("0", "false", "no", "off")
    click.echo(f"syncd serve: event loop {loop}, HTTP {http}, WebSocket websockets-sansio, "
               f"access log {'on' if access_log else 'off (SYNCD_ACCESS_LOG=0)'}", err=True)
    # each broadcast is encoded once: per-connection compression would redo it per recipient
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="info",
                loop=loop, http=http, ws="websockets-sansio", access_log=access_log,
                ws_per_message_deflate=False, ws_max_size=2 * 1024 * 1024)


@cli.command()
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Replay the op log and compare it with the SQL tables; non-zero exit on a difference."""
    from .verify import verify as do_verify

    async def go():
        db = _db(ctx.obj["database_url"])
        try:
            return await do_verify(db)
        finally:
            await db.dispose()

    report = _run(go())
    if as_json:
        emit(report.to_json(), True)
    else:
        click.echo(f"{report.documents} documents, {report.log_entries} log entries replayed")
        for d in report.differences[:50]:
            click.echo(f"DIFF {d.doc_id} {d.table} {d.key}: expected {d.expected!r}, found {d.actual!r}")
        click.echo("OK: the projection equals the merge of the log" if report.ok
                   else f"FAILED: {len(report.differences)} difference(s)")
    if not report.ok:
        raise SystemExit(1)


@cli.command()
@click.argument("doc_id")
@click.argument("path")
@json_option
@click.pass_context
def explain(ctx: click.Context, doc_id: str, path: str, as_json: bool) -> None:
    """Why a field has its value: DOC_ID like job:<uuid>, PATH like status or materials/<id>/quantity."""
    from .engine import SyncEngine
    from .errors import SyncError

    async def go():
        db = _db(ctx.obj["database_url"])
        try:
            return await SyncEngine(db).explain(doc_id, path)
        finally:
            await db.dispose()

    try:
        out = _run(go())
    except (SyncError, KeyError, ValueError) as e:
        fail(getattr(e, "message", None) or str(e).strip("'\""), as_json)
        return
    if as_json:
        emit(out, True)
        return
    rows = [("*" if c.get("winner") else "", repr(c.get("value")), c.get("author"), c.get("role"), c.get("device"),
             c.get("time")) for c in out.get("candidates", [])]
    emit_table(f"{doc_id} {path}: rule {out.get('rule')} -> {out.get('value')!r}",
               ["won", "value", "author", "role", "device", "time"], rows, out, False)
    click.echo(out.get("reason_text") or out.get("reason") or "")


@cli.command()
@click.argument("doc_id", required=False)
@json_option
@click.pass_context
def compact(ctx: click.Context, doc_id: str | None, as_json: bool) -> None:
    """Fold acknowledged log entries into snapshots (one document, or all)."""
    from .engine import SyncEngine
    from .store import Store

    async def go():
        db = _db(ctx.obj["database_url"])
        try:
            eng = SyncEngine(db)
            if doc_id:
                ids = [doc_id]
            else:
                async with db.connect() as conn:
                    ids = [h["doc_id"] for h in await Store(db.dialect.name).heads(conn)]
            if as_json:
                return [await eng.compact(d) for d in ids]
            out = []
            with click.progressbar(ids, label="compacting", file=sys.stderr) as bar:
                for d in bar:
                    out.append(await eng.compact(d))
            return out
        finally:
            await db.dispose()

    out = _run(go())
    emit_table("compaction", ["doc", "folded", "horizon", "bytes before", "bytes after"],
               [(o["doc_id"], o["folded"], o["horizon"], o["bytes_before"], o["bytes_after"]) for o in out], out, as_json)


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Devices, last seen, pending work and projection lag."""
    from .status import collect_status

    async def go():
        db = _db(ctx.obj["database_url"])
        try:
            return await collect_status(db)
        finally:
            await db.dispose()

    st = _run(go())
    if as_json:
        emit(st, True)
        return
    emit_table("devices", ["device", "user", "last seen", "docs acked", "behind (entries)"],
               [(d["device_id"], d["user"], d["last_seen_at"], d["docs"], d["behind"]) for d in st["devices"]], st, False)
    emit_table("documents", ["documents", "log entries", "projection lag (entries)", "snapshots"],
               [(st["documents"], st["log_entries"], st["projection_lag"], st["snapshots"])], st, False)


@cli.command("seed-demo")
@json_option
@click.pass_context
def seed_demo(ctx: click.Context, as_json: bool) -> None:
    """Create the demo company (users, customers, jobs) unless it exists."""
    from .demo import seed_demo as do_seed

    async def go():
        db = _db(ctx.obj["database_url"])
        try:
            return await do_seed(db)
        finally:
            await db.dispose()

    out = _run(go())
    human = ("demo company created; sign in as " + ", ".join(out["users"]) + f" with password {out['password']!r}"
             if out["created"] else "demo company already present")
    emit(out, as_json, human)


from .users import user  # noqa: E402  (the `syncd user add|list` subgroup)

cli.add_command(user)

from .cli_backup import backup_commands  # noqa: E402  (`syncd backup` / `syncd restore`)

for _command in backup_commands:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="syncd")


if __name__ == "__main__":
    main()
