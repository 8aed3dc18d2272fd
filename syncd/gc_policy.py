"""The garbage-collector policy of a long-running daemon process.

A daemon keeps many long-lived objects (documents, connections, SQLAlchemy and pydantic
machinery); with CPython's default thresholds every full (oldest-generation) pass walks all of
them: 60-80 ms each on the bench box, several times a minute under load, which is both a p99
spike and ~6 % of the engine's CPU (bench: ``engine.accept_sqlite``). So at startup, once what
startup built is alive, the daemon collects, freezes that (frozen objects are never scanned
again), and collects far less often: the youngest generation after 10,000 net allocations
instead of 700 (a commit batch allocates and frees thousands of objects: at 700 it triggers a
collection that finds little, ~2,000 a minute at 2,400 edits/s on one shared document, ~3 % of the
server's CPU; at 10,000 they are mostly gone first), the oldest after 10 x 1,000 young passes
(about as rarely as 700 x 10 x 10,000 before). Cyclic garbage is still found within 10,000
allocations, and the field-workload bench measures the server's RSS under this policy.

``SYNCD_GC_THRESHOLD="a,b,c"`` overrides the thresholds (a what-if for tuning runs).
"""

from __future__ import annotations

import gc
import os

DEFAULT_THRESHOLDS: tuple[int, int, int] = (10000, 10, 1000)


def thresholds_from_env(value: str | None) -> tuple[int, int, int]:
    """The thresholds ``SYNCD_GC_THRESHOLD`` asks for (the default when unset or empty)."""
    if value is None or not value.strip():
        return DEFAULT_THRESHOLDS
    parts = value.split(",")
    try:
        nums = tuple(int(p) for p in parts)
    except ValueError:
        nums = ()
    if len(nums) != 3 or any(n < 1 for n in nums):
        raise ValueError(f"SYNCD_GC_THRESHOLD must be three positive integers like 10000,10,1000, got {value!r}")
    return nums  # type: ignore[return-value]


def apply(thresholds: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """Collect, freeze what is alive, set the thresholds; return the previous thresholds."""
    previous = gc.get_threshold()
    wanted = thresholds if thresholds is not None else thresholds_from_env(os.environ.get("SYNCD_GC_THRESHOLD"))
    gc.collect()
    gc.freeze()
    gc.set_threshold(*wanted)
    return previous  # type: ignore[return-value]


def undo(previous: tuple[int, int, int]) -> None:
    """Reverse :func:`apply` (for benchmarks that measure several things in one process)."""
    gc.unfreeze()
    gc.set_threshold(*previous)
