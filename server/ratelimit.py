"""Rate limits: fixed one-minute windows, in Redis when configured, in-process otherwise.

Limits (``ServerConfig``): 5 login attempts per window per client IP and per email; 100 API
calls per window per user and per client IP. A refused call gets 429 ``RATE_LIMITED`` with a
``Retry-After`` header (seconds until the window ends).

Storage:

* **In-process** (no ``redis_url``): a dict of counters, one per (bucket, identity, window).
  Good for the embedded single-process setup; several processes would each count alone.
* **Redis** (``redis_url``): ``INCR`` + ``EXPIRE`` of ``{prefix}{bucket}:{sha256(identity)}:{window}``
  in one MULTI, shared by every server process. Identities are hashed, so emails and IPs are
  not stored in Redis.

When Redis fails at runtime (down, timeout, error):

* **API calls fail open**: the call is allowed. Rate limiting protects capacity; refusing all
  traffic because the limiter's store is down would turn a Redis outage into a full outage.
* **Logins fall back to an in-process limiter** with the same limits, so password guessing
  stays throttled (per process) while Redis is away.

Each fallback logs a warning (at most one every 30 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .errors import RateLimited

__all__ = ["Decision", "Limiter", "MemoryLimiter", "RedisLimiter", "RateLimits", "LimiterUnavailable"]

log = logging.getLogger("server.ratelimit")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    count: int
    retry_after: int  # seconds until the current window ends


class LimiterUnavailable(Exception):
    """The limiter's store could not be reached."""


class Limiter(Protocol):
    async def hit(self, bucket: str, ident: str, limit: int, window_s: int) -> Decision: ...


def _window(now: float, window_s: int) -> tuple[int, int]:
    idx = int(now // window_s)
    return idx, max(1, math.ceil((idx + 1) * window_s - now))


class MemoryLimiter:
    """Fixed-window counters in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._purged_at = 0

    async def hit(self, bucket: str, ident: str, limit: int, window_s: int) -> Decision:
        idx, retry = _window(self.clock(), window_s)
        if idx != self._purged_at:
            self._purge(idx)
        key = (f"{bucket}:{window_s}", ident)
        w, n = self._counts.get(key, (idx, 0))
        n = n + 1 if w == idx else 1
        self._counts[key] = (idx, n)
        return Decision(n <= limit, n, retry)

    def _purge(self, idx: int) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[0] >= idx}
        self._purged_at = idx


class RedisLimiter:
    """Fixed-window counters in Redis (shared by every process)."""

    def __init__(self, client: Any, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock

    def key(self, bucket: str, ident: str, window_s: int, idx: int) -> str:
        h = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self.prefix}{bucket}:{h}:{window_s}:{idx}"

    async def hit(self, bucket: str, ident: str, limit: int, window_s: int) -> Decision:
        idx, retry = _window(self.clock(), window_s)
        key = self.key(bucket, ident, window_s, idx)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window_s + 1)
                n, _ = await pipe.execute()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # redis.RedisError, OSError, timeouts: the store is unavailable
            raise LimiterUnavailable(f"{type(e).__name__}: {e}") from e
        return Decision(int(n) <= limit, int(n), retry)


class RateLimits:
    """The server's limit policy over a primary limiter (Redis or in-process)."""

    def __init__(self, *, login_limit: int, api_limit: int, window_s: int, primary: Limiter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.login_limit = login_limit
        self.api_limit = api_limit
        self.window_s = window_s
        self.local = MemoryLimiter(clock)
        self.primary: Limiter = primary if primary is not None else self.local
        self._warned_at = -math.inf
        self._clock = clock

    def _warn(self, what: str, err: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 30:
            self._warned_at = now
            log.warning("rate limiter store unavailable (%s); %s", err, what)

    async def check_login(self, ip: str, email: str) -> None:
        """Count one login attempt; raise RateLimited past the limit (per IP and per email)."""
        refused: list[Decision] = []
        for bucket, ident in (("login-ip", ip), ("login-email", email.strip().lower())):
            try:
                d = await self.primary.hit(bucket, ident, self.login_limit, self.window_s)
            except LimiterUnavailable as e:
                self._warn("login attempts are limited in-process", e)
                d = await self.local.hit(bucket, ident, self.login_limit, self.window_s)
            if not d.allowed:
                refused.append(d)
        if refused:
            raise RateLimited("too many login attempts; try again later", max(d.retry_after for d in refused))

    async def check_api(self, bucket: str, ident: str) -> None:
        """Count one API call of ``ident`` (a user id or an IP); fail open if the store is down."""
        try:
            d = await self.primary.hit(bucket, ident, self.api_limit, self.window_s)
        except LimiterUnavailable as e:
            self._warn("API calls are not limited (fail open)", e)
            return
        if not d.allowed:
            raise RateLimited("too many requests; slow down", d.retry_after)
