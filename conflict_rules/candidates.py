"""The values the rules arbitrate between."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "Resolution", "RuleContext"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One live (not superseded) write of a field.

    Every write deletes the writes its author had seen for that field, so the live writes
    of a field after a merge are exactly the concurrent ones.
    """

    key: str  # the write's key in the document (unique)
    value: Any
    author: str  # user id, verified by the server at acceptance
    role: str  # the author's role when the write was accepted
    device: str  # device id
    time: str  # hybrid-logical-clock timestamp (conflict_rules.hlc)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "author": self.author,
            "role": self.role,
            "device": self.device,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Candidate":
        return cls(d["key"], d.get("value"), d["author"], d["role"], d["device"], d["time"])


@dataclass(frozen=True, slots=True)
class RuleContext:
    """Facts from the merged document a rule may depend on (rules stay pure)."""

    record_owner: str | None = None  # a job's resolved owner_id (owner_wins)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of one rule over one field's candidates."""

    rule: str
    winner: Candidate | None
    candidates: tuple[Candidate, ...] = field(default=())
    reason: str = ""

    @property
    def value(self) -> Any:
        return None if self.winner is None else self.winner.value

    @property
    def concurrent(self) -> bool:
        return len(self.candidates) > 1

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "value": self.value,
            "winner": None if self.winner is None else self.winner.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "reason": self.reason,
        }
