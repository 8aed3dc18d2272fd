"""Hybrid logical clocks.

A timestamp is the string ``"{wall_ms:013d}.{counter:05d}"``: fixed width, so string order
is time order in Python and in TypeScript alike (no 64-bit integers cross the wire).
``wall_ms`` follows physical time; ``counter`` orders events inside one millisecond and
events that happened "after" a remote timestamp that was ahead of our own clock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "HLC",
    "Timestamp",
    "ClockSkewError",
    "format_ts",
    "parse_ts",
    "is_valid_ts",
    "MAX_COUNTER",
    "DEFAULT_MAX_SKEW_MS",
]

MAX_COUNTER = 99_999
#: How far ahead of the server's clock a write's timestamp may be (5 minutes).
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000

_TS_RE = re.compile(r"\A([0-9]{13})\.([0-9]{5})\Z")  # ASCII digits, no trailing newline: as the TypeScript port


class ClockSkewError(ValueError):
    """A timestamp is further ahead of the reference clock than the allowed skew."""

    def __init__(self, ts: str, now_ms: int, max_skew_ms: int) -> None:
        self.ts = ts
        self.now_ms = now_ms
        self.max_skew_ms = max_skew_ms
        super().__init__(
            f"timestamp {ts} is more than {max_skew_ms} ms ahead of the server clock ({now_ms})"
        )


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    wall_ms: int
    counter: int

    def __str__(self) -> str:
        return format_ts(self.wall_ms, self.counter)


def format_ts(wall_ms: int, counter: int) -> str:
    """Encode a timestamp as its canonical sortable string."""
    if not (0 <= wall_ms < 10**13) or not (0 <= counter <= MAX_COUNTER):
        raise ValueError(f"timestamp out of range: {wall_ms}.{counter}")
    return f"{wall_ms:013d}.{counter:05d}"


def parse_ts(ts: str) -> Timestamp:
    """Decode a canonical timestamp string; raise ValueError if it is not one."""
    m = _TS_RE.match(ts) if isinstance(ts, str) else None
    if m is None:
        raise ValueError(f"not a hybrid-logical-clock timestamp: {ts!r}")
    return Timestamp(int(m.group(1)), int(m.group(2)))


def is_valid_ts(ts: object) -> bool:
    return isinstance(ts, str) and _TS_RE.match(ts) is not None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HLC:
    """A hybrid logical clock (Kulkarni et al.), monotonic per device.

    ``offset_ms`` corrects a device whose clock is known to be off (learned from the server
    at sync time), so a phone with a wrong clock stamps roughly server time.
    """

    def __init__(
        self,
        last: str | None = None,
        *,
        clock: Callable[[], int] = _wall_ms,
        offset_ms: int = 0,
    ) -> None:
        self._clock = clock
        self.offset_ms = offset_ms
        t = parse_ts(last) if last else Timestamp(0, 0)
        self._wall, self._counter = t.wall_ms, t.counter

    @property
    def last(self) -> str:
        return format_ts(self._wall, self._counter)

    def physical_ms(self) -> int:
        return self._clock() + self.offset_ms

    def now(self) -> str:
        """A new timestamp, greater than every timestamp this clock issued or received."""
        pt = self.physical_ms()
        if pt > self._wall:
            self._wall, self._counter = pt, 0
        else:
            self._tick()
        return self.last

    def receive(self, remote: str) -> str:
        """Merge a timestamp seen on a remote write so later local writes order after it."""
        r = parse_ts(remote)
        pt = self.physical_ms()
        if pt > self._wall and pt > r.wall_ms:
            self._wall, self._counter = pt, 0
        elif r.wall_ms > self._wall:
            self._wall, self._counter = r.wall_ms, r.counter
            self._tick()
        elif r.wall_ms == self._wall:
            self._counter = max(self._counter, r.counter)
            self._tick()
        else:
            self._tick()
        return self.last

    def restart_at(self, wall_ms: int) -> None:
        """Issue later stamps from ``wall_ms`` on, even if this clock issued greater ones: a
        device whose clock ran fast learned the server's time (the stamps it issued ahead of
        it were refused, and the writes that carried them are written again; see
        ``replica.core.ReplicaCore._restamp``)."""
        self._wall, self._counter = wall_ms, 0

    def _tick(self) -> None:
        if self._counter >= MAX_COUNTER:
            self._wall, self._counter = self._wall + 1, 0
        else:
            self._counter += 1

    @staticmethod
    def check_skew(ts: str, now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS) -> None:
        """Raise ClockSkewError if ``ts`` is more than ``max_skew_ms`` ahead of ``now_ms``."""
        if parse_ts(ts).wall_ms > now_ms + max_skew_ms:
            raise ClockSkewError(ts, now_ms, max_skew_ms)
