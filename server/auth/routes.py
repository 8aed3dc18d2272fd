"""``/api/auth/{login,refresh,logout,me}``.

Every successful login or refresh answers with both forms of credentials:

* in the body, for the CLI and scripts: ``access_token`` (bearer), ``refresh_token``;
* as cookies, for browsers: ``access_token`` (httpOnly, Path=/), ``refresh_token``
  (httpOnly, Path=/api/auth), ``csrf_token`` (readable by scripts; to be echoed in the
  ``X-CSRF-Token`` header), all ``SameSite=Strict`` and ``Secure`` (``cookie_secure``).

Refresh and logout take the refresh token from the body, else from the cookie (then the CSRF
header is required).
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..audit import AuditEntry
from ..deps import Auth, audit_refusal, authenticate, check_csrf, client_ip, current_auth, read_json, requires
from ..errors import ApiError, JSONResponse, Unauthorized, ok
from ..services import Services, services
from .passwords import MAX_PASSWORD_CHARS
from .sessions import RefreshOutcome, User, normalize_email
from .tokens import new_device_id

__all__ = ["routes", "LoginRequest", "RefreshRequest"]

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class LoginRequest(BaseModel):
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    device_id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    device_name: str | None = Field(default=None, max_length=200)


class RefreshRequest(BaseModel):
    refresh_token: str | None = Field(default=None, min_length=1, max_length=200)


async def _optional_json(request: Request, model: type[RefreshRequest]) -> RefreshRequest:
    if not (await request.body()).strip():
        return model()
    return await read_json(request, model)


def _session_response(svc: Services, user: User, device_id: str, family_id: str, refresh_token: str,
                      status: int = 200) -> JSONResponse:
    cfg = svc.config
    access, _exp = svc.tokens.issue(user_id=user.id, role=user.role, device_id=device_id, family_id=family_id)
    csrf = secrets.token_urlsafe(32)
    resp = ok({
        "access_token": access,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": cfg.access_ttl_s,
        "device_id": device_id,
        "csrf_token": csrf,
        "user": user.to_json(),
    }, status)
    common: dict[str, Any] = {"secure": cfg.cookie_secure, "samesite": "strict"}
    resp.set_cookie(cfg.access_cookie, access, max_age=cfg.access_ttl_s, path="/", httponly=True, **common)
    resp.set_cookie(cfg.refresh_cookie, refresh_token, max_age=cfg.refresh_ttl_s, path=cfg.refresh_cookie_path,
                    httponly=True, **common)
    resp.set_cookie(cfg.csrf_cookie, csrf, max_age=cfg.refresh_ttl_s, path="/", httponly=False, **common)
    return resp


def _clear_cookies(svc: Services, resp: Response) -> None:
    cfg = svc.config
    common: dict[str, Any] = {"secure": cfg.cookie_secure, "samesite": "strict"}
    resp.delete_cookie(cfg.access_cookie, path="/", httponly=True, **common)
    resp.delete_cookie(cfg.refresh_cookie, path=cfg.refresh_cookie_path, httponly=True, **common)
    resp.delete_cookie(cfg.csrf_cookie, path="/", **common)


async def login(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, LoginRequest)
    await svc.limits.check_login(client_ip(request), body.email)
    try:
        user = await svc.sessions.authenticate(body.email, body.password)
    except Unauthorized as e:
        await audit_refusal(request, f"{e.code}: login failed", resource=f"email:{normalize_email(body.email)}")
        raise
    device_id = body.device_id or new_device_id()
    family_id, refresh = await svc.sessions.start_session(user, device_id, body.device_name)
    return _session_response(svc, user, device_id, family_id, refresh)


_REFRESH_ERRORS = {
    RefreshOutcome.UNKNOWN: ("INVALID_TOKEN", "the refresh token is not valid"),
    RefreshOutcome.EXPIRED: ("TOKEN_EXPIRED", "the refresh token has expired; log in again"),
    RefreshOutcome.REVOKED: ("SESSION_REVOKED", "the session was ended; log in again"),
    RefreshOutcome.REUSED: ("TOKEN_REUSED", "this refresh token was already used; the session is revoked, "
                                            "log in again"),
    RefreshOutcome.INACTIVE: ("INVALID_TOKEN", "the account or device is no longer active; log in again"),
}


async def _refresh_token_from(request: Request, body: RefreshRequest) -> str | None:
    """The refresh token of the body, else of the cookie (which requires the CSRF header)."""
    if body.refresh_token:
        return body.refresh_token
    token = request.cookies.get(services(request).config.refresh_cookie)
    if token:
        try:
            check_csrf(request)
        except ApiError as e:
            await audit_refusal(request, f"{e.code}: {e.message}")
            raise
    return token


async def refresh(request: Request) -> Response:
    svc = services(request)
    body = await _optional_json(request, RefreshRequest)
    token = await _refresh_token_from(request, body)
    if not token:
        raise Unauthorized("no refresh token given", code="UNAUTHENTICATED")
    rot = await svc.sessions.rotate(token)
    if rot.outcome is not RefreshOutcome.OK:
        code, message = _REFRESH_ERRORS[rot.outcome]
        if rot.outcome in (RefreshOutcome.REUSED, RefreshOutcome.INACTIVE):
            await svc.audit.record(AuditEntry(
                action=f"POST {request.url.path}", reason=f"{code}: family {rot.family_id} revoked",
                device_id=rot.device_id, resource=f"refresh_family:{rot.family_id}", ip=client_ip(request)))
        raise Unauthorized(message, code=code)
    assert rot.user is not None and rot.device_id and rot.family_id and rot.token
    return _session_response(svc, rot.user, rot.device_id, rot.family_id, rot.token)


async def logout(request: Request) -> Response:
    """Revoke the session (refresh-token family) named by the refresh token or the access token."""
    svc = services(request)
    body = await _optional_json(request, RefreshRequest)
    families: set[str] = set()
    token = await _refresh_token_from(request, body)
    if token:
        fam = await svc.sessions.family_of(token)
        if fam is not None:
            families.add(fam[0])
    auth: Auth | None = None
    if request.headers.get("authorization") or request.cookies.get(svc.config.access_cookie):
        try:
            auth = await authenticate(request)
        except ApiError:
            auth = None  # an expired access token must not prevent logging out
    if auth is not None:
        families.add(auth.family_id)
    for fam_id in families:
        await svc.sessions.revoke_family(fam_id)
    resp = ok({"logged_out": True, "sessions_revoked": len(families)})
    _clear_cookies(svc, resp)
    return resp


@requires()
async def me(request: Request) -> Response:
    auth = current_auth(request)
    return ok({"user": auth.user.to_json(), "device_id": auth.device_id})


routes = [
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
]
