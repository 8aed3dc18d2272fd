"""``GET /healthz``: the process is up, the database answers and the sync engine runs."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import error_response, ok
from .services import services

__all__ = ["routes"]


async def healthz(request: Request) -> Response:
    svc = services(request)
    try:
        async with svc.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as e:
        return error_response(503, "UNAVAILABLE", "the database is not reachable", [{"reason": type(e).__name__}])
    return ok({"status": "ok", "database": svc.db.dialect.name, "redis": svc.redis is not None})


routes = [Route("/healthz", healthz, methods=["GET"])]
