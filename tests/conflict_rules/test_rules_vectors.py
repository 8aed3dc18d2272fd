"""Run the golden vectors (shared with the TypeScript port) and check they are well formed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

import conflict_rules
from conflict_rules import registry, union
from conflict_rules.candidates import Candidate, RuleContext
from schema.documents import REMOVED, parse_key

VECTOR_DIR = Path(conflict_rules.__file__).parent / "vectors"
FILES = sorted(VECTOR_DIR.glob("*.json"))
ROOT_OF_SHAPE = {"field": "fields", "items": "materials", "entries": "notes"}
INPUT_OF_SHAPE = {"field": "candidates", "items": "items", "entries": "entries"}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _vectors() -> Iterator[Any]:
    for path in FILES:
        data = _load(path)
        for v in data["vectors"]:
            yield pytest.param(data["rule"], v, id=f"{path.stem}:{v['name']}")


def _orders(xs: list[Any]) -> Iterator[list[Any]]:
    # Every order for small inputs; for larger ones every rotation plus its reverse.
    if len(xs) <= 5:
        yield from (list(p) for p in itertools.permutations(xs))
    else:
        for i in range(len(xs)):
            rot = xs[i:] + xs[:i]
            yield rot
            yield rot[::-1]


def _items(raw: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, list[Candidate]]]:
    return {i: {f: [Candidate.from_json(c) for c in cs] for f, cs in fs.items()} for i, fs in raw.items()}


def _item_variants(items: dict[str, dict[str, list[Candidate]]]) -> Iterator[dict[str, dict[str, list[Candidate]]]]:
    for rev_items in (False, True):
        for rev_lists in (False, True):
            ids = sorted(items, reverse=rev_items)
            yield {
                i: {f: (cs[::-1] if rev_lists else list(cs)) for f, cs in sorted(items[i].items(), reverse=rev_items)}
                for i in ids
            }


@pytest.mark.parametrize("file_rule, vector", list(_vectors()))
def test_vector(file_rule: str, vector: dict[str, Any]) -> None:
    name = vector.get("rule", file_rule)
    rule = registry.get_rule(name)
    ctx = RuleContext(record_owner=vector["context"]["record_owner"])
    expected = vector["expected"]
    if rule.shape == "field":
        cands = [Candidate.from_json(c) for c in vector["candidates"]]
        for order in _orders(cands):
            res = rule(order, ctx)
            got = {"value": res.value, "winner_key": res.winner and res.winner.key, "reason": res.reason}
            assert got == expected, [c.key for c in order]
            assert res.rule == name
            assert sorted(c.key for c in res.candidates) == sorted(c.key for c in cands)
            if res.winner is not None:
                assert res.candidates[0] == res.winner
    elif rule.shape == "items":
        for variant in _item_variants(_items(vector["items"])):
            out = rule(variant, ctx)
            got = {i: {"removed": r.removed, "reason": r.reason, "fields": r.values} for i, r in out.items()}
            assert got == expected
            assert list(out) == sorted(out)
    else:
        entries = [Candidate.from_json(c) for c in vector["entries"]]
        for order in _orders(entries):
            assert [c.key for c in rule(order)] == expected


# --- the vectors themselves ------------------------------------------------------------------

REQUIRED_CASES = {
    "owner_on_hold_vs_offline_crew_in_progress__owner_first": "owner_wins",
    "owner_on_hold_vs_offline_crew_in_progress__crew_first": "owner_wins",
    "crew_in_progress_after_seeing_on_hold": "owner_wins",
    "two_crews_add_drywall_screws": "union",
    "day_fast_clock_superseded_by_later_write_that_saw_it": "lww",
    "fast_clock_within_skew_bound_wins_only_concurrent_lww": "lww",
    "role_owner_beats_newer_office_write": "owner_wins",
    "identical_time_broken_by_device_id": "lww",
    "edit_vs_concurrent_remove_keeps_item": "union",
    "remove_that_saw_everything_removes_item": "union",
}


def test_vector_files_exist_for_every_builtin_rule() -> None:
    assert {p.stem for p in FILES} >= {"lww", "owner_wins", "union", "append", "cases"}


def test_cases_cover_the_brief() -> None:
    cases = {v["name"]: v.get("rule") for v in _load(VECTOR_DIR / "cases.json")["vectors"]}
    assert {n: cases.get(n) for n in REQUIRED_CASES} == REQUIRED_CASES
    skew = next(v for v in _load(VECTOR_DIR / "cases.json")["vectors"] if v["name"].startswith("day_fast"))
    assert "skew" in skew["description"] and len(skew["candidates"]) == 1


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_vector_file_is_well_formed(path: Path) -> None:
    data = _load(path)
    assert set(data) == {"rule", "description", "vectors"}
    names = [v["name"] for v in data["vectors"]]
    assert len(names) == len(set(names)), "vector names must be unique in a file"
    for v in data["vectors"]:
        shape = registry.get_rule(v.get("rule", data["rule"])).shape
        inputs = {"candidates", "items", "entries"} & set(v)
        assert inputs == {INPUT_OF_SHAPE[shape]}, v["name"]
        assert set(v) - inputs <= {"name", "rule", "description", "context", "expected"}
        assert v["description"] and set(v["context"]) == {"record_owner"}


def _walk(x: Any) -> Iterator[Any]:
    yield x
    if isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk(v)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_vectors_are_language_neutral(path: Path) -> None:
    for x in _walk(_load(path)):
        assert x is None or isinstance(x, (str, bool, int, list, dict)), repr(x)
        if isinstance(x, int) and not isinstance(x, bool):
            assert abs(x) < 2**53, "integers must be exact in JavaScript"
        if isinstance(x, str):
            assert x.isascii(), "keep vectors ASCII so ordinal order is the same everywhere"


def _candidates_with_place(v: dict[str, Any], shape: str) -> Iterator[tuple[dict, str | None, str | None]]:
    if shape == "items":
        for item, fields in v["items"].items():
            for f, cs in fields.items():
                for c in cs:
                    yield c, item, f
    else:
        for c in v[INPUT_OF_SHAPE[shape]]:
            yield c, None, None


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_vector_candidates_are_real_document_writes(path: Path) -> None:
    """Keys parse as schema.documents keys and agree with time, device, item and field."""
    data = _load(path)
    for v in data["vectors"]:
        shape = registry.get_rule(v.get("rule", data["rule"])).shape
        keys = []
        for c, item, f in _candidates_with_place(v, shape):
            assert set(c) == {"key", "value", "author", "role", "device", "time"}
            wk = parse_key(ROOT_OF_SHAPE[shape], c["key"])
            assert (wk.ts, wk.device) == (c["time"], c["device"]), c["key"]
            if shape == "items":
                assert (wk.item, wk.field) == (item, f), c["key"]
            keys.append(c["key"])
        assert len(keys) == len(set(keys)), f"{v['name']}: duplicate keys"


def test_removed_field_name_matches_documents() -> None:
    assert union.REMOVED == REMOVED
