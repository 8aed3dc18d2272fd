"""Last writer wins: the greatest (timestamp, device id) among concurrent writes.

Timestamps are fixed-width hybrid-logical-clock strings, so ordinal string comparison is
time order; device ids and keys are ASCII, so Python's ``<`` and JavaScript's ``<`` agree.
The write key breaks the (impossible in a real document) tie of equal time and device, so
the outcome is a total function of the candidate *set*, never of its order.

``Resolution.candidates`` lists every candidate, winner first, then the others by
(time, device, key) descending. For ``lww`` that is simply the descending order.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from conflict_rules.candidates import Candidate, Resolution, RuleContext

__all__ = [
    "NAME",
    "NO_CANDIDATES",
    "ONLY_CANDIDATE",
    "LATEST_TIMESTAMP",
    "DEVICE_TIEBREAK",
    "REASONS",
    "order_key",
    "ranked",
    "pick",
    "resolve",
]

NAME = "lww"

NO_CANDIDATES = "no_candidates"
ONLY_CANDIDATE = "only_candidate"
LATEST_TIMESTAMP = "latest_timestamp"
DEVICE_TIEBREAK = "device_tiebreak"

REASONS: dict[str, str] = {
    NO_CANDIDATES: "Nobody has written this field.",
    ONLY_CANDIDATE: "There is a single live write: nothing concurrent with it, and every "
                    "earlier write was seen and superseded by it.",
    LATEST_TIMESTAMP: "Among concurrent writes the winner has the latest timestamp.",
    DEVICE_TIEBREAK: "Concurrent writes share the latest timestamp; the greatest device id wins "
                     "(then the write key).",
}


def order_key(c: Candidate) -> tuple[str, str, str]:
    """The total order every rule uses: (time, device, key)."""
    return (c.time, c.device, c.key)


def _check_unique(cs: Sequence[Candidate]) -> None:
    # Keys are document keys, unique by construction; two different candidates with one key
    # would make the order depend on input order, so refuse them instead.
    if len({c.key for c in cs}) != len(cs):
        raise ValueError("candidates must have distinct keys")


def ranked(candidates: Iterable[Candidate], winner: Candidate | None = None) -> tuple[Candidate, ...]:
    """All candidates by (time, device, key) descending, with ``winner`` moved first."""
    ordered = sorted(candidates, key=order_key, reverse=True)
    if winner is not None and ordered and ordered[0] is not winner:
        ordered.remove(winner)
        ordered.insert(0, winner)
    return tuple(ordered)


def pick(candidates: Iterable[Candidate]) -> tuple[Candidate | None, str]:
    """The lww winner of ``candidates`` and the reason code explaining it."""
    ordered = ranked(candidates)
    _check_unique(ordered)
    if not ordered:
        return None, NO_CANDIDATES
    if len(ordered) == 1:
        return ordered[0], ONLY_CANDIDATE
    first, second = ordered[0], ordered[1]
    return first, LATEST_TIMESTAMP if first.time > second.time else DEVICE_TIEBREAK


def resolve(candidates: Sequence[Candidate], ctx: RuleContext = RuleContext()) -> Resolution:
    """Resolve one field's concurrent candidates: greatest (time, device, key) wins."""
    cs = list(candidates)
    winner, reason = pick(cs)
    return Resolution(rule=NAME, winner=winner, candidates=ranked(cs, winner), reason=reason)
