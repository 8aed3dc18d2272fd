"""Cursor (keyset) pagination for the CRM lists.

Request: ``?limit=`` (1..100, default 20) and ``&cursor=`` (from the previous page). Response::

    {"data": [...], "meta": {"timestamp", "version", "limit": 20, "next_cursor": "..." | null}}

``next_cursor`` is ``null`` on the last page. A cursor is opaque to clients: URL-safe base64
(no padding) of the JSON ``[list, key...]``, where ``key`` is the sort key of the last row
served and ``list`` names the listing it belongs to. A page is ``WHERE sort_key > cursor
ORDER BY sort_key LIMIT n`` with a unique sort key (it always ends with the primary key), so
walking the cursors serves every row exactly once, whatever is inserted meanwhile, and a
page costs an index range scan, not an offset.

The sort key is computed by the database (the selected ``_k0, _k1, ...`` columns) and sent
back verbatim, so ordering and comparison always agree (collation, ``lower()``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

from ..errors import ValidationFailed

__all__ = ["StrictQuery", "PageQuery", "SortKey", "encode_cursor", "decode_cursor", "paginate", "DEFAULT_LIMIT", "MAX_LIMIT"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_MAX_CURSOR = 2048


class StrictQuery(BaseModel):
    """Query parameters: an unknown one is refused (a typo must not silently widen a list)."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(StrictQuery):
    """``limit`` and ``cursor``; listing queries extend it with their filters."""

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size (1..100)")
    cursor: str | None = Field(default=None, min_length=1, max_length=_MAX_CURSOR,
                               description="meta.next_cursor of the previous page")


@dataclass(frozen=True)
class SortKey:
    """One column of a sort key: a SQL expression, its Python type, its direction."""

    expr: Any
    type: type
    desc: bool = False


def encode_cursor(listing: str, key: Sequence[Any]) -> str:
    raw = orjson.dumps([listing, *key])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _bad_cursor(message: str) -> ValidationFailed:
    return ValidationFailed("invalid cursor", [{"field": "cursor", "message": message}])


def decode_cursor(listing: str, cursor: str, types: Sequence[type]) -> list[Any]:
    """The sort key in ``cursor``; 422 VALIDATION_ERROR (field ``cursor``) if it is not one of
    this listing's cursors."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise _bad_cursor("not a cursor returned by this API") from None
    if not isinstance(data, list) or not data or data[0] != listing:
        raise _bad_cursor("this cursor belongs to another listing")
    key = data[1:]
    if len(key) != len(types) or not all(type(v) is tp for v, tp in zip(key, types)):
        raise _bad_cursor("not a cursor returned by this API")
    return key


def _after(keys: Sequence[SortKey], values: Sequence[Any]) -> Any:
    """Rows strictly after ``values`` in the order of ``keys`` (lexicographic, portable SQL)."""
    terms = []
    for i, k in enumerate(keys):
        step = k.expr < values[i] if k.desc else k.expr > values[i]
        terms.append(and_(*[keys[j].expr == values[j] for j in range(i)], step))
    return or_(*terms)


async def paginate(conn: AsyncConnection, stmt: Select, keys: Sequence[SortKey], page: PageQuery,
                   listing: str) -> tuple[list[Any], str | None]:
    """One page of ``stmt`` ordered by ``keys``: ``(rows, next_cursor)``.

    The last key must be unique (the primary key). Rows carry extra columns ``_k0..``.
    """
    stmt = stmt.add_columns(*[k.expr.label(f"_k{i}") for i, k in enumerate(keys)])
    if page.cursor is not None:
        stmt = stmt.where(_after(keys, decode_cursor(listing, page.cursor, [k.type for k in keys])))
    stmt = stmt.order_by(*[k.expr.desc() if k.desc else k.expr.asc() for k in keys]).limit(page.limit + 1)
    rows = list((await conn.execute(stmt)).all())
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    next_cursor = None
    if more:
        last = rows[-1]._mapping
        next_cursor = encode_cursor(listing, [_plain(last[f"_k{i}"], k.type) for i, k in enumerate(keys)])
    return rows, next_cursor


def _plain(v: Any, tp: type) -> Any:
    # drivers may return a numeric key as another int-like type; keep the cursor's types exact
    return tp(v) if v is not None else v
