"""The registry (which rule for which field), explanations and the public surface."""

from __future__ import annotations

import importlib
import json

import pytest

import conflict_rules
from conflict_rules import registry
from conflict_rules.candidates import Candidate, Resolution, RuleContext
from conflict_rules.explain import explain_entries, explain_item, explain_resolution
from conflict_rules.union import resolve_item

T0, T1, T2 = "1700000000000.00000", "1700000060000.00000", "1700000120000.00000"


def cand(value, author, role, device, t, field="status"):
    return Candidate(f"{field}/{t}/{device}", value, author, role, device, t)


EXPECTED_RULES = {
    **{("customer", f): "lww" for f in ["name", "phone", "email", "address", "notes", "deleted"]},
    **{("job", f): "lww" for f in ["customer_id", "title", "description", "address", "scheduled_start",
                                   "scheduled_end", "owner_id", "crew", "estimate", "deleted"]},
    ("job", "status"): "owner_wins",
    ("job", "materials"): "union",
    ("job", "notes"): "append",
    **{("material", f): "lww" for f in ["name", "quantity", "unit", "purchased", "cost"]},
}


def test_field_rules_declare_every_field_once() -> None:
    assert registry.FIELD_RULES == EXPECTED_RULES


def test_builtins_are_registered_with_their_shapes() -> None:
    shapes = {n: registry.get_rule(n).shape for n in registry.rule_names()}
    assert shapes == {"lww": "field", "owner_wins": "field", "union": "items", "append": "entries"}


@pytest.mark.parametrize("kind, field", [("job", "colour"), ("invoice", "name"), ("customer", "status")])
def test_rule_for_unknown_field_raises(kind: str, field: str) -> None:
    with pytest.raises(KeyError, match=f"{kind}.{field}"):
        registry.rule_for(kind, field)
    with pytest.raises(KeyError):
        registry.resolve_field(kind, field, [])


def test_get_rule_unknown_raises() -> None:
    with pytest.raises(KeyError, match="nope"):
        registry.get_rule("nope")


def test_resolve_field_uses_the_declared_rule() -> None:
    owner = cand("on_hold", "u-olivia", "office", "dev-1", T0)
    crew = cand("in_progress", "u-bo", "crew", "dev-2", T1)
    ctx = RuleContext(record_owner="u-olivia")
    status = registry.resolve_field("job", "status", [crew, owner], ctx)
    assert (status.rule, status.value, status.reason) == ("owner_wins", "on_hold", "owner_wins")
    title = registry.resolve_field("job", "title", [crew, owner], ctx)
    assert (title.rule, title.value, title.reason) == ("lww", "in_progress", "latest_timestamp")


@pytest.mark.parametrize("field", ["materials", "notes"])
def test_resolve_field_refuses_collection_rules(field: str) -> None:
    with pytest.raises(TypeError, match=f"job.{field}"):
        registry.resolve_field("job", field, [])


def test_a_new_rule_comes_through_the_same_door(monkeypatch: pytest.MonkeyPatch) -> None:
    def first_writer_wins(cands, ctx=RuleContext()):
        cs = sorted(cands, key=lambda c: (c.time, c.device, c.key))
        return Resolution("first_writer", cs[0] if cs else None, tuple(cs), "earliest")

    registry.register_rule("first_writer", first_writer_wins, reasons={"earliest": "The first write wins."})
    try:
        monkeypatch.setitem(registry.FIELD_RULES, ("job", "title"), "first_writer")
        a, b = cand("A", "u-1", "crew", "dev-1", T0, "title"), cand("B", "u-2", "crew", "dev-2", T1, "title")
        res = registry.resolve_field("job", "title", [b, a])
        assert (res.value, res.reason) == ("A", "earliest")
        assert explain_resolution("job:x", "title", res)["reason_text"] == "The first write wins."
        with pytest.raises(ValueError, match="still used"):
            registry.unregister_rule("first_writer")
        monkeypatch.undo()
    finally:
        registry.unregister_rule("first_writer")
        registry.REASONS.pop("earliest", None)
    assert "first_writer" not in registry.rule_names()


