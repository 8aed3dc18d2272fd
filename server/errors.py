"""Every error the API returns, and the one place that renders them.

    ApiError                         (base: code, HTTP status, message, details, headers)
    ├── BadRequest           400   BAD_REQUEST
    │   ├── InvalidJson      400   INVALID_JSON      the body is not JSON
    │   └── InvalidBase64    400   INVALID_BASE64    an update or state vector is not base64
    ├── Unauthorized         401   UNAUTHENTICATED / INVALID_TOKEN / TOKEN_EXPIRED /
    │                              INVALID_CREDENTIALS / TOKEN_REUSED
    ├── Forbidden            403   FORBIDDEN / CSRF_FAILED
    ├── NotFound             404   NOT_FOUND
    ├── Conflict             409   CONFLICT
    ├── PayloadTooLarge      413   PAYLOAD_TOO_LARGE
    ├── ValidationFailed     422   VALIDATION_ERROR  (details: [{field, message}])
    └── RateLimited          429   RATE_LIMITED      (Retry-After header)

Besides these, :func:`exception_handlers` renders Starlette's ``HTTPException`` (404, 405,
...), the sync engine's ``SyncError`` tree (its own ``.status`` and ``.code``), pydantic's
``ValidationError`` (422) and anything unexpected (500, never leaking internals) in the same
envelope::

    {"error": {"code": "...", "message": "...", "details": ...}}

Successful responses use :func:`ok`: ``{"data": ..., "meta": {"timestamp", "version"}}``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Mapping

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from syncd.errors import SyncError

__all__ = [
    "API_VERSION",
    "JSONResponse",
    "ApiError",
    "BadRequest",
    "InvalidJson",
    "InvalidBase64",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "ValidationFailed",
    "RateLimited",
    "ok",
    "meta",
    "error_body",
    "error_response",
    "render",
    "validation_details",
    "exception_handlers",
]

log = logging.getLogger("server.errors")

API_VERSION = "1.0"

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}


class JSONResponse(Response):
    """A JSON response serialized with orjson (datetimes as ISO 8601)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """An error the client can act on; rendered by :func:`render`."""

    code = "BAD_REQUEST"
    status = 400

    def __init__(self, message: str, details: Any = None, *, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else []
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    code, status = "BAD_REQUEST", 400


class InvalidJson(BadRequest):
    code = "INVALID_JSON"


class InvalidBase64(BadRequest):
    code = "INVALID_BASE64"


class Unauthorized(ApiError):
    code, status = "UNAUTHENTICATED", 401


class Forbidden(ApiError):
    code, status = "FORBIDDEN", 403


class NotFound(ApiError):
    code, status = "NOT_FOUND", 404


class Conflict(ApiError):
    code, status = "CONFLICT", 409


class PayloadTooLarge(ApiError):
    code, status = "PAYLOAD_TOO_LARGE", 413


class ValidationFailed(ApiError):
    code, status = "VALIDATION_ERROR", 422


class RateLimited(ApiError):
    code, status = "RATE_LIMITED", 429

    def __init__(self, message: str, retry_after: int) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(message, {"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


# --- success ---------------------------------------------------------------------------

def meta(**extra: Any) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"timestamp": now, "version": API_VERSION, **extra}


def ok(data: Any, status: int = 200, *, headers: Mapping[str, str] | None = None, **meta_extra: Any) -> JSONResponse:
    """The success envelope ``{"data": ..., "meta": {...}}``."""
    return JSONResponse({"data": data, "meta": meta(**meta_extra)}, status_code=status, headers=headers)


# --- errors ----------------------------------------------------------------------------

def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details if details is not None else []}}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as ``[{field, message}]`` (field: dotted location, e.g. ``updates.0.doc_id``)."""
    out = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e.get("loc", ()))
        out.append({"field": loc or "body", "message": e.get("msg", "invalid value")})
    return out


def render(exc: BaseException) -> JSONResponse:
    """Turn any exception into the error envelope with the right status."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, SyncError):
        return JSONResponse(exc.to_json(), status_code=exc.status)
    if isinstance(exc, ValidationError):
        return error_response(422, "VALIDATION_ERROR", "the request is not valid", validation_details(exc))
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
        return error_response(exc.status_code, code, message, None, exc.headers)
    if _storage_unavailable(exc):
        return error_response(503, "UNAVAILABLE", "storage is busy or unreachable; nothing was changed, retry",
                              None, {"Retry-After": "1"})
    return error_response(500, "INTERNAL_ERROR", "internal server error; the error was logged")


def _storage_unavailable(exc: BaseException) -> bool:
    """A database that is locked, restarting or unreachable: transient, the client retries."""
    from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout
    if isinstance(exc, (OperationalError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(getattr(exc, "connection_invalidated", False))


async def _handle(request: Request, exc: Exception) -> Response:
    return render(exc)


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, (ApiError, SyncError, ValidationError, HTTPException)):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render(exc)


def exception_handlers() -> dict[Any, Any]:
    """Handlers for ``Starlette(exception_handlers=...)``: every error gets the envelope."""
    return {
        ApiError: _handle,
        SyncError: _handle,
        ValidationError: _handle,
        HTTPException: _handle,
        Exception: _handle_unexpected,
    }
