"""A tiny registry of measurements.

A measurement is a sync or async function taking a :class:`Context` and returning a list of
rows (:func:`row`). Register it with ``@measurement("group.name", group="group")`` in a module
``bench/m_*.py`` (raw limits) or ``bench/engine_*.py`` (the engine): :func:`discover` imports
every such module, so a new file is picked up without touching anything else.

Measurements never assert speed. They may raise :class:`Skip` when a prerequisite is missing
(e.g. no PostgreSQL); any other exception is reported as an error for that measurement only.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Union

__all__ = [
    "Context",
    "Measurement",
    "Row",
    "Skip",
    "discover",
    "measurement",
    "registered",
    "row",
    "select",
    "timer",
]

BENCH_DIR = Path(__file__).resolve().parent
MODULE_PREFIXES = ("m_", "engine_")
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

Row = dict[str, Any]  # {"metric", "value", "unit", "notes"}; the runner adds "name"
Func = Callable[["Context"], Union[list[Row], Awaitable[list[Row]]]]


class Skip(Exception):
    """Raise from a measurement when a prerequisite is missing; recorded as skipped."""


def row(metric: str, value: float | int | str | None, unit: str = "", notes: str = "") -> Row:
    return {"metric": metric, "value": value, "unit": unit, "notes": notes}


@dataclass
class Context:
    """What a measurement gets: the size mode, scratch space and connection settings."""

    quick: bool = False
    pg_dsn: str = field(default_factory=lambda: os.environ.get("BENCH_PG_DSN", DEFAULT_PG_DSN))
    tmpdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    seed: int = 1234

    def size(self, full: int, quick: int) -> int:
        """``quick`` in --quick mode (a smoke run), else ``full``."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Measurement:
    name: str
    group: str
    func: Func
    module: str
    doc: str


_REGISTRY: dict[str, Measurement] = {}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


def measurement(name: str, group: str | None = None) -> Callable[[Func], Func]:
    """Register a measurement named ``group.what`` (e.g. ``"crdt.apply_raw"``)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"measurement name must look like 'group.what', got {name!r}")
    grp = group if group is not None else name.split(".", 1)[0]

    def deco(func: Func) -> Func:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f"measurement {name!r} registered twice ({_REGISTRY[name].module}, {func.__module__})")
        doc = (func.__doc__ or "").strip().split("\n\n", 1)[0]
        _REGISTRY[name] = Measurement(name, grp, func, func.__module__, " ".join(doc.split()))
        return func

    return deco


def discover() -> None:
    """Import every ``bench/m_*.py`` and ``bench/engine_*.py`` module (registers them)."""
    for info in sorted(pkgutil.iter_modules([str(BENCH_DIR)]), key=lambda i: i.name):
        if info.name.startswith(MODULE_PREFIXES):
            importlib.import_module(f"{__package__}.{info.name}")


def registered() -> list[Measurement]:
    return sorted(_REGISTRY.values(), key=lambda m: (m.group, m.name))


def select(patterns: list[str] | None) -> list[Measurement]:
    """Measurements matching any pattern: an exact name, a group, or an fnmatch glob."""
    import fnmatch

    ms = registered()
    if not patterns:
        return ms
    out = [m for m in ms if any(p == m.name or p == m.group or fnmatch.fnmatchcase(m.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(p == m.name or p == m.group or fnmatch.fnmatchcase(m.name, p) for m in ms)]
    if unknown:
        raise KeyError(f"no measurement matches {unknown}; known: {[m.name for m in ms]}")
    return out


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed wall time in seconds."""
    out: list[float] = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start
