"""Server settings: one frozen value, defaults for the embedded single-process setup.

``create_app(..., **overrides)`` replaces any field, e.g. ``create_app(url, api_rate_limit=10)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from syncd.engine import EngineConfig

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    # --- tokens ---
    keys_dir: str = "var/keys"
    issuer: str = "fieldsync"
    audience: str = "fieldsync-api"
    access_ttl_s: int = 15 * 60
    refresh_ttl_s: int = 30 * 24 * 3600
    #: clock leeway accepted when checking ``exp``/``iat`` (seconds)
    leeway_s: int = 5

    # --- cookies (browsers) ---
    cookie_secure: bool = True
    access_cookie: str = "access_token"
    refresh_cookie: str = "refresh_token"
    csrf_cookie: str = "csrf_token"
    csrf_header: str = "X-CSRF-Token"
    refresh_cookie_path: str = "/api/auth"

    # --- limits ---
    max_body_bytes: int = 2 * 1024 * 1024
    login_rate_limit: int = 5  # attempts per window, per IP and per email
    api_rate_limit: int = 100  # calls per window, per user and per IP
    rate_window_s: int = 60
    #: key prefix in Redis, so several deployments (or tests) can share one Redis
    redis_prefix: str = "fieldsync:rl:"
    redis_timeout_s: float = 0.5
    #: number of reverse proxies in front of the server whose X-Forwarded-For is trusted
    trusted_proxies: int = 0

    # --- sync ---
    max_batch_updates: int = 100
    engine: EngineConfig = field(default_factory=EngineConfig)
