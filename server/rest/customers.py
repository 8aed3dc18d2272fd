"""``/api/customers``: list, search, read, create, update, soft delete.

Reads come from the ``customers`` projection; every write is an edit of the customer's CRDT
document (``customer:<id>``) authored by the caller (``common.edit``). Crews read only the
customers of jobs assigned to them and cannot write customers. Lists are ordered by name
(case-insensitive), then id, and cursor-paginated (``pagination``). Soft-deleted customers
are hidden unless an office or owner user asks for ``include_deleted=true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from sqlalchemy import func, or_, select
from starlette.requests import Request
from starlette.responses import Response

from schema import documents as D
from schema import tables as t
from schema.models import CustomerIn, CustomerOut, CustomerPatch

from ..deps import Auth, current_auth, requires
from ..errors import NotFound, ok
from .common import OFFICE, api, edit, parse_query, path_id, read_body, read_scope, reader, refuse, route
from .pagination import PageQuery, SortKey, StrictQuery, paginate

__all__ = ["routes", "CustomerListQuery", "CustomerSearchQuery", "CustomerQuery", "load_customer"]

c = t.customers
ORDER = [SortKey(func.coalesce(func.lower(c.c.name), ""), str), SortKey(c.c.id, str)]
_PHONE_PUNCT = " -()+."


def _strip(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


class CustomerQuery(StrictQuery):
    """``GET /api/customers/{id}``."""

    include_deleted: bool = Field(default=False, description="office/owner: also soft-deleted records")


class CustomerListQuery(PageQuery):
    include_deleted: bool = Field(default=False, description="office/owner: also soft-deleted customers")


class CustomerSearchQuery(CustomerListQuery):
    q: Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=200,
                                                     description="matches name, phone, email or address")]


def _out(row: Any) -> dict[str, Any]:
    return CustomerOut.model_validate(row._mapping).model_dump()


async def _check_include_deleted(request: Request, auth: Auth, include_deleted: bool) -> None:
    if include_deleted and auth.user.role not in OFFICE:
        raise await refuse(request, auth, "include_deleted requires role owner or office", request.url.path)


async def load_customer(conn: Any, customer_id: str, *, include_deleted: bool = False) -> Any:
    """The projected row, or 404 (soft-deleted ones too unless ``include_deleted``)."""
    row = (await conn.execute(select(c).where(c.c.id == customer_id))).first()
    if row is None or (row.deleted and not include_deleted):
        raise NotFound(f"no customer {customer_id}")
    return row


def _like(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search_clause(q: str) -> Any:
    pattern = _like(q)
    terms = [func.lower(col).like(pattern, escape="\\") for col in (c.c.name, c.c.phone, c.c.email, c.c.address)]
    digits = "".join(ch for ch in q if ch.isdigit())
    if len(digits) >= 3 and all(ch.isdigit() or ch in _PHONE_PUNCT for ch in q):
        # "555 0100" finds "(555) 010-0"; phone numbers are compared on their digits
        bare = c.c.phone
        for ch in _PHONE_PUNCT:
            bare = func.replace(bare, ch, "")
        terms.append(bare.like(f"%{digits}%"))
    return or_(*terms)


async def _list(request: Request, q: CustomerListQuery, search: str | None) -> Response:
    auth = current_auth(request)
    await _check_include_deleted(request, auth, q.include_deleted)
    async with reader(request) as conn:
        scope = await read_scope(conn, auth.principal)
        stmt = select(c)
        where = scope.customers_where(c.c.id)
        if where is not None:
            stmt = stmt.where(where)
        if not q.include_deleted:
            stmt = stmt.where(c.c.deleted.is_(False))
        if search is not None:
            stmt = stmt.where(_search_clause(search))
        rows, next_cursor = await paginate(conn, stmt, ORDER, q, "customers")
    return ok([_out(r) for r in rows], limit=q.limit, next_cursor=next_cursor)


@api("List customers (by name; cursor-paginated)", query=CustomerListQuery, response=list[CustomerOut],
     paginated=True, tags=["customers"])
@requires()
async def list_customers(request: Request) -> Response:
    q = parse_query(CustomerListQuery, request)
    return await _list(request, q, None)


@api("Search customers by name, phone, email or address (case-insensitive)", query=CustomerSearchQuery,
     response=list[CustomerOut], paginated=True, tags=["customers"])
@requires()
async def search_customers(request: Request) -> Response:
    q = parse_query(CustomerSearchQuery, request)
    return await _list(request, q, q.q)


@api("Get a customer", query=CustomerQuery, response=CustomerOut, tags=["customers"], errors=[404])
@requires()
async def get_customer(request: Request) -> Response:
    auth = current_auth(request)
    cid = path_id(request)
    q = parse_query(CustomerQuery, request)
    await _check_include_deleted(request, auth, q.include_deleted)
    async with reader(request) as conn:
        row = await load_customer(conn, cid, include_deleted=q.include_deleted)
        scope = await read_scope(conn, auth.principal)
    if not scope.customer_ok(cid):
        raise await refuse(request, auth, f"you may not read customer {cid}", D.doc_id_for("customer", cid))
    return ok(_out(row))


async def _read_back(request: Request, cid: str) -> dict[str, Any]:
    async with reader(request) as conn:
        return _out(await load_customer(conn, cid, include_deleted=True))


@api("Create a customer (office, owner)", body=CustomerIn, response=CustomerOut, status=201, tags=["customers"])
@requires(*OFFICE)
async def create_customer(request: Request) -> Response:
    auth = current_auth(request)
    body: CustomerIn = await read_body(request, CustomerIn)
    cid = D.new_id()
    values = {k: v for k, v in body.model_dump().items() if v is not None}
    await edit(request, auth, D.doc_id_for("customer", cid), lambda doc, stamp: D.write_fields(doc, values, **stamp))
    return ok(await _read_back(request, cid), 201)


@api("Update a customer (office, owner): omitted fields are unchanged, null clears", body=CustomerPatch,
     response=CustomerOut, tags=["customers"], errors=[404])
@requires(*OFFICE)
async def update_customer(request: Request) -> Response:
    auth = current_auth(request)
    cid = path_id(request)
    body: CustomerPatch = await read_body(request, CustomerPatch)
    async with reader(request) as conn:
        await load_customer(conn, cid)
    values = body.model_dump(exclude_unset=True)
    if values:
        await edit(request, auth, D.doc_id_for("customer", cid), lambda doc, stamp: D.write_fields(doc, values, **stamp))
    return ok(await _read_back(request, cid))


@api("Soft-delete a customer (office, owner)", response=CustomerOut, tags=["customers"], errors=[404])
@requires(*OFFICE)
async def delete_customer(request: Request) -> Response:
    auth = current_auth(request)
    cid = path_id(request)
    async with reader(request) as conn:
        row = await load_customer(conn, cid, include_deleted=True)
    if not row.deleted:  # deleting twice is harmless (an offline client may retry)
        await edit(request, auth, D.doc_id_for("customer", cid),
                   lambda doc, stamp: D.write_field(doc, "deleted", True, **stamp))
    return ok(await _read_back(request, cid))


routes = [
    route("/api/customers", GET=list_customers, POST=create_customer),
    route("/api/customers/search", GET=search_customers),
    route("/api/customers/{id}", GET=get_customer, PUT=update_customer, DELETE=delete_customer),
]
