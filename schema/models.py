"""Domain values: what may enter a document, and the REST API's request/response bodies.

Two layers:

* :func:`validate_field` checks one value written into a CRDT document (by the server at
  acceptance, by replicas before they write). It never rewrites content: a string, list or
  boolean comes back unchanged, a number comes back as ``float`` (pycrdt returns every
  number as a float anyway). The projection therefore stores exactly what every replica
  resolves locally. Values are checked strictly: ``"1"`` is not a number, ``1`` is not a
  boolean, ids must be canonical lowercase UUIDs.
* The REST models (``CustomerIn``, ``JobPatch``, ...) are lenient at the edge and produce
  canonical values: surrounding whitespace is stripped, blank optional strings become
  ``None``, emails are normalized, UUIDs lowercased. A value that passed a REST model passes
  :func:`validate_field` unchanged.

Patch models: an omitted field is left alone (use ``model_dump(exclude_unset=True)``); an
explicit ``null`` clears an optional field and is refused for a required one.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

__all__ = [
    "FieldError",
    "validate_field",
    "FIELDS",
    "NULLABLE",
    "ROLES",
    "JOB_STATUSES",
    "CREW_STATUS_MOVES",
    "crew_may_move",
    "CustomerIn",
    "CustomerPatch",
    "CustomerOut",
    "JobIn",
    "JobPatch",
    "JobOut",
    "MaterialIn",
    "MaterialPatch",
    "MaterialOut",
    "NoteIn",
    "NoteOut",
    "StatusChange",
    "Assign",
]

# --- roles and job lifecycle ----------------------------------------------------------

#: Roles, highest first. ``owner``: everything. ``office``: customers, jobs, scheduling,
#: assignment, materials, users other than owners. ``crew``: the jobs assigned to them (and
#: those jobs' customers), read-mostly.
ROLES: tuple[str, ...] = ("owner", "office", "crew")

#: Job statuses. The main line is ``lead -> estimate -> scheduled -> in_progress ->
#: completed -> invoiced``; ``on_hold`` and ``cancelled`` can be entered from the line.
JOB_STATUSES: tuple[str, ...] = (
    "lead",
    "estimate",
    "scheduled",
    "in_progress",
    "completed",
    "invoiced",
    "on_hold",
    "cancelled",
)

#: The only status changes a ``crew`` member may make, ``{from: {to, ...}}``: start a
#: scheduled job, finish a started one, pause either, resume a paused one. Owners and office
#: staff may set any status. Enforced at the edge (REST and document acceptance), against the
#: status the writer saw.
CREW_STATUS_MOVES: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"in_progress", "on_hold"}),
    "in_progress": frozenset({"completed", "on_hold"}),
    "on_hold": frozenset({"in_progress"}),
}


def crew_may_move(old: str | None, new: str) -> bool:
    """Whether a crew member may change a job's status from ``old`` to ``new``."""
    return old is not None and new in CREW_STATUS_MOVES.get(old, ())


# --- errors ---------------------------------------------------------------------------


class FieldError(ValueError):
    """A value refused for ``kind.field``; ``message`` says why in words for a person."""

    def __init__(self, kind: str, field: str, message: str) -> None:
        super().__init__(f"{kind}.{field}: {message}")
        self.kind = kind
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the custom signature
        return (type(self), (self.kind, self.field, self.message))


# --- building blocks ------------------------------------------------------------------

# Cc (C0, DEL, C1) and lone surrogates (not encodable as UTF-8: PostgreSQL and Yjs refuse
# them). Long text may hold newlines and tabs.
_CTRL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CTRL_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_UUID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_PHONE = re.compile(r"\A[0-9 +\-()]*\Z")
# Extended ISO-8601 calendar date, optionally with a time and an offset: the subset every
# JavaScript engine parses the same way.
_ISO = re.compile(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?\Z"
)


