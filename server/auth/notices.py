"""Session invalidations between server processes, over Redis pub/sub.

Each process keeps session checks for a few seconds (:class:`server.auth.sessions.SessionCache`).
When one process revokes a refresh-token family (logout, reuse) or changes a user, it drops
the entry at once and, with ``REDIS_URL``, publishes a notice on ``{redis_prefix}auth``::

    {origin instance} {"f"|"u"} {family id | user id}

Every other process drops the entry when it hears the notice. Redis only shortens the delay:

* publishing fails: logged; the other processes see the change when their entry expires
  (at most the cache TTL);
* the subscription drops: on resubscribing the process clears its whole cache (it may
  have missed notices), so the window is again at most the TTL.

Without Redis there is nothing to do here: the TTL alone bounds what other processes see.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from ..redis_pubsub import subscribe_forever
from .sessions import Sessions

__all__ = ["AuthNotices", "auth_notices", "channel_for"]

log = logging.getLogger("server.auth.notices")

_KINDS = {"family": "f", "user": "u"}


def channel_for(redis_prefix: str) -> str:
    return f"{redis_prefix}auth"


class AuthNotices:
    """Publishes this process's invalidations and applies the other processes' ones."""

    def __init__(self, url: str, sessions: Sessions, *, channel: str, instance_id: str | None = None,
                 timeout_s: float = 0.5, max_backoff_s: float = 5.0,
                 on_notice: Callable[[str, str], Any] | None = None) -> None:
        self.url = url
        self.sessions = sessions
        self.channel = channel
        self.instance_id = instance_id or uuid.uuid4().hex[:16]
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        #: called with ("family"|"user", id) for every notice applied (ours and theirs)
        self.on_notice = on_notice
        self.subscribed = asyncio.Event()
        self.stats = {"published": 0, "received": 0, "resubscribed": 0, "publish_failures": 0}
        self._pub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._warned_at = -1e9

    def _client(self) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return aioredis.from_url(self.url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s,
                                 retry=Retry(NoBackoff(), 1))

    async def start(self) -> None:
        self._pub = self._client()
        self.sessions.notifiers.append(self.publish)
        self._task = asyncio.create_task(self._subscribe_loop(), name="auth-notices-subscribe")

    async def stop(self) -> None:
        if self.publish in self.sessions.notifiers:
            self.sessions.notifiers.remove(self.publish)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pub is not None:
            await self._pub.aclose()
            self._pub = None

    async def publish(self, kind: str, ident: str) -> None:
        """Announce an invalidation this process made (Sessions notifier)."""
        if self.on_notice is not None:
            self.on_notice(kind, ident)
        try:
            await self._pub.publish(self.channel, f"{self.instance_id} {_KINDS[kind]} {ident}")
            self.stats["published"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.stats["publish_failures"] += 1
            now = time.monotonic()
            if now - self._warned_at >= 30:
                self._warned_at = now
                log.warning("Redis publish of a session invalidation failed (%s: %s); other processes see it "
                            "within the session cache TTL (%.0f s)", type(e).__name__, e, self.sessions.cache.ttl_s)

    def _apply(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        parts = text.split(" ", 2)
        if len(parts) != 3 or parts[1] not in ("f", "u") or not parts[2]:
            log.warning("ignoring a malformed session notice")
            return
        origin, kind, ident = parts
        if origin == self.instance_id:
            return
        self.stats["received"] += 1
        if kind == "f":
            self.sessions.cache.invalidate_families((ident,))
        else:
            self.sessions.cache.invalidate_user(ident)
        if self.on_notice is not None:
            self.on_notice("family" if kind == "f" else "user", ident)

    async def _subscribe_loop(self) -> None:
        async def subscribed() -> None:
            self.sessions.cache.clear()  # notices may have been missed while not subscribed
            self.stats["resubscribed"] += 1

        async def messages(batch: list[dict[str, Any]]) -> None:
            for msg in batch:
                if msg.get("type") == "message":
                    self._apply(msg["data"])

        await subscribe_forever(
            self._client, lambda pubsub: pubsub.subscribe(self.channel), "subscribe",
            on_subscribed=subscribed, on_messages=messages, subscribed=self.subscribed, log=log,
            lost="Redis subscription for session notices lost; sessions are re-checked within the cache TTL",
            confirm_timeout_s=max(2.0, self.timeout_s * 4), read_timeout_s=10.0, max_backoff_s=self.max_backoff_s)


@asynccontextmanager
async def auth_notices(app: Any, on_notice: Callable[[str, str], Any] | None = None) -> AsyncIterator[AuthNotices | None]:
    """App extension: cross-process session invalidations when the app has a Redis URL.

    Without Redis, local notices still reach ``on_notice`` (closing live connections)."""
    svc = app.state.services
    url = getattr(app.state, "redis_url", None)
    if not url:
        if on_notice is None:
            yield None
            return

        async def local(kind: str, ident: str) -> None:
            on_notice(kind, ident)

        svc.sessions.notifiers.append(local)
        try:
            yield None
        finally:
            svc.sessions.notifiers.remove(local)
        return
    notices = AuthNotices(url, svc.sessions, channel=channel_for(svc.config.redis_prefix), on_notice=on_notice)
    await notices.start()
    app.state.auth_notices = notices
    try:
        yield notices
    finally:
        await notices.stop()
