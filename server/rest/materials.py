"""A job's materials: ``/api/jobs/{jobId}/materials``, ``/api/materials/{id}``,
``/api/materials/bulk-update``.

Materials live in their job's CRDT document (``job:<id>``, root ``materials``, merged with
the ``union`` rule); a material's job is found from the ``materials`` projection
(``materials.job_id``). Every write is an edit of that job document authored by the caller;
removal is the union-safe :func:`schema.documents.remove_material` (an edit made
concurrently on a device keeps the item). Crews may work on the materials of their
assigned jobs (the engine's write policy has the last word).

``PUT /api/materials/bulk-update`` takes ``[{"id": ..., <MaterialPatch fields>}, ...]`` (at
most 200, ids unique) and makes one edit per job document; it answers 200 with one result
per item, in order: ``{"id", "status": 200, "data": Material}`` or ``{"id", "status",
"error": {code, message, details}}`` (404 unknown or removed, 403 not yours, or the
engine's refusal of that job's edit).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from schema import documents as D
from schema import tables as t
from schema.models import MaterialIn, MaterialOut, MaterialPatch, UuidIn
from syncd.errors import SyncError

from ..deps import Auth, current_auth, requires
from ..errors import ApiError, InvalidJson, NotFound, ValidationFailed, error_body, ok, validation_details
from .common import api, edit, parse_query, path_id, read_body, read_scope, reader, refuse, route
from .jobs import readable_job
from .pagination import PageQuery, SortKey, paginate

__all__ = ["routes", "MaterialBulkItem", "MAX_ITEMS", "BulkResult"]

m, j = t.materials, t.jobs
ORDER = [SortKey(func.coalesce(func.lower(m.c.name), ""), str), SortKey(m.c.id, str)]
#: most materials one request may add or update
MAX_ITEMS = 200


class MaterialBulkItem(MaterialPatch):
    """One item of a bulk update: the material's id and the fields to change."""

    id: UuidIn


_ADD_ONE = TypeAdapter(MaterialIn)
_ADD_MANY = TypeAdapter(Annotated[list[MaterialIn], Field(min_length=1, max_length=MAX_ITEMS)])
_BULK = TypeAdapter(Annotated[list[MaterialBulkItem], Field(min_length=1, max_length=MAX_ITEMS)])

#: the documented shape of a bulk result
BulkResult = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "integer"},
        "data": {"$ref": "#/components/schemas/MaterialOut"},
        "error": {"$ref": "#/components/schemas/ErrorBody"},
    },
}


def _out(row: Any) -> dict[str, Any]:
    return MaterialOut.model_validate(row._mapping).model_dump()


def _write_patch(doc: Any, mid: str, values: dict[str, Any], stamp: dict[str, Any]) -> None:
    for f, v in values.items():
        D.write_material_field(doc, mid, f, v, **stamp)


async def _rows(request: Request, ids: list[str]) -> dict[str, Any]:
    async with reader(request) as conn:
        return {r.id: r for r in (await conn.execute(select(m).where(m.c.id.in_(ids)))).all()}


async def _load_material(conn: Any, mid: str, *, include_removed: bool = False) -> Any:
    """The material, if it exists, is not removed and its job is not deleted; else 404."""
    row = (await conn.execute(select(m, j.c.deleted.label("job_deleted"))
                              .select_from(m.outerjoin(j, j.c.id == m.c.job_id)).where(m.c.id == mid))).first()
    if row is None or row.job_deleted is not False or (row.removed and not include_removed):
        raise NotFound(f"no material {mid}")
    return row


@api("List a job's materials (not removed; by name; cursor-paginated)", query=PageQuery, response=list[MaterialOut],
     paginated=True, tags=["materials"], errors=[403, 404])
@requires()
async def list_materials(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request, "jobId")
    q = parse_query(PageQuery, request)
    async with reader(request) as conn:
        await readable_job(request, auth, conn, jid)
        stmt = select(m).where(m.c.job_id == jid, m.c.removed.is_(False))
        rows, next_cursor = await paginate(conn, stmt, ORDER, q, f"materials:{jid}")
    return ok([_out(r) for r in rows], limit=q.limit, next_cursor=next_cursor)


@api("Add one material (an object) or several (a list of at most 200) to a job",
     body={"oneOf": [{"$ref": "#/components/schemas/MaterialIn"},
                     {"type": "array", "items": {"$ref": "#/components/schemas/MaterialIn"},
                      "minItems": 1, "maxItems": MAX_ITEMS}]},
     response={"oneOf": [{"$ref": "#/components/schemas/MaterialOut"},
                         {"type": "array", "items": {"$ref": "#/components/schemas/MaterialOut"}}]},
     status=201, tags=["materials"], errors=[403, 404], extra_models=[MaterialIn, MaterialOut])
@requires()
async def add_materials(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request, "jobId")
    try:
        data: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError as e:
        raise InvalidJson(f"the request body is not valid JSON: {e}") from None
    many = isinstance(data, list)
    try:
        items: list[MaterialIn] = _ADD_MANY.validate_python(data) if many else [_ADD_ONE.validate_python(data)]
    except ValidationError as e:
        raise ValidationFailed("the request body is not valid", validation_details(e)) from None
    async with reader(request) as conn:
        await readable_job(request, auth, conn, jid)
    added = [(D.new_id(), {k: v for k, v in it.model_dump().items() if v is not None}) for it in items]

    def write(doc: Any, stamp: dict[str, Any]) -> None:
        for mid, values in added:
            _write_patch(doc, mid, values, stamp)

    await edit(request, auth, D.doc_id_for("job", jid), write)
    rows = await _rows(request, [mid for mid, _ in added])
    out = [_out(rows[mid]) for mid, _ in added]
    return ok(out if many else out[0], 201)


