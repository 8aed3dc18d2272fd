"""Field validators (what may enter a document) and the REST request models."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schema import models
from schema.documents import REMOVED
from schema.models import (
    CREW_STATUS_MOVES,
    FIELDS,
    JOB_STATUSES,
    NULLABLE,
    ROLES,
    Assign,
    CustomerIn,
    CustomerPatch,
    FieldError,
    JobIn,
    JobOut,
    JobPatch,
    MaterialIn,
    MaterialPatch,
    NoteIn,
    StatusChange,
    crew_may_move,
    validate_field,
)

U1, U2 = str(uuid.uuid4()), str(uuid.uuid4())

# kind, field -> values that must pass (returned unchanged except numbers -> float)
GOOD: dict[tuple[str, str], list[Any]] = {
    ("customer", "name"): ["Bob", "A" * 200, "Zoë & Søn GmbH", "🏗 Builders"],
    ("customer", "phone"): ["+1 (555) 123-4567", "0", "9" * 40, None],
    ("customer", "email"): ["bob@example.com", "a.b+c@sub.example.org", None],
    ("customer", "address"): ["1 Main St", "", "x" * 500, None],
    ("customer", "notes"): ["line\nline\ttab", "", "n" * 5000, None],
    ("customer", "deleted"): [True, False],
    ("job", "customer_id"): [U1],
    ("job", "title"): ["Kitchen remodel", "t"],
    ("job", "description"): ["multi\nline", None],
    ("job", "address"): ["2 Oak Ave", None],
    ("job", "status"): list(JOB_STATUSES),
    ("job", "scheduled_start"): ["2024-03-01", "2024-03-01T08:00", "2024-03-01T08:00:00Z",
                                 "2024-03-01T08:00:00.123+02:00", "2024-02-29", None],
    ("job", "scheduled_end"): ["2024-12-31T23:59:59-05:00", None],
    ("job", "owner_id"): [U1, None],
    ("job", "crew"): [[], [U1], [U1, U2], [str(uuid.uuid4()) for _ in range(50)]],
    ("job", "estimate"): [0, 0.0, 1, 12.5, 1e9, None],
    ("job", "deleted"): [True, False],
    ("material", "name"): ["2x4 stud"],
    ("material", "quantity"): [0, 1, 2.5, 1e6],
    ("material", "unit"): ["pcs", "", "m²", None],
    ("material", "purchased"): [True, False],
    ("material", "cost"): [0, 99.99, None],
    ("material", REMOVED): [[], [f"{U1}/name/0000000000001.00000/dev"], ["k"] * 1000],
    ("note", "body"): ["Arrived on site.\n\tAll good.", "b" * 5000],
}

BAD: dict[tuple[str, str], list[Any]] = {
    ("customer", "name"): ["", "   ", "A" * 201, "a\nb", "a\tb", "nul\x00", None, 5, ["Bob"]],
    ("customer", "phone"): ["abc", "555-CALL", "1" * 41, "+--", "1\n2", 5551234],
    ("customer", "email"): ["bob", "bob@", "@example.com", "a b@example.com", "x" * 250 + "@e.co", ""],
    ("customer", "address"): ["x" * 501, "a\nb", 1],
    ("customer", "notes"): ["n" * 5001, "bell\x07", "cr\r", "del\x7f", "c1\x85", "\ud800"],
    ("customer", "deleted"): [None, 1, 0, "true", "false"],
    ("job", "customer_id"): [None, "", "not-a-uuid", U1.upper(), "{" + U1 + "}", U1.replace("-", ""), 1],
    ("job", "title"): [None, "", "t" * 201],
    ("job", "description"): ["d" * 5001, "esc\x1b["],
    ("job", "status"): [None, "done", "Lead", "", 1],
    ("job", "scheduled_start"): ["2024-02-30", "2023-02-29", "24-03-01", "2024-3-1", "2024-03-01 08:00",
                                 "2024-W10-1", "20240301", "2024-03-01T25:00", "tomorrow", 20240301, ""],
    ("job", "owner_id"): ["nope", 5],
    ("job", "crew"): [None, [U1, U1], [str(uuid.uuid4()) for _ in range(51)], ["x"], U1, [None]],
    ("job", "estimate"): [-0.01, 1e9 + 1, math.nan, math.inf, -math.inf, "100", True, 10**400],
    ("job", "deleted"): [None, "yes"],
    ("material", "name"): [None, "", "n" * 201],
    ("material", "quantity"): [None, -1, 1e6 + 1, math.nan, "3", False],
    ("material", "unit"): ["u" * 21, "a\nb"],
    ("material", "purchased"): [None, 1],
    ("material", "cost"): [-1, math.inf, "1"],
    ("material", REMOVED): [None, "k", [1], ["k" * 201], ["k"] * 1001, ["a\x00"]],
    ("note", "body"): [None, "", "  \n ", "b" * 5001, "\x00"],
}


def test_fields_table_lists_every_validated_field() -> None:
    assert set(FIELDS) == {"customer", "job", "material", "note"}
    assert FIELDS["customer"] == ("name", "phone", "email", "address", "notes", "deleted")
    assert FIELDS["note"] == ("body",)
    assert REMOVED in FIELDS["material"]
    assert set(BAD) <= set(GOOD)
    assert {(k, f) for k, fs in FIELDS.items() for f in fs} == set(GOOD)
    assert NULLABLE["job"] == {"description", "address", "scheduled_start", "scheduled_end",
                               "owner_id", "estimate"}


@pytest.mark.parametrize("kind,field,value", [(k, f, v) for (k, f), vs in GOOD.items() for v in vs])
def test_accepts(kind: str, field: str, value: Any) -> None:
    out = validate_field(kind, field, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert type(out) is float and out == value
    else:
        assert out == value and type(out) is type(value)
    assert validate_field(kind, field, out) == out  # idempotent


@pytest.mark.parametrize("kind,field,value", [(k, f, v) for (k, f), vs in BAD.items() for v in vs])
def test_refuses(kind: str, field: str, value: Any) -> None:
    with pytest.raises(FieldError) as ei:
        validate_field(kind, field, value)
    assert (ei.value.kind, ei.value.field) == (kind, field)
    assert ei.value.message and isinstance(ei.value, ValueError)


@pytest.mark.parametrize("kind,field", [("user", "name"), ("job", "materials"), ("note", "title"),
                                        ("customer", "id"), ("material", "removed"), ("", "")])
def test_unknown_kind_or_field(kind: str, field: str) -> None:
    with pytest.raises(FieldError) as ei:
        validate_field(kind, field, "x")
    assert (ei.value.kind, ei.value.field) == (kind, field)


def test_error_messages() -> None:
    import pickle

    with pytest.raises(FieldError) as ei:
        validate_field("job", "crew", [U1, "bad"])
    assert ei.value.message.startswith("item 1: ") and "UUID" in ei.value.message
    assert str(ei.value) == f"job.crew: {ei.value.message}"
    copy = pickle.loads(pickle.dumps(ei.value))
    assert (copy.kind, copy.field, copy.message) == ("job", "crew", ei.value.message)


def test_negative_zero_is_canonical() -> None:
    assert math.copysign(1, validate_field("job", "estimate", -0.0)) == 1


_CONTROL = [chr(c) for c in range(0x20)] + [chr(0x7F)] + [chr(c) for c in range(0x80, 0xA0)]


@given(st.text(max_size=250))
def test_name_strings(s: str) -> None:
    ok = 1 <= len(s) <= 200 and s.strip() != "" and not any(c in _CONTROL or 0xD800 <= ord(c) <= 0xDFFF for c in s)
    if ok:
        assert validate_field("customer", "name", s) == s
    else:
        with pytest.raises(FieldError):
            validate_field("customer", "name", s)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_long_text_allows_newline_and_tab_only(s: str) -> None:
    bad = [c for c in s if c in _CONTROL and c not in "\n\t"]
    if bad:
        with pytest.raises(FieldError):
            validate_field("job", "description", s)
    else:
        assert validate_field("job", "description", s) == s


@given(st.text(alphabet="0123456789 +-()x", max_size=45))
def test_phone(s: str) -> None:
    ok = len(s) <= 40 and "x" not in s and any(c.isdigit() for c in s)
    if ok:
        assert validate_field("customer", "phone", s) == s
    else:
        with pytest.raises(FieldError):
            validate_field("customer", "phone", s)


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**20, max_value=10**20)))
def test_money_and_quantity_ranges(x: float) -> None:
    for kind, field, hi in (("job", "estimate", 1e9), ("material", "cost", 1e9), ("material", "quantity", 1e6)):
        if math.isfinite(x) and 0 <= x <= hi:
            assert validate_field(kind, field, x) == float(x)
        else:
            with pytest.raises(FieldError):
                validate_field(kind, field, x)


@given(st.lists(st.uuids().map(str), max_size=60))
def test_crew_lists(crew: list[str]) -> None:
    if len(crew) <= 50 and len(set(crew)) == len(crew):
        assert validate_field("job", "crew", crew) == crew
    else:
        with pytest.raises(FieldError):
            validate_field("job", "crew", crew)


@given(st.one_of(st.dates().map(str), st.datetimes().map(lambda d: d.isoformat(timespec="seconds"))))
def test_iso_dates_from_python(s: str) -> None:
    assert validate_field("job", "scheduled_start", s) == s


@settings(max_examples=200)
@given(st.from_regex(r"\A[0-9a-zA-Z:.+TZ-]{0,30}\Z"))
def test_iso_dates_never_crash(s: str) -> None:
    try:
        assert validate_field("job", "scheduled_end", s) == s
    except FieldError:
        pass


def test_roles_and_statuses() -> None:
    assert ROLES == ("owner", "office", "crew")
    assert JOB_STATUSES[:6] == ("lead", "estimate", "scheduled", "in_progress", "completed", "invoiced")
    assert set(JOB_STATUSES) == {"lead", "estimate", "scheduled", "in_progress", "completed", "invoiced",
                                 "on_hold", "cancelled"}
    assert CREW_STATUS_MOVES == {"scheduled": {"in_progress", "on_hold"},
                                 "in_progress": {"completed", "on_hold"}, "on_hold": {"in_progress"}}
    assert crew_may_move("scheduled", "in_progress")
    assert not crew_may_move("scheduled", "completed")
    assert not crew_may_move("completed", "invoiced")
    assert not crew_may_move(None, "in_progress")


# --- REST models ----------------------------------------------------------------------


def test_customer_in_normalizes_at_the_edge() -> None:
    c = CustomerIn.model_validate({"name": "  Bob  ", "email": " Bob@EXAMPLE.com ", "phone": "  ",
                                   "notes": " a\r\nb "})
    assert c.name == "Bob" and c.email == "Bob@example.com" and c.phone is None and c.notes == "a\nb"
    for f, v in c.model_dump().items():  # what the API writes passes the document validator
        validate_field("customer", f, v)


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "Bob", "extra": 1}, {"name": "Bob", "email": "x"},
                                  {"name": "Bob", "phone": "call me"}, {"name": 5}, {"name": "a\nb"}])
def test_customer_in_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CustomerIn.model_validate(body)


def test_patch_semantics() -> None:
    assert CustomerPatch.model_validate({}).model_dump(exclude_unset=True) == {}
    assert CustomerPatch.model_validate({"phone": None}).model_dump(exclude_unset=True) == {"phone": None}
    with pytest.raises(ValidationError):
        CustomerPatch.model_validate({"name": None})  # required field cannot be cleared
    with pytest.raises(ValidationError):
        JobPatch.model_validate({"title": None})
    with pytest.raises(ValidationError):
        JobPatch.model_validate({"status": "completed"})  # status has its own request
    with pytest.raises(ValidationError):
        MaterialPatch.model_validate({"quantity": None})
    assert MaterialPatch.model_validate({"purchased": True}).model_dump(exclude_unset=True) == {"purchased": True}


def test_job_in() -> None:
    j = JobIn.model_validate({"customer_id": U1.upper(), "title": " Deck ", "crew": [U2.upper()],
                              "estimate": 1500, "scheduled_start": "2024-05-01", "scheduled_end": "2024-05-03"})
    assert j.customer_id == U1 and j.crew == [U2] and j.status == "lead" and j.title == "Deck"
    for f, v in j.model_dump().items():
        validate_field("job", f, v)
    with pytest.raises(ValidationError):
        JobIn.model_validate({"customer_id": U1, "title": "x", "scheduled_start": "2024-05-03",
                              "scheduled_end": "2024-05-01"})
    with pytest.raises(ValidationError):
        JobIn.model_validate({"customer_id": U1, "title": "x", "crew": [U1, U1.upper()]})
    with pytest.raises(ValidationError):
        JobIn.model_validate({"customer_id": U1, "title": "x", "estimate": "100"})  # strict


def test_small_requests() -> None:
    assert MaterialIn.model_validate({"name": "nails"}).model_dump() == {
        "name": "nails", "quantity": 1.0, "unit": None, "purchased": False, "cost": None}
    assert NoteIn.model_validate({"body": " hi \r\n there "}).body == "hi \n there"
    assert StatusChange.model_validate({"status": "on_hold"}).status == "on_hold"
    assert Assign.model_validate({"crew": []}).crew == []
    for model, body in ((NoteIn, {"body": ""}), (StatusChange, {"status": "done"}),
                        (Assign, {"crew": [U1], "x": 1}), (MaterialIn, {"name": "n", "purchased": 1})):
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_request_models_forbid_extra_keys() -> None:
    for name in ("CustomerIn", "CustomerPatch", "JobIn", "JobPatch", "MaterialIn", "MaterialPatch", "NoteIn",
                 "StatusChange", "Assign"):
        assert getattr(models, name).model_config["extra"] == "forbid", name


def test_out_models_read_rows() -> None:
    row = {"id": U1, "customer_id": U2, "title": "t", "status": "lead", "estimate": 10.0, "deleted": False,
           "last_seq": 7}
    assert JobOut.model_validate(row).estimate == 10.0