def _line(v: str) -> str:
    if _CTRL_LINE.search(v):
        raise ValueError("must not contain control characters or line breaks")
    return v


def _text(v: str) -> str:
    if _CTRL_TEXT.search(v):
        raise ValueError("must not contain control characters (other than newline and tab)")
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be blank")
    return v


def _uuid(v: str) -> str:
    if not _UUID.match(v):
        raise ValueError("must be a lowercase canonical UUID")
    return v


def _phone(v: str) -> str:
    if not _PHONE.match(v) or not any(c.isdigit() for c in v):
        raise ValueError("may contain only digits, spaces and + - ( ), and needs a digit")
    return v


def _email(v: str) -> str:
    try:
        validate_email(v, check_deliverability=False)
    except EmailNotValidError as e:
        raise ValueError(f"not a valid email address: {e}") from None
    return v


def _iso(v: str) -> str:
    if not _ISO.match(v):
        raise ValueError("must be an ISO-8601 date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM[:SS][Z|±HH:MM])")
    try:
        (datetime if "T" in v else date).fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not a real calendar date or time") from None
    return v


def _unique(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError("must not contain duplicates")
    return v


def _as_float(v: float) -> float:
    return float(v) + 0.0  # -0.0 -> 0.0


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_line), AfterValidator(_not_blank)]
Phone = Annotated[str, Field(max_length=40), AfterValidator(_phone)]
Email = Annotated[str, Field(max_length=254), AfterValidator(_line), AfterValidator(_email)]
Address = Annotated[str, Field(max_length=500), AfterValidator(_line)]
LongText = Annotated[str, Field(max_length=5000), AfterValidator(_text)]
Body = Annotated[str, Field(min_length=1, max_length=5000), AfterValidator(_text), AfterValidator(_not_blank)]
Unit = Annotated[str, Field(max_length=20), AfterValidator(_line)]
Uuid = Annotated[str, AfterValidator(_uuid)]
IsoDate = Annotated[str, Field(max_length=40), AfterValidator(_iso)]
Status = Literal[
    "lead", "estimate", "scheduled", "in_progress", "completed", "invoiced", "on_hold", "cancelled"
]
Crew = Annotated[list[Uuid], Field(max_length=50), AfterValidator(_unique)]
Money = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False), AfterValidator(_as_float)]
Quantity = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False), AfterValidator(_as_float)]
RemovedKeys = Annotated[list[Annotated[str, Field(max_length=200), AfterValidator(_line)]], Field(max_length=1000)]

# --- document fields ------------------------------------------------------------------

# kind -> field -> (type, nullable). The order of fields is the order of FIELDS.
_SPEC: dict[str, dict[str, tuple[Any, bool]]] = {
    "customer": {
        "name": (Name, False),
        "phone": (Phone, True),
        "email": (Email, True),
        "address": (Address, True),
        "notes": (LongText, True),
        "deleted": (bool, False),
    },
    "job": {
        "customer_id": (Uuid, False),
        "title": (Name, False),
        "description": (LongText, True),
        "address": (Address, True),
        "status": (Status, False),
        "scheduled_start": (IsoDate, True),
        "scheduled_end": (IsoDate, True),
        "owner_id": (Uuid, True),
        "crew": (Crew, False),
        "estimate": (Money, True),
        "deleted": (bool, False),
    },
    "material": {
        "name": (Name, False),
        "quantity": (Quantity, False),
        "unit": (Unit, True),
        "purchased": (bool, False),
        "cost": (Money, True),
        # Marker of a removal: the keys of the item's writes the remover saw
        # (schema.documents.remove_material). Not a column.
        "_removed": (RemovedKeys, False),
    },
    "note": {
        "body": (Body, False),
    },
}

#: Every field :func:`validate_field` accepts, per kind. Names starting with ``_`` are
#: markers (``material._removed``), not columns.
FIELDS: dict[str, tuple[str, ...]] = {kind: tuple(spec) for kind, spec in _SPEC.items()}
#: The fields that may be ``None``, per kind.
NULLABLE: dict[str, frozenset[str]] = {
    kind: frozenset(f for f, (_, nullable) in spec.items() if nullable) for kind, spec in _SPEC.items()
}

