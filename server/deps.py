"""Route dependencies: who is calling, may they, and reading request bodies.

Permissions are decided here, at the edge, never in business logic::

    @requires("owner", "office")          # roles allowed; requires() = any signed-in user
    async def endpoint(request):
        auth = current_auth(request)      # user, role, device: from the verified token
        ...

:func:`requires` authenticates (``Authorization: Bearer`` header, or the ``access_token``
cookie for browsers), enforces the double-submit CSRF check for cookie-authenticated unsafe
methods (bearer requests are not sent automatically by browsers and skip it), checks the
role, counts the call against the per-user rate limit, and writes every refusal (401/403)
to ``audit_log``.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from schema.models import ROLES
from syncd.protocol import Principal

from .audit import AuditEntry
from .auth.sessions import User
from .errors import ApiError, Forbidden, InvalidJson, Unauthorized
from .services import services

__all__ = ["ROLES", "Auth", "authenticate", "requires", "current_auth", "client_ip", "read_json",
           "audit_refusal", "bearer_token", "enforce_csrf", "check_csrf"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Auth:
    """An authenticated caller: the user as stored now, the device and session of the token."""

    user: User
    device_id: str
    family_id: str
    via: str  # "bearer" | "cookie"
    #: the access token's ``exp`` (unix seconds)
    expires_at: int | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.user.id, self.user.role, self.device_id)


def client_ip(conn: HTTPConnection) -> str:
    """The caller's IP; ``X-Forwarded-For`` is trusted only for the configured proxy hops."""
    hops = services(conn).config.trusted_proxies
    if hops > 0:
        chain = [p.strip() for p in conn.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return conn.client.host if conn.client else "unknown"


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header; Unauthorized if another scheme is used."""
    header = conn.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", code="INVALID_TOKEN")
    return token.strip()


async def authenticate(conn: HTTPConnection) -> Auth:
    """Verify the caller's access token (header first, then cookie); raise 401.

    Does not check CSRF: see :func:`enforce_csrf`.
    """
    svc = services(conn)
    token = bearer_token(conn)
    via = "bearer"
    if token is None:
        token = conn.cookies.get(svc.config.access_cookie)
        via = "cookie"
    if not token:
        raise Unauthorized("authentication required", code="UNAUTHENTICATED")
    # both remember what they checked: the signature per token, the session for a few seconds
    # (see server.auth.sessions for when a change is seen)
    claims = svc.tokens.verify(token)
    user, family_revoked = await svc.sessions.session_state(claims.user_id, claims.family_id)
    if user is None or not user.active:
        raise Unauthorized("the account is disabled or gone", code="INVALID_TOKEN")
    if family_revoked:
        raise Unauthorized("the session was ended; log in again", code="SESSION_REVOKED")
    if user.role != claims.role:
        raise Unauthorized("your role changed; refresh your token", code="TOKEN_STALE")
    return Auth(user, claims.device_id, claims.family_id, via, claims.expires_at)


def enforce_csrf(conn: HTTPConnection, auth: Auth) -> None:
    """CSRF check for cookie-authenticated unsafe methods (bearer requests skip it)."""
    if auth.via == "cookie" and conn.scope["type"] == "http" and conn.scope["method"] not in SAFE_METHODS:
        check_csrf(conn)


def check_csrf(conn: HTTPConnection) -> None:
    """Double submit: the CSRF cookie must be echoed in the CSRF header."""
    cfg = services(conn).config
    cookie = conn.cookies.get(cfg.csrf_cookie, "")
    header = conn.headers.get(cfg.csrf_header, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise Forbidden(f"missing or wrong {cfg.csrf_header} header (required with cookie authentication)",
                        code="CSRF_FAILED")


def current_auth(request: Request) -> Auth:
    """The :class:`Auth` set by :func:`requires` on this request."""
    auth = getattr(request.state, "auth", None)
    if auth is None:
        raise RuntimeError("current_auth() used on an endpoint without @requires")
    return auth


async def audit_refusal(conn: HTTPConnection, reason: str, *, auth: Auth | None = None,
                        resource: str | None = None) -> None:
    """Record a refusal of this request (never its body)."""
    method = conn.scope.get("method", "WS")
    await services(conn).audit.record(AuditEntry(
        action=f"{method} {conn.url.path}", reason=reason,
        user_id=auth.user.id if auth else None, device_id=auth.device_id if auth else None,
        resource=resource or conn.url.path, ip=client_ip(conn)))


def requires(*roles: str) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint: authenticate, check CSRF and role, rate-limit per user, audit refusals."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}")

    def decorator(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            auth: Auth | None = None
            try:
                auth = await authenticate(request)
                enforce_csrf(request, auth)
                if roles and auth.user.role not in roles:
                    raise Forbidden(f"this action requires role {' or '.join(roles)}; you are {auth.user.role}")
            except ApiError as e:
                await audit_refusal(request, f"{e.code}: {e.message}", auth=auth)
                raise
            await services(request).limits.check_api("api-user", auth.user.id)
            request.state.auth = auth
            return await endpoint(request)

        wrapper.__requires__ = roles  # type: ignore[attr-defined]
        return wrapper

    return decorator


async def read_json(request: Request, model: type[M]) -> M:
    """Parse the body as JSON into ``model``: 400 INVALID_JSON, 422 VALIDATION_ERROR."""
    body = await request.body()
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidJson(f"the request body is not valid JSON: {e}") from None
    return model.model_validate(data)
