"""Human tables by default, JSON with ``--json``: one place for every command's output."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Sequence

import click
import orjson
from rich.console import Console
from rich.table import Table

__all__ = ["json_option", "emit", "emit_table", "fail"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n")
    else:
        click.echo(human if human is not None else str(data))


def emit_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], data: Any, as_json: bool) -> None:
    if as_json:
        emit(data, True)
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    Console().print(table)


def fail(message: str, as_json: bool = False, code: int = 1, error_code: str = "ERROR") -> None:
    if as_json:
        sys.stdout.write(orjson.dumps({"error": {"code": error_code, "message": message}}).decode() + "\n")
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)