def test_register_rule_refuses_clashes() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register_rule("lww", lambda cs, ctx=None: None)
    with pytest.raises(ValueError, match="another meaning"):
        registry.register_rule("x_rule", lambda cs, ctx=None: None, reasons={"owner_wins": "something else"})
    with pytest.raises(ValueError, match="shape"):
        registry.register_rule("y_rule", lambda cs, ctx=None: None, shape="tree")
    assert not {"x_rule", "y_rule"} & set(registry.rule_names())


def test_reasons_cover_every_code_a_builtin_emits() -> None:
    assert set(registry.REASONS) == {
        "no_candidates", "only_candidate", "latest_timestamp", "device_tiebreak", "owner_wins",
        "present", "removed", "kept_concurrent_edit", "all_kept",
    }
    assert conflict_rules.REASONS is registry.REASONS


# --- explanations ----------------------------------------------------------------------------


def test_explain_owner_wins_shows_candidates_tier_and_why() -> None:
    owner = cand("on_hold", "u-olivia", "office", "dev-1", T0)
    crew = cand("in_progress", "u-bo", "crew", "dev-2", T1)
    ctx = RuleContext(record_owner="u-olivia")
    res = registry.resolve_field("job", "status", [crew, owner], ctx)
    out = explain_resolution("job:42", "status", res, ctx=ctx)
    assert json.loads(json.dumps(out)) == out
    assert out["record"] == "job:42" and out["field"] == "status" and out["rule"] == "owner_wins"
    assert out["value"] == "on_hold" and out["winner"] == owner.to_json() and out["concurrent"] is True
    assert out["reason"] == "owner_wins" and "owner" in out["reason_text"]
    assert out["record_owner"] == "u-olivia"
    assert [(c["key"], c["winner"], c["owner_tier"]) for c in out["candidates"]] == [
        (owner.key, True, True), (crew.key, False, False),
    ]
    assert set(out["candidates"][0]) == {"value", "author", "role", "device", "time", "key", "winner", "owner_tier"}


def test_explain_empty_field() -> None:
    out = explain_resolution("customer:1", "phone", registry.resolve_field("customer", "phone", []))
    assert (out["winner"], out["value"], out["reason"], out["candidates"], out["concurrent"]) == (
        None, None, "no_candidates", [], False)


def test_explain_item_shows_what_each_removal_missed() -> None:
    mid = "11111111-1111-4111-8111-111111111111"
    name = cand("screws", "u-1", "crew", "dev-1", T0, f"{mid}/name")
    qty = cand(3, "u-2", "crew", "dev-2", T2, f"{mid}/quantity")
    rm = cand([name.key, f"{mid}/quantity/{T0}/dev-1"], "u-3", "office", "dev-3", T1, f"{mid}/_removed")
    item = resolve_item(mid, {"name": [name], "quantity": [qty], "_removed": [rm]})
    out = explain_item("job:42", item)
    assert json.loads(json.dumps(out)) == out
    assert (out["field"], out["rule"], out["removed"], out["reason"]) == (
        f"materials/{mid}", "union", False, "kept_concurrent_edit")
    assert out["value"] == {"name": "screws", "quantity": 3}
    [r] = out["candidates"]
    assert (r["key"], r["covers"], r["missing"], r["winner"]) == (rm.key, False, [qty.key], True)
    assert out["fields"]["quantity"]["field"] == f"materials/{mid}/quantity"


def test_explain_entries_lists_all_in_order() -> None:
    a = cand("first", "u-1", "crew", "dev-1", T0, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
    b = cand("second", "u-2", "crew", "dev-2", T1, "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
    out = explain_entries("job:42", "notes", [b, a])
    assert out["value"] == ["first", "second"] and out["rule"] == "append" and out["reason"] == "all_kept"
    assert [c["position"] for c in out["candidates"]] == [0, 1]


# --- public surface (httpx's test_exported_members) ------------------------------------------

MODULES = ["conflict_rules", "conflict_rules.lww", "conflict_rules.owner_wins", "conflict_rules.union",
           "conflict_rules.append", "conflict_rules.registry", "conflict_rules.explain", "schema.view"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__all__ and all(hasattr(mod, n) for n in mod.__all__)
    assert len(mod.__all__) == len(set(mod.__all__))
