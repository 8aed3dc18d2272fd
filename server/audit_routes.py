"""``GET /api/audit``: the refusals recorded in ``audit_log`` (owner only), newest first.

Cursor pagination: ``?limit=<1..200>&before=<id>``; ``meta.next_cursor`` is the ``before``
of the next page.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .deps import requires
from .errors import ValidationFailed, ok, validation_details
from .services import services

__all__ = ["routes"]


class AuditQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=200)
    before: int | None = Field(default=None, ge=1)


@requires("owner")
async def list_audit(request: Request) -> Response:
    try:
        q = AuditQuery.model_validate(dict(request.query_params))
    except ValidationError as e:
        raise ValidationFailed("invalid query parameters", validation_details(e)) from None
    rows = await services(request).audit.recent(q.limit, q.before)
    next_cursor = rows[-1]["id"] if len(rows) == q.limit else None
    return ok(rows, next_cursor=next_cursor)


routes = [Route("/api/audit", list_audit, methods=["GET"])]
