"""``syncd backup PATH`` and ``syncd restore PATH``: thin CLI over :mod:`syncd.backup`.

Registered in ``syncd/cli.py`` with ``for c in backup_commands: cli.add_command(c)``.

Exit status: 0 done; 1 the backup could not be written, or the restore was refused (damaged
file, database not empty or not migrated): nothing was changed; 2 bad usage (click).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .output import emit, fail, json_option

__all__ = ["backup", "restore", "backup_commands", "ClickProgress"]


class ClickProgress:
    """A click progress bar on stderr per phase (``syncd.backup.Progress``)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, label: str, total: int) -> None:
        self.finish()
        self._bar = click.progressbar(length=max(total, 0), label=label, file=sys.stderr)
        self._bar.__enter__()

    def advance(self, n: int = 1) -> None:
        if self._bar is not None and n:
            self._bar.update(n)

    def finish(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@json_option
@click.pass_context
def backup(ctx: click.Context, path: str, as_json: bool) -> None:
    """Write a consistent backup (op log, snapshots, accounts, devices, events, tasks, audit log)
    to PATH: gzip'd JSON lines ending in a SHA-256. The projection is not saved (restore
    rebuilds it from the log), nor are sessions."""
    from .backup import BackupError, backup as do_backup
    from .cli import _db, _run

    async def go() -> dict[str, Any]:
        db = _db(ctx.obj["database_url"])
        try:
            return await do_backup(db, path, progress=None if as_json else ClickProgress())
        finally:
            await db.dispose()

    try:
        out = _run(go())
    except (BackupError, OSError) as e:
        fail(f"backup failed, no file written: {e}", as_json, error_code="BACKUP_FAILED")
        return
    c = out["counts"]
    emit(out, as_json,
         f"backup written to {out['path']} ({_human_size(out['bytes'])}): {c['oplog']} log entries, "
         f"{c['doc_snapshots']} snapshots, {c['doc_heads']} documents, {c['users']} users, {c['devices']} devices, "
         f"{c['events']} events, {c['tasks']} tasks, {c['audit_log']} audit entries\nsha256 {out['sha256']}")


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--force", is_flag=True, help="Delete everything in the database first (it must otherwise be empty).")
@click.option("--seq-gap", type=click.IntRange(min=0), default=None, show_default=False,
              help="Op log numbers to skip after the restored ones (default 1000000), so devices that "
                   "synced after the backup never see a number reused.")
@json_option
@click.pass_context
def restore(ctx: click.Context, path: str, force: bool, seq_gap: int | None, as_json: bool) -> None:
    """Restore a backup into an empty, migrated database and rebuild the projection from the log.

    The file is checked (checksum, counts) before anything is written, and everything happens
    in one transaction: on any error the database is unchanged. Afterwards `syncd verify` passes.
    """
    from .backup import DEFAULT_SEQ_GAP, BackupError, CorruptBackup, NotEmpty, NotMigrated, restore as do_restore
    from sqlalchemy.exc import SQLAlchemyError

    from .cli import _db, _run

    async def go() -> dict[str, Any]:
        db = _db(ctx.obj["database_url"])
        try:
            return await do_restore(db, path, force=force, progress=None if as_json else ClickProgress(),
                                    seq_gap=DEFAULT_SEQ_GAP if seq_gap is None else seq_gap)
        finally:
            await db.dispose()

    try:
        out = _run(go())
    except CorruptBackup as e:
        fail(f"restore refused, nothing was written: {e}", as_json, error_code="CORRUPT_BACKUP")
        return
    except NotEmpty as e:
        fail(f"restore refused: {e}", as_json, error_code="NOT_EMPTY")
        return
    except NotMigrated as e:
        fail(f"restore refused: {e}", as_json, error_code="NOT_MIGRATED")
        return
    except (BackupError, SQLAlchemyError) as e:
        fail(f"restore failed, nothing was written: {e}", as_json, error_code="RESTORE_FAILED")
        return
    r = out["restored"]
    emit(out, as_json,
         f"restored {r['oplog']} log entries, {r['users']} users, {r['events']} events, {r['tasks']} tasks "
         f"(backup of {out['backup_created_at']}); projection rebuilt for {out['documents']} documents "
         f"({out['projection_rows']} rows)\nsessions were not restored: everyone signs in again")


backup_commands = [backup, restore]