_STRICT = ConfigDict(strict=True)
_ADAPTERS: dict[tuple[str, str], TypeAdapter[Any]] = {
    (kind, f): TypeAdapter(t | None if nullable else t, config=_STRICT)
    for kind, spec in _SPEC.items()
    for f, (t, nullable) in spec.items()
}


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    items = [p for p in err["loc"] if isinstance(p, int)]
    return f"item {items[0]}: {msg}" if items else msg


def validate_field(kind: str, field: str, value: Any) -> Any:
    """Check ``value`` for ``kind.field`` and return it in canonical form.

    Kinds: ``customer``, ``job``, ``material``, ``note`` (field ``body``); see
    :data:`FIELDS`. Raises :class:`FieldError` for an unknown kind or field and for any
    value that does not fit. Numbers come back as ``float``; everything else unchanged.
    """
    adapter = _ADAPTERS.get((kind, field))
    if adapter is None:
        if kind not in _SPEC:
            raise FieldError(kind, field, f"unknown kind {kind!r}")
        raise FieldError(kind, field, f"unknown field {field!r} of {kind}")
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        raise FieldError(kind, field, _first_error(e)) from None
    except (OverflowError, RecursionError, TypeError) as e:  # e.g. an int too large for a float
        raise FieldError(kind, field, f"invalid value: {type(e).__name__}") from None


# --- REST request bodies --------------------------------------------------------------


