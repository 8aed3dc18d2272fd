"""The Starlette application: routes assembled from modules, one lifespan for every service.

Usage::

    app = create_app("sqlite+aiosqlite:///var/syncd.sqlite3")               # embedded
    app = create_app(os.environ["DATABASE_URL"], os.environ["REDIS_URL"])    # production

Extending (WebSocket sync, CRM routes, fan-out): add the module's ``routes`` to
:data:`ROUTE_MODULES` (or pass ``extra_routes=``), and long-lived tasks as ``extensions=``:
async context managers ``ext(app)`` entered after the services are up and left before they
stop. Endpoints reach the services with ``server.services.services(request)``.

The database schema is not migrated here (``syncd serve`` migrates before starting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute

from schema.db import create_engine
from syncd.engine import SyncEngine

from . import audit_routes, health, policy, rest, sync_routes
from .audit import AuditLog
from .auth import routes as auth_routes
from .auth.keys import load_or_create_keys
from .auth.sessions import Sessions
from .auth.tokens import TokenService
from .config import ServerConfig
from .errors import exception_handlers
from .middleware import BodyLimitMiddleware, IpRateLimitMiddleware
from .ratelimit import RateLimits, RedisLimiter
from .services import Services
from . import pwa_static  # serves pwa/dist at / (router default: never shadows a route)
from . import ws

__all__ = ["create_app", "ROUTE_MODULES", "default_routes"]

log = logging.getLogger("server.app")

#: Modules whose ``routes`` list makes up the API, in matching order.
ROUTE_MODULES: list[Any] = [health, auth_routes, sync_routes, audit_routes, rest, ws]

Extension = Callable[[Starlette], AsyncContextManager[Any]]
#: Extensions every app runs (before those passed to create_app): live sync fan-out.
DEFAULT_EXTENSIONS: list[Extension] = [ws.extension]


def default_routes() -> list[BaseRoute]:
    return [r for m in ROUTE_MODULES for r in m.routes]


def _redis_client(url: str, cfg: ServerConfig) -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # One immediate retry (a pooled connection dropped by a Redis restart), no backoff: a
    # request must not stall while Redis is down, the limiter falls back instead.
    return aioredis.from_url(url, socket_timeout=cfg.redis_timeout_s, socket_connect_timeout=cfg.redis_timeout_s,
                             retry=Retry(NoBackoff(), 1))


def create_app(database_url: str, redis_url: str | None = None, *, keys_dir: str | None = None,
               config: ServerConfig | None = None, extra_routes: Sequence[BaseRoute] = (),
               extensions: Sequence[Extension] = (), debug: bool = False, **overrides: Any) -> Starlette:
    """The API app over ``database_url`` (any URL ``schema.db.normalize_url`` accepts).

    ``redis_url`` enables shared rate limits. ``keys_dir`` is where the token signing key
    lives (default ``var/keys``). Any :class:`ServerConfig` field can be overridden by
    keyword, e.g. ``create_app(url, api_rate_limit=1000, cookie_secure=False)``.
    """
    cfg = config or ServerConfig()
    if keys_dir is not None:
        overrides["keys_dir"] = keys_dir
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = create_engine(database_url)
        redis = None
        engine = SyncEngine(db, cfg.engine, authorizer=policy.authorize_writes)
        try:
            keys = await asyncio.to_thread(load_or_create_keys, cfg.keys_dir)
            primary = None
            if redis_url:
                redis = _redis_client(redis_url, cfg)
                primary = RedisLimiter(redis, cfg.redis_prefix)
            svc = Services(
                config=cfg, db=db, engine=engine, keys=keys,
                tokens=TokenService(keys, issuer=cfg.issuer, audience=cfg.audience, ttl_s=cfg.access_ttl_s,
                                    leeway_s=cfg.leeway_s),
                sessions=Sessions(db, refresh_ttl_s=cfg.refresh_ttl_s),
                limits=RateLimits(login_limit=cfg.login_rate_limit, api_limit=cfg.api_rate_limit,
                                  window_s=cfg.rate_window_s, primary=primary),
                audit=AuditLog(db), redis=redis)
            app.state.services = svc
            app.state.config, app.state.db, app.state.engine, app.state.keys = cfg, db, engine, keys
            app.state.redis_url = redis_url
            await engine.start()
            async with AsyncExitStack() as stack:
                for ext in (*DEFAULT_EXTENSIONS, *extensions):
                    await stack.enter_async_context(ext(app))
                yield
        finally:
            await engine.stop()
            if redis is not None:
                await redis.aclose()
            await db.dispose()

    return pwa_static.install(Starlette(
        debug=debug,
        routes=[*default_routes(), *extra_routes],
        middleware=[
            # API answers over 1 KB (pulls, listings) compressed for clients that accept it: crews
            # sync over weak mobile links. Already-encoded answers (the PWA's files) pass through.
            Middleware(GZipMiddleware, minimum_size=1024, compresslevel=6),
            Middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes),
            Middleware(IpRateLimitMiddleware),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    ))
