"""``/api/users``: who is who, so screens show names and the office can assign crews.

Every signed-in user sees id, name and role of active users (a crew sees its colleagues'
names on a job); office and owner also see emails. Accounts are created with
``syncd user add``; this list is read-only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from schema import tables as t

from ..deps import current_auth, requires
from ..errors import ok
from .common import OFFICE, api, parse_query, reader, route
from .pagination import StrictQuery

__all__ = ["routes", "UserOut", "UserQuery"]


class UserOut(BaseModel):
    id: str
    name: str
    role: Literal["owner", "office", "crew"]
    email: str | None = None


class UserQuery(StrictQuery):
    role: Literal["owner", "office", "crew"] | None = Field(default=None, description="only this role")


@requires()
@api("List active users (id, name, role; email for office and owner)", query=UserQuery, response=list[UserOut],
     tags=["users"])
async def list_users(request: Request) -> Response:
    q = parse_query(UserQuery, request)
    auth = current_auth(request)
    u = t.users
    stmt = select(u.c.id, u.c.name, u.c.role, u.c.email).where(u.c.active.is_(True)).order_by(u.c.name, u.c.id)
    if q.role is not None:
        stmt = stmt.where(u.c.role == q.role)
    async with reader(request) as conn:
        rows = (await conn.execute(stmt)).all()
    show_email = auth.principal.role in OFFICE
    data: list[dict[str, Any]] = [
        UserOut(id=r.id, name=r.name, role=r.role, email=r.email if show_email else None).model_dump()
        for r in rows]
    return ok(data)


routes = [route("/api/users", GET=list_users)]
