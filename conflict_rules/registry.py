"""Which rule resolves which field: the one place it is declared.

Rules are registered by name with ``register_rule``; the built-in rules go through that same
door at import time (bottom of this module), exactly as a new rule would. A rule has a
*shape*, the kind of input it arbitrates:

- ``"field"``: ``resolver(candidates, ctx) -> Resolution`` (lww, owner_wins);
- ``"items"``: ``resolver(items, ctx, *, field_rule=None) -> dict[str, ItemResolution]``
  (union; ``field_rule(field, candidates, ctx)`` resolves each item field);
- ``"entries"``: ``resolver(entries) -> list[Candidate]`` (append).

``FIELD_RULES`` maps (record kind, field) to a rule name. Kind ``"material"`` holds the
fields of a job's material items (resolved inside ``union``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from conflict_rules import append, lww, owner_wins, union
from conflict_rules.candidates import Candidate, Resolution, RuleContext

__all__ = [
    "SHAPES",
    "FIELD_RULES",
    "REASONS",
    "RegisteredRule",
    "register_rule",
    "unregister_rule",
    "get_rule",
    "rule_names",
    "rule_for",
    "resolve_field",
    "reason_text",
]

SHAPES = ("field", "items", "entries")

FIELD_RULES: dict[tuple[str, str], str] = {
    **{("customer", f): "lww" for f in ("name", "phone", "email", "address", "notes", "deleted")},
    **{
        ("job", f): "lww"
        for f in (
            "customer_id", "title", "description", "address", "scheduled_start",
            "scheduled_end", "owner_id", "crew", "estimate", "deleted",
        )
    },
    ("job", "status"): "owner_wins",
    ("job", "materials"): "union",
    ("job", "notes"): "append",
    **{("material", f): "lww" for f in ("name", "quantity", "unit", "purchased", "cost")},
}

#: Reason code -> human sentence, for every code a registered rule can produce.
REASONS: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class RegisteredRule:
    """A named rule; calling it calls its resolver."""

    name: str
    resolver: Callable[..., Any]
    shape: str = "field"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolver(*args, **kwargs)


_RULES: dict[str, RegisteredRule] = {}


def register_rule(
    name: str,
    resolver: Callable[..., Any],
    *,
    shape: str = "field",
    reasons: Mapping[str, str] | None = None,
) -> RegisteredRule:
    """Register a rule under ``name``; ValueError if the name or a reason code clashes.

    ``reasons`` declares the reason codes the rule may emit, with their human sentences.
    """
    if not name or not isinstance(name, str):
        raise ValueError("a rule needs a non-empty name")
    if name in _RULES:
        raise ValueError(f"rule {name!r} is already registered")
    if shape not in SHAPES:
        raise ValueError(f"unknown rule shape {shape!r}; expected one of {SHAPES}")
    if not callable(resolver):
        raise ValueError(f"resolver of rule {name!r} is not callable")
    for code, text in (reasons or {}).items():
        # Codes are shared across rules (lww's codes are used by owner_wins and union), so
        # re-declaring one is fine as long as it means the same thing.
        if REASONS.get(code, text) != text:
            raise ValueError(f"reason code {code!r} is already declared with another meaning")
    REASONS.update(reasons or {})
    rule = RegisteredRule(name, resolver, shape)
    _RULES[name] = rule
    return rule


def unregister_rule(name: str) -> None:
    """Remove a rule no field uses (for extensions that unload); KeyError/ValueError otherwise."""
    if name not in _RULES:
        raise KeyError(f"unknown conflict rule {name!r}")
    users = sorted(f"{k}.{f}" for (k, f), r in FIELD_RULES.items() if r == name)
    if users:
        raise ValueError(f"rule {name!r} is still used by {', '.join(users)}")
    del _RULES[name]


def get_rule(name: str) -> RegisteredRule:
    """The rule registered under ``name``; KeyError if there is none."""
    try:
        return _RULES[name]
    except KeyError:
        raise KeyError(f"unknown conflict rule {name!r}; registered: {', '.join(sorted(_RULES))}") from None


def rule_names() -> list[str]:
    """Names of all registered rules, sorted."""
    return sorted(_RULES)


def rule_for(kind: str, field: str) -> str:
    """The rule name declared for ``kind.field``; KeyError if the field is not declared."""
    try:
        return FIELD_RULES[(kind, field)]
    except KeyError:
        raise KeyError(f"no conflict rule declared for field {kind}.{field}") from None


def resolve_field(
    kind: str, field: str, candidates: Sequence[Candidate], ctx: RuleContext = RuleContext()
) -> Resolution:
    """Resolve one scalar field with its declared rule.

    KeyError for an undeclared field; TypeError if the field's rule is not field-shaped
    (``job.materials`` and ``job.notes`` go through ``union``/``append``).
    """
    rule = get_rule(rule_for(kind, field))
    if rule.shape != "field":
        raise TypeError(f"{kind}.{field} uses the {rule.shape}-shaped rule {rule.name!r}, not a field rule")
    return rule.resolver(candidates, ctx)


def reason_text(code: str) -> str:
    """The human sentence for a reason code (the code itself if no rule declared it)."""
    return REASONS.get(code, code)


def _register_builtins() -> None:
    register_rule(lww.NAME, lww.resolve, reasons=lww.REASONS)
    register_rule(owner_wins.NAME, owner_wins.resolve, reasons={**lww.REASONS, **owner_wins.REASONS})
    register_rule(union.NAME, union.resolve_items, shape="items", reasons={**lww.REASONS, **union.REASONS})
    register_rule(append.NAME, append.order, shape="entries", reasons=append.REASONS)
    missing = sorted(set(FIELD_RULES.values()) - set(_RULES))
    if missing:
        raise RuntimeError(f"FIELD_RULES names unregistered rules: {missing}")


_register_builtins()