async def _writable(request: Request, auth: Auth, conn: Any, mid: str, *, include_removed: bool = False) -> Any:
    row = await _load_material(conn, mid, include_removed=include_removed)
    await readable_job(request, auth, conn, row.job_id)
    return row


@api("Update a material: omitted fields are unchanged, null clears", body=MaterialPatch, response=MaterialOut,
     tags=["materials"], errors=[403, 404])
@requires()
async def update_material(request: Request) -> Response:
    auth = current_auth(request)
    mid = path_id(request)
    body: MaterialPatch = await read_body(request, MaterialPatch)
    async with reader(request) as conn:
        row = await _writable(request, auth, conn, mid)
    values = body.model_dump(exclude_unset=True)
    if values:
        await edit(request, auth, D.doc_id_for("job", row.job_id), lambda doc, stamp: _write_patch(doc, mid, values, stamp))
    return ok(_out((await _rows(request, [mid]))[mid]))


@api("Remove a material (union-safe: an edit made concurrently elsewhere keeps it)",
     response={"type": "object", "required": ["id", "job_id", "removed"],
               "properties": {"id": {"type": "string"}, "job_id": {"type": "string"}, "removed": {"const": True}}},
     tags=["materials"], errors=[403, 404])
@requires()
async def delete_material(request: Request) -> Response:
    auth = current_auth(request)
    mid = path_id(request)
    async with reader(request) as conn:
        row = await _writable(request, auth, conn, mid, include_removed=True)
    if not row.removed:  # removing twice is harmless (an offline client may retry)
        await edit(request, auth, D.doc_id_for("job", row.job_id), lambda doc, stamp: D.remove_material(doc, mid, **stamp))
    removed = (await _rows(request, [mid]))[mid].removed
    return ok({"id": mid, "job_id": row.job_id, "removed": bool(removed)})


def _item_error(mid: str, e: BaseException) -> dict[str, Any]:
    if isinstance(e, SyncError):
        return {"id": mid, "status": e.status, **e.to_json()}
    if isinstance(e, ApiError):
        return {"id": mid, "status": e.status, **error_body(e.code, e.message, e.details)}
    raise e


@api(f"Update up to {MAX_ITEMS} materials: one edit per job document, one result per item",
     body={"type": "array", "minItems": 1, "maxItems": MAX_ITEMS,
           "items": {"$ref": "#/components/schemas/MaterialBulkItem"}},
     response={"type": "object", "required": ["results"],
               "properties": {"results": {"type": "array", "items": BulkResult}}},
     tags=["materials"], extra_models=[MaterialBulkItem, MaterialOut])
@requires()
async def bulk_update(request: Request) -> Response:
    auth = current_auth(request)
    items: list[MaterialBulkItem] = await read_body(request, _BULK)
    seen: dict[str, int] = {}
    dupes = []
    for i, it in enumerate(items):
        if it.id in seen:
            dupes.append({"field": f"{i}.id", "message": f"duplicate of item {seen[it.id]}"})
        seen.setdefault(it.id, i)
    if dupes:
        raise ValidationFailed("each material may appear once", dupes)
    results: dict[str, dict[str, Any]] = {}
    by_job: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    async with reader(request) as conn:
        found = {r.id: r for r in (await conn.execute(
            select(m, j.c.deleted.label("job_deleted")).select_from(m.outerjoin(j, j.c.id == m.c.job_id))
            .where(m.c.id.in_(list(seen))))).all()}
        scope = await read_scope(conn, auth.principal)
        refused_jobs: dict[str, ApiError] = {}
        for it in items:
            row = found.get(it.id)
            if row is None or row.removed or row.job_deleted is not False:
                results[it.id] = _item_error(it.id, NotFound(f"no material {it.id}"))
                continue
            if not scope.job_ok(row.job_id):
                if row.job_id not in refused_jobs:  # audited once per job
                    refused_jobs[row.job_id] = await refuse(request, auth, f"job {row.job_id} is not assigned to you",
                                                            D.doc_id_for("job", row.job_id))
                results[it.id] = _item_error(it.id, refused_jobs[row.job_id])
                continue
            by_job.setdefault(row.job_id, []).append((it.id, it.model_dump(exclude_unset=True, exclude={"id"})))
    for jid, patches in by_job.items():
        todo = [(mid, values) for mid, values in patches if values]
        if todo:
            def write(doc: Any, stamp: dict[str, Any], todo: list[tuple[str, dict[str, Any]]] = todo) -> None:
                for mid, values in todo:
                    _write_patch(doc, mid, values, stamp)

            try:
                await edit(request, auth, D.doc_id_for("job", jid), write)
            except (SyncError, ApiError) as e:
                for mid, _ in patches:
                    results[mid] = _item_error(mid, e)
                continue
        rows = await _rows(request, [mid for mid, _ in patches])
        for mid, _ in patches:
            results[mid] = {"id": mid, "status": 200, "data": _out(rows[mid])}
    return ok({"results": [results[it.id] for it in items]})


routes = [
    route("/api/jobs/{jobId}/materials", GET=list_materials, POST=add_materials),
    route("/api/materials/bulk-update", PUT=bulk_update),
    route("/api/materials/{id}", PUT=update_material, DELETE=delete_material),
]
