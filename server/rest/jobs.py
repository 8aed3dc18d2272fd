"""``/api/jobs``: list (filtered), read (with materials and notes), create, update, soft delete,
status, assignment, notes and the job's timeline.

Reads come from the projection (``jobs``, ``job_assignments``, ``materials``, ``notes``,
``events``); every write is an edit of the job's CRDT document (``job:<id>``) authored by the
caller. Office and owner manage jobs; a crew member sees only the jobs assigned to them,
may add notes and change their status; which status moves (and which material fields) a
crew may write is decided by the engine's write policy (``server.policy``), whose refusals
come back as 403, audited.

Lists are ordered by ``scheduled_start`` (unscheduled jobs last), then id; the timeline by
event id (``order=asc|desc``). Both are cursor-paginated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import case, func, select
from starlette.requests import Request
from starlette.responses import Response

from schema import documents as D
from schema import tables as t
from schema.models import (Assign, CustomerOut, JobIn, JobOut, JobPatch, MaterialOut, NoteIn, NoteOut, Status,
                           StatusChange, UuidIn)

from ..deps import Auth, current_auth, requires
from ..errors import NotFound, ValidationFailed, ok
from .common import (OFFICE, Scope, api, edit, parse_query, path_id, read_body, read_scope, reader, refuse, route,
                     user_roles)
from .pagination import PageQuery, SortKey, StrictQuery, paginate

__all__ = ["routes", "JobListQuery", "JobQuery", "EventsQuery", "JobDetail", "EventOut", "load_job", "readable_job",
           "crew_of", "job_out"]

j, a, m, n, e = t.jobs, t.job_assignments, t.materials, t.notes, t.events

ORDER = [SortKey(case((j.c.scheduled_start.is_(None), 1), else_=0), int),
         SortKey(func.coalesce(j.c.scheduled_start, ""), str), SortKey(j.c.id, str)]
MATERIAL_ORDER = [func.coalesce(func.lower(m.c.name), ""), m.c.id]  # as the materials list


class JobListQuery(PageQuery):
    status: Status | None = Field(default=None, description="only jobs with this status")
    customer_id: UuidIn | None = Field(default=None, description="only this customer's jobs")
    assigned_to: UuidIn | None = Field(default=None, description="only jobs assigned to this user")
    include_deleted: bool = Field(default=False, description="office/owner: also soft-deleted jobs")


class JobQuery(StrictQuery):
    include_deleted: bool = Field(default=False, description="office/owner: also a soft-deleted job")


class EventsQuery(PageQuery):
    order: Literal["asc", "desc"] = Field(default="asc", description="oldest first (asc) or newest first")


class JobDetail(JobOut):
    """A job with its customer, its (non-removed) materials and its notes."""

    customer: CustomerOut | None = None
    materials: list[MaterialOut] = Field(default_factory=list)
    notes: list[NoteOut] = Field(default_factory=list)


class EventOut(BaseModel):
    """One timeline entry (append-only)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    id: int
    doc_id: str
    record_type: str
    record_id: str
    type: str
    payload: dict[str, Any]
    actor: str | None = None
    ts: str | None = None
    seq: int
    created_at: datetime


# --- reading ----------------------------------------------------------------------------------

async def load_job(conn: Any, job_id: str, *, include_deleted: bool = False) -> Any:
    """The projected row, or 404 (soft-deleted ones too unless ``include_deleted``)."""
    row = (await conn.execute(select(j).where(j.c.id == job_id))).first()
    if row is None or (row.deleted and not include_deleted):
        raise NotFound(f"no job {job_id}")
    return row


async def readable_job(request: Request, auth: Auth, conn: Any, job_id: str, *,
                       include_deleted: bool = False) -> tuple[Any, Scope]:
    """The job if it exists (404) and the caller may read it (403, audited)."""
    row = await load_job(conn, job_id, include_deleted=include_deleted)
    scope = await read_scope(conn, auth.principal)
    if not scope.job_ok(job_id):
        raise await refuse(request, auth, f"job {job_id} is not assigned to you", D.doc_id_for("job", job_id))
    return row, scope


