"""Field-level conflict rules: pure, deterministic functions over concurrent writes.

The same merged document must give the same view on every replica and on the server, so
everything here is a pure function of the candidate *set* (never of input order), free of
pycrdt and I/O. ``registry`` declares which rule resolves which field; ``explain`` turns an
outcome into JSON for ``syncd explain`` and the PWA. Golden vectors shared with the
TypeScript port live in ``conflict_rules/vectors/*.json``.
"""

from conflict_rules import append, lww, owner_wins, union
from conflict_rules.candidates import Candidate, Resolution, RuleContext
from conflict_rules.explain import explain_entries, explain_item, explain_resolution
from conflict_rules.registry import (
    FIELD_RULES,
    REASONS,
    RegisteredRule,
    get_rule,
    reason_text,
    register_rule,
    resolve_field,
    rule_for,
    rule_names,
    unregister_rule,
)
from conflict_rules.union import ItemResolution, resolve_items

__all__ = [
    "Candidate",
    "Resolution",
    "RuleContext",
    "ItemResolution",
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
    "resolve_items",
    "explain_resolution",
    "explain_item",
    "explain_entries",
    "lww",
    "owner_wins",
    "union",
    "append",
]
