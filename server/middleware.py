"""ASGI middleware of the API: request body size limit and per-IP rate limit.

Both answer in the standard error envelope (``server.errors.render``).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import client_ip
from .errors import PayloadTooLarge, RateLimited, render
from .services import services

__all__ = ["BodyLimitMiddleware", "IpRateLimitMiddleware"]


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 PAYLOAD_TOO_LARGE.

    A declared ``Content-Length`` over the limit is refused before the body is read; a body
    that turns out larger while streaming (chunked uploads) raises :class:`PayloadTooLarge`
    from ``receive``, which the endpoint's error handling renders.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = HTTPConnection(scope).headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                await render(self._error())(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._error()
            return message

        await self.app(scope, limited_receive, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body exceeds {self.max_bytes} bytes",
                               [{"field": "body", "message": f"at most {self.max_bytes} bytes"}])


class IpRateLimitMiddleware:
    """Count every ``/api/`` call against the per-IP limit (429 with Retry-After)."""

    def __init__(self, app: ASGIApp, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            conn = HTTPConnection(scope)
            try:
                await services(conn).limits.check_api("api-ip", client_ip(conn))
            except RateLimited as e:
                await render(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)