async def crew_of(conn: Any, job_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {jid: [] for jid in job_ids}
    if job_ids:
        for r in (await conn.execute(select(a.c.job_id, a.c.user_id).where(a.c.job_id.in_(job_ids))
                                     .order_by(a.c.job_id, a.c.user_id))).all():
            out[r.job_id].append(r.user_id)
    return out


def job_out(row: Any, crew: list[str]) -> dict[str, Any]:
    return JobOut.model_validate({**row._mapping, "crew": crew}).model_dump()


async def _job_json(conn: Any, job_id: str) -> dict[str, Any]:
    row = await load_job(conn, job_id, include_deleted=True)
    return job_out(row, (await crew_of(conn, [job_id]))[job_id])


async def _read_back(request: Request, job_id: str) -> dict[str, Any]:
    async with reader(request) as conn:
        return await _job_json(conn, job_id)


async def _include_deleted(request: Request, auth: Auth, flag: bool) -> None:
    if flag and auth.user.role not in OFFICE:
        raise await refuse(request, auth, "include_deleted requires role owner or office", request.url.path)


# --- checks of referenced records -----------------------------------------------------------------

async def _check_customer(conn: Any, customer_id: str) -> None:
    c = t.customers
    row = (await conn.execute(select(c.c.deleted).where(c.c.id == customer_id))).first()
    if row is None or row.deleted:
        raise ValidationFailed("unknown customer", [{"field": "customer_id", "message": f"no customer {customer_id}"}])


async def _check_owner(conn: Any, owner_id: str) -> None:
    role = (await user_roles(conn, [owner_id])).get(owner_id)
    if role not in OFFICE:
        raise ValidationFailed("invalid job owner", [{"field": "owner_id", "message":
                                                       "must be an active user with role owner or office"}])


async def _check_crew(conn: Any, crew: list[str]) -> None:
    known = await user_roles(conn, crew)
    bad = [{"field": f"crew.{i}", "message": f"no active user {uid}"} for i, uid in enumerate(crew) if uid not in known]
    if bad:
        raise ValidationFailed("unknown users in crew", bad)


# --- endpoints ------------------------------------------------------------------------------------

@api("List jobs (filters: status, customer_id, assigned_to; crews see their assigned jobs)", query=JobListQuery,
     response=list[JobOut], paginated=True, tags=["jobs"])
@requires()
async def list_jobs(request: Request) -> Response:
    auth = current_auth(request)
    q = parse_query(JobListQuery, request)
    await _include_deleted(request, auth, q.include_deleted)
    async with reader(request) as conn:
        scope = await read_scope(conn, auth.principal)
        stmt = select(j)
        for cond in (scope.jobs_where(j.c.id),
                     None if q.include_deleted else j.c.deleted.is_(False),
                     None if q.status is None else j.c.status == q.status,
                     None if q.customer_id is None else j.c.customer_id == q.customer_id,
                     None if q.assigned_to is None else j.c.id.in_(
                         select(a.c.job_id).where(a.c.user_id == q.assigned_to))):
            if cond is not None:
                stmt = stmt.where(cond)
        rows, next_cursor = await paginate(conn, stmt, ORDER, q, "jobs")
        crews = await crew_of(conn, [r.id for r in rows])
    return ok([job_out(r, crews[r.id]) for r in rows], limit=q.limit, next_cursor=next_cursor)


@api("Get a job with its customer, materials (not removed) and notes", query=JobQuery, response=JobDetail,
     tags=["jobs"], errors=[403, 404])
@requires()
async def get_job(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    q = parse_query(JobQuery, request)
    await _include_deleted(request, auth, q.include_deleted)
    async with reader(request) as conn:
        row, _ = await readable_job(request, auth, conn, jid, include_deleted=q.include_deleted)
        out = job_out(row, (await crew_of(conn, [jid]))[jid])
        cust = None
        if row.customer_id:
            crow = (await conn.execute(select(t.customers).where(t.customers.c.id == row.customer_id))).first()
            cust = CustomerOut.model_validate(crow._mapping).model_dump() if crow is not None else None
        mats = (await conn.execute(select(m).where(m.c.job_id == jid, m.c.removed.is_(False))
                                   .order_by(*MATERIAL_ORDER))).all()
        notes = (await conn.execute(select(n).where(n.c.job_id == jid).order_by(n.c.ts, n.c.id))).all()
    out["customer"] = cust
    out["materials"] = [MaterialOut.model_validate(r._mapping).model_dump() for r in mats]
    out["notes"] = [NoteOut.model_validate(r._mapping).model_dump() for r in notes]
    return ok(out)


@api("Create a job (office, owner); owner_id defaults to the caller", body=JobIn, response=JobOut, status=201,
     tags=["jobs"])
@requires(*OFFICE)
async def create_job(request: Request) -> Response:
    auth = current_auth(request)
    body: JobIn = await read_body(request, JobIn)
    values = body.model_dump()
    if values["owner_id"] is None:
        values["owner_id"] = auth.user.id
    async with reader(request) as conn:
        await _check_customer(conn, values["customer_id"])
        await _check_owner(conn, values["owner_id"])
        await _check_crew(conn, values["crew"])
    jid = D.new_id()
    values = {k: v for k, v in values.items() if v is not None}
    await edit(request, auth, D.doc_id_for("job", jid), lambda doc, stamp: D.write_fields(doc, values, **stamp))
    return ok(await _read_back(request, jid), 201)


@api("Update a job (office, owner): omitted fields are unchanged, null clears; status and crew have their own "
     "requests", body=JobPatch, response=JobOut, tags=["jobs"], errors=[404])
@requires(*OFFICE)
async def update_job(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    body: JobPatch = await read_body(request, JobPatch)
    values = body.model_dump(exclude_unset=True)
    async with reader(request) as conn:
        row = await load_job(conn, jid)
        if "customer_id" in values and values["customer_id"] != row.customer_id:
            await _check_customer(conn, values["customer_id"])
        if values.get("owner_id") is not None:
            await _check_owner(conn, values["owner_id"])
    start = values.get("scheduled_start", row.scheduled_start)
    end = values.get("scheduled_end", row.scheduled_end)
    if ("scheduled_start" in values or "scheduled_end" in values) and start and end:
        try:
            JobPatch.model_validate({"scheduled_start": start, "scheduled_end": end})
        except ValidationError:
            raise ValidationFailed("invalid schedule", [{"field": "scheduled_end", "message":
                                                          "scheduled_end must not be before scheduled_start"}]) from None
    if values:
        await edit(request, auth, D.doc_id_for("job", jid), lambda doc, stamp: D.write_fields(doc, values, **stamp))
    return ok(await _read_back(request, jid))


@api("Soft-delete a job (office, owner)", response=JobOut, tags=["jobs"], errors=[404])
@requires(*OFFICE)
async def delete_job(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    async with reader(request) as conn:
        row = await load_job(conn, jid, include_deleted=True)
    if not row.deleted:  # deleting twice is harmless (an offline client may retry)
        await edit(request, auth, D.doc_id_for("job", jid), lambda doc, stamp: D.write_field(doc, "deleted", True, **stamp))
    return ok(await _read_back(request, jid))


@api("Change a job's status (crews: on their jobs, the moves the write policy allows: scheduled → in_progress → "
     "completed, on_hold and back)", body=StatusChange,
     response=JobOut, tags=["jobs"], errors=[403, 404])
@requires()
async def set_status(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    body: StatusChange = await read_body(request, StatusChange)
    async with reader(request) as conn:
        row, _ = await readable_job(request, auth, conn, jid)
    if body.status != row.status:  # which moves a crew may make is the engine's write policy
        await edit(request, auth, D.doc_id_for("job", jid),
                   lambda doc, stamp: D.write_field(doc, "status", body.status, **stamp))
    return ok(await _read_back(request, jid))


@api("Assign a job's crew: the complete list of users (office, owner)", body=Assign, response=JobOut,
     tags=["jobs"], errors=[404])
@requires(*OFFICE)
async def assign(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    body: Assign = await read_body(request, Assign)
    async with reader(request) as conn:
        await load_job(conn, jid)
        await _check_crew(conn, body.crew)
    await edit(request, auth, D.doc_id_for("job", jid), lambda doc, stamp: D.write_field(doc, "crew", body.crew, **stamp))
    return ok(await _read_back(request, jid))


@api("Add a note to a job (append-only)", body=NoteIn, response=NoteOut, status=201, tags=["jobs"], errors=[403, 404])
@requires()
async def add_note(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    body: NoteIn = await read_body(request, NoteIn)
    async with reader(request) as conn:
        await readable_job(request, auth, conn, jid)
    nid = D.new_id()
    await edit(request, auth, D.doc_id_for("job", jid), lambda doc, stamp: D.add_note(doc, nid, body.body, **stamp))
    async with reader(request) as conn:
        row = (await conn.execute(select(n).where(n.c.id == nid))).one()
    return ok(NoteOut.model_validate(row._mapping).model_dump(), 201)


@api("A job's timeline: its events, materials' and notes' included (cursor-paginated)", query=EventsQuery,
     response=list[EventOut], paginated=True, tags=["jobs"], errors=[403, 404])
@requires()
async def list_events(request: Request) -> Response:
    auth = current_auth(request)
    jid = path_id(request)
    q = parse_query(EventsQuery, request)
    async with reader(request) as conn:
        await readable_job(request, auth, conn, jid, include_deleted=auth.user.role in OFFICE)
        stmt = select(e).where(e.c.doc_id == D.doc_id_for("job", jid))
        rows, next_cursor = await paginate(conn, stmt, [SortKey(e.c.id, int, desc=q.order == "desc")], q,
                                           f"events:{jid}:{q.order}")
    data = [EventOut.model_validate(r._mapping).model_dump() for r in rows]
    return ok(data, limit=q.limit, next_cursor=next_cursor)


routes = [
    route("/api/jobs", GET=list_jobs, POST=create_job),
    route("/api/jobs/{id}", GET=get_job, PUT=update_job, DELETE=delete_job),
    route("/api/jobs/{id}/status", PUT=set_status),
    route("/api/jobs/{id}/assign", POST=assign),
    route("/api/jobs/{id}/notes", POST=add_note),
    route("/api/jobs/{id}/events", GET=list_events),
]