def _edge_strip(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _edge_blank_none(v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return v


def _edge_text(v: Any) -> Any:
    # Multi-line text keeps inner whitespace; CRLF from form posts becomes LF.
    if isinstance(v, str):
        v = v.replace("\r\n", "\n").strip()
        return v or None
    return v


def _edge_email(v: Any) -> Any:
    v = _edge_blank_none(v)
    if isinstance(v, str):
        try:
            return validate_email(v, check_deliverability=False).normalized
        except EmailNotValidError as e:
            raise ValueError(f"not a valid email address: {e}") from None
    return v


def _edge_uuid(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


NameIn = Annotated[Name, BeforeValidator(_edge_strip)]
PhoneIn = Annotated[Phone | None, BeforeValidator(_edge_blank_none)]
EmailIn = Annotated[Email | None, BeforeValidator(_edge_email)]
AddressIn = Annotated[Address | None, BeforeValidator(_edge_blank_none)]
LongTextIn = Annotated[LongText | None, BeforeValidator(_edge_text)]
BodyIn = Annotated[Body, BeforeValidator(_edge_text)]
UnitIn = Annotated[Unit | None, BeforeValidator(_edge_blank_none)]
UuidIn = Annotated[Uuid, BeforeValidator(_edge_uuid)]
OptUuidIn = Annotated[Uuid | None, BeforeValidator(_edge_uuid)]
IsoDateIn = Annotated[IsoDate | None, BeforeValidator(_edge_blank_none)]
CrewIn = Annotated[list[UuidIn], Field(max_length=50), AfterValidator(_unique)]


def _schedule_order(start: str | None, end: str | None) -> None:
    if start is None or end is None:
        return

    def parse(s: str) -> datetime:
        if "T" in s:
            return datetime.fromisoformat(s.replace("Z", "+00:00"))
        return datetime.fromisoformat(s + "T00:00")

    a, b = parse(start), parse(end)
    if (a.tzinfo is None) != (b.tzinfo is None):
        return  # not comparable; each is valid on its own
    if b < a:
        raise ValueError("scheduled_end must not be before scheduled_start")


class _In(BaseModel):
    # Strict: a JSON string is not a number, 1 is not true. Unknown keys are refused.
    model_config = ConfigDict(extra="forbid", strict=True)


class CustomerIn(_In):
    """Create a customer."""

    name: NameIn
    phone: PhoneIn = None
    email: EmailIn = None
    address: AddressIn = None
    notes: LongTextIn = None


class CustomerPatch(_In):
    """Change some fields of a customer (omitted fields are unchanged)."""

    name: NameIn = None  # type: ignore[assignment]  # explicit null refused: required
    phone: PhoneIn = None
    email: EmailIn = None
    address: AddressIn = None
    notes: LongTextIn = None


class JobIn(_In):
    """Create a job. ``owner_id`` defaults (in the API) to the creating user."""

    customer_id: UuidIn
    title: NameIn
    description: LongTextIn = None
    address: AddressIn = None
    status: Status = "lead"
    scheduled_start: IsoDateIn = None
    scheduled_end: IsoDateIn = None
    owner_id: OptUuidIn = None
    crew: CrewIn = Field(default_factory=list)
    estimate: Money | None = None

    @model_validator(mode="after")
    def _check_schedule(self) -> "JobIn":
        _schedule_order(self.scheduled_start, self.scheduled_end)
        return self


class JobPatch(_In):
    """Change some fields of a job. Status and crew have their own requests
    (:class:`StatusChange`, :class:`Assign`): they are permissioned differently."""

    customer_id: UuidIn = None  # type: ignore[assignment]  # explicit null refused
    title: NameIn = None  # type: ignore[assignment]  # explicit null refused
    description: LongTextIn = None
    address: AddressIn = None
    scheduled_start: IsoDateIn = None
    scheduled_end: IsoDateIn = None
    owner_id: OptUuidIn = None
    estimate: Money | None = None

    @model_validator(mode="after")
    def _check_schedule(self) -> "JobPatch":
        _schedule_order(self.scheduled_start, self.scheduled_end)
        return self


class MaterialIn(_In):
    """Add a material to a job."""

    name: NameIn
    quantity: Quantity = 1.0
    unit: UnitIn = None
    purchased: bool = False
    cost: Money | None = None


class MaterialPatch(_In):
    """Change some fields of a material (omitted fields are unchanged)."""

    name: NameIn = None  # type: ignore[assignment]  # explicit null refused
    quantity: Quantity = None  # type: ignore[assignment]  # explicit null refused
    unit: UnitIn = None
    purchased: bool = None  # type: ignore[assignment]  # explicit null refused
    cost: Money | None = None


class NoteIn(_In):
    """Add a note to a job (notes are append-only)."""

    body: BodyIn


class StatusChange(_In):
    """Move a job to another status (crew: see :data:`CREW_STATUS_MOVES`)."""

    status: Status


class Assign(_In):
    """Set a job's crew: the complete list of assigned users (empty to unassign all)."""

    crew: CrewIn


# --- REST response bodies -------------------------------------------------------------


class _Out(BaseModel):
    # Built from projection rows (``row._mapping`` or attribute access): extra columns such
    # as ``last_seq`` are ignored.
    model_config = ConfigDict(extra="ignore", from_attributes=True)


class CustomerOut(_Out):
    id: str
    name: str | None
    phone: str | None = None
    email: str | None = None
    address: str | None = None
    notes: str | None = None
    deleted: bool = False


class JobOut(_Out):
    id: str
    customer_id: str | None
    title: str | None
    description: str | None = None
    address: str | None = None
    status: str | None = None
    scheduled_start: str | None = None
    scheduled_end: str | None = None
    owner_id: str | None = None
    crew: list[str] = Field(default_factory=list)
    estimate: float | None = None
    deleted: bool = False


class MaterialOut(_Out):
    id: str
    job_id: str
    name: str | None
    quantity: float | None = None
    unit: str | None = None
    purchased: bool = False
    cost: float | None = None


class NoteOut(_Out):
    id: str
    job_id: str
    author_id: str
    device_id: str
    body: str
    ts: str
