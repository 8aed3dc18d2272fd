"""Properties every rule must hold, over generated candidates (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict_rules import append, lww, owner_wins, registry, union
from conflict_rules.candidates import Candidate, RuleContext
from conflict_rules.explain import explain_item, explain_resolution
from conflict_rules.hlc import format_ts

BASE = 1_700_000_000_000
AUTHORS = ["u-1", "u-2", "u-3", "u-owner"]
ROLES = ["owner", "office", "crew"]
FIELD_RULES = [n for n in registry.rule_names() if registry.get_rule(n).shape == "field"]

# Few distinct times and devices, so ties are common.
times = st.builds(format_ts, st.integers(BASE, BASE + 3), st.integers(0, 2))
devices = st.sampled_from(["dev-a", "dev-b", "Dev-Z", "dev-crew-1", "x_9"])
values = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=4), st.booleans())
contexts = st.builds(RuleContext, st.sampled_from([None, *AUTHORS]))


@st.composite
def candidate(draw, prefix: str = "status") -> Candidate:
    t, d = draw(times), draw(devices)
    return Candidate(f"{prefix}/{t}/{d}", draw(values), draw(st.sampled_from(AUTHORS)),
                     draw(st.sampled_from(ROLES)), d, t)


def candidate_lists(prefix: str = "status", min_size: int = 0, max_size: int = 6):
    # A document key is unique, and (time, device) determines it within one field.
    return st.lists(candidate(prefix), min_size=min_size, max_size=max_size, unique_by=lambda c: c.key)


@pytest.mark.parametrize("name", FIELD_RULES)
@given(data=st.data(), cands=candidate_lists(), ctx=contexts)
def test_field_rules_ignore_input_order(name: str, data, cands: list[Candidate], ctx: RuleContext) -> None:
    rule = registry.get_rule(name)
    shuffled = data.draw(st.permutations(cands))
    assert rule(shuffled, ctx) == rule(cands, ctx)


@pytest.mark.parametrize("name", FIELD_RULES)
@given(c=candidate(), ctx=contexts)
def test_single_remaining_candidate_wins_every_rule(name: str, c: Candidate, ctx: RuleContext) -> None:
    """A write that saw the others deleted them, so it is alone: it wins under every rule."""
    res = registry.get_rule(name)([c], ctx)
    assert (res.winner, res.reason, res.candidates) == (c, lww.ONLY_CANDIDATE, (c,))


@given(c=candidate(prefix="11111111-1111-4111-8111-111111111111/quantity"))
def test_single_candidate_wins_inside_union_and_is_kept_by_append(c: Candidate) -> None:
    item = union.resolve_item("11111111-1111-4111-8111-111111111111", {"quantity": [c]})
    assert (item.values, item.removed) == ({"quantity": c.value}, False)
    assert append.order([c]) == [c]


@given(cands=candidate_lists(min_size=1))
def test_lww_winner_is_the_greatest_time_device_key(cands: list[Candidate]) -> None:
    res = lww.resolve(cands)
    best = max(cands, key=lambda c: (c.time, c.device, c.key))
    assert res.winner == best
    others = [c for c in cands if c is not best]
    if not others:
        assert res.reason == "only_candidate"
    elif all(best.time > c.time for c in others):
        assert res.reason == "latest_timestamp"
    else:
        assert res.reason == "device_tiebreak"
    # Documented order: winner first, then (time, device, key) descending.
    keys = [(c.time, c.device, c.key) for c in res.candidates]
    assert keys == sorted(keys, reverse=True)


@given(cands=candidate_lists(), ctx=contexts)
def test_owner_wins_never_lets_a_non_owner_beat_the_owner_tier(cands: list[Candidate], ctx: RuleContext) -> None:
    res = owner_wins.resolve(cands, ctx)
    tier = [c for c in cands if c.role == "owner" or (ctx.record_owner is not None and c.author == ctx.record_owner)]
    if tier:
        assert res.winner in tier
        assert res.winner == lww.resolve(tier).winner
        assert (res.reason == "owner_wins") == (len(tier) < len(cands))
    else:
        assert res.winner == lww.resolve(cands).winner and res.reason == lww.resolve(cands).reason
    assert res.candidates[:1] == ((res.winner,) if res.winner else ())
    rest = [(c.time, c.device, c.key) for c in res.candidates[1:]]
    assert rest == sorted(rest, reverse=True)


# --- union -----------------------------------------------------------------------------------

ITEM_IDS = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]
ITEM_FIELDS = ["name", "quantity", "unit"]


@st.composite
def union_items(draw) -> dict[str, dict[str, list[Candidate]]]:
    items: dict[str, dict[str, list[Candidate]]] = {}
    for item in draw(st.lists(st.sampled_from(ITEM_IDS), unique=True, max_size=2)):
        fields = {f: draw(candidate_lists(f"{item}/{f}", max_size=2)) for f in draw(
            st.lists(st.sampled_from(ITEM_FIELDS), unique=True, max_size=3))}
        live = sorted(c.key for cs in fields.values() for c in cs)
        # Removals saw some of the live writes, maybe all, plus keys that are gone by now.
        stale = f"{item}/name/{format_ts(BASE - 1, 0)}/dev-old"
        seen = st.lists(st.sampled_from([*live, stale]), unique=True).map(sorted)
        removals = draw(st.lists(candidate(f"{item}/_removed"), max_size=2, unique_by=lambda c: c.key))
        fields["_removed"] = [Candidate(r.key, draw(seen), r.author, r.role, r.device, r.time) for r in removals]
        items[item] = fields
    return items


@given(items=union_items())
def test_union_removes_only_when_one_removal_saw_every_live_write(items) -> None:
    out = union.resolve_items(items)
    assert set(out) == set(items)
    for item_id, fields in items.items():
        live = {c.key for f, cs in fields.items() if f != "_removed" for c in cs}
        seen_sets = [set(r.value) for r in fields["_removed"]]
        r = out[item_id]
        assert r.removed == any(s >= live for s in seen_sets)
        if not seen_sets:
            assert (r.reason, r.removal) == ("present", None)
        else:
            assert r.reason == ("removed" if r.removed else "kept_concurrent_edit")
            assert r.removal is not None and len(r.removal.candidates) == len(seen_sets)


@given(items=union_items())
def test_union_never_loses_an_item_with_a_write_no_removal_saw(items) -> None:
    out = union.resolve_items(items)
    for item_id, fields in items.items():
        live = {c.key for f, cs in fields.items() if f != "_removed" for c in cs}
        seen = set().union(*(set(r.value) for r in fields["_removed"]))
        if live - seen:
            assert not out[item_id].removed


@given(data=st.data(), items=union_items())
def test_union_ignores_input_order(data, items) -> None:
    shuffled = {}
    for i in data.draw(st.permutations(list(items))):
        shuffled[i] = {f: data.draw(st.permutations(items[i][f])) for f in data.draw(st.permutations(list(items[i])))}
    assert union.resolve_items(shuffled) == union.resolve_items(items)


# --- append ----------------------------------------------------------------------------------

@given(data=st.data(), entries=candidate_lists("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", max_size=8))
def test_append_keeps_everything_in_one_order(data, entries: list[Candidate]) -> None:
    ordered = append.order(entries)
    assert append.order(data.draw(st.permutations(entries))) == ordered
    assert sorted(c.key for c in ordered) == sorted(c.key for c in entries)
    keys = [(c.time, c.device, c.key) for c in ordered]
    assert keys == sorted(keys)


# --- explanations ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIELD_RULES)
@given(cands=candidate_lists(), ctx=contexts)
def test_explanations_are_json_and_name_one_winner(name: str, cands: list[Candidate], ctx: RuleContext) -> None:
    res = registry.get_rule(name)(cands, ctx)
    out = json.loads(json.dumps(explain_resolution("job:x", "status", res, ctx=ctx)))
    assert sum(c["winner"] for c in out["candidates"]) == (1 if cands else 0)
    assert out["reason_text"] == registry.REASONS[res.reason]
    assert out["concurrent"] == (len(cands) > 1)


@given(items=union_items())
def test_item_explanations_are_json(items) -> None:
    for item in union.resolve_items(items).values():
        out = json.loads(json.dumps(explain_item("job:x", item)))
        assert out["removed"] == item.removed
        assert any(c["covers"] for c in out["candidates"]) == item.removed
