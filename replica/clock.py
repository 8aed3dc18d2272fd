"""The device's hybrid logical clock: persistence and correction from server time."""

from __future__ import annotations

from typing import Callable, Iterable

from conflict_rules.hlc import HLC, is_valid_ts, parse_ts

__all__ = ["TOLERANCE_MS", "load_clock", "clock_meta", "adjust_offset", "receive_max"]

#: A device clock this close to the server's is left alone.
TOLERANCE_MS = 1000


def load_clock(meta: dict[str, str], clock: Callable[[], int] | None = None) -> HLC:
    """The HLC as persisted in the store's meta table (fresh if there is none)."""
    kwargs = {} if clock is None else {"clock": clock}
    return HLC(meta.get("hlc_last") or None, offset_ms=int(meta.get("clock_offset_ms", "0")), **kwargs)


def clock_meta(hlc: HLC) -> dict[str, object]:
    """The meta rows that persist ``hlc`` (written in the same commit as the edit)."""
    return {"hlc_last": hlc.last, "clock_offset_ms": hlc.offset_ms}


def adjust_offset(hlc: HLC, server_time: str, tolerance_ms: int = TOLERANCE_MS) -> bool:
    """Correct ``hlc.offset_ms`` when the server's clock differs by more than the tolerance.

    Returns True if the offset changed. A malformed ``server_time`` is ignored: it must not
    block the acknowledgement that carried it.
    """
    if not is_valid_ts(server_time):
        return False
    drift = parse_ts(server_time).wall_ms - hlc.physical_ms()
    if abs(drift) <= tolerance_ms:
        return False
    hlc.offset_ms += drift
    return True


def receive_max(hlc: HLC, timestamps: Iterable[str]) -> None:
    """Merge remote write timestamps into the clock (the greatest one subsumes the others)."""
    valid = [t for t in timestamps if is_valid_ts(t)]
    if valid:
        hlc.receive(max(valid))
