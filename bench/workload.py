"""Synthetic workloads shared by the raw (m_*) and engine (engine_*) measurements.

The job-document workload follows ``schema/documents.py``: root Map ``fields`` of writes keyed
``"{field}/{ts}/{device}"`` with value ``{"v": value, "a": author, "r": role}``; each edit
deletes the writes of that field the writer sees and inserts its own (``write_field``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Map

FIELDS = (
    "status", "title", "address", "scheduled_at", "price",
    "crew", "customer_id", "priority", "description", "estimate_hours",
)
ROLES = ("crew", "office", "owner")
BASE_MS = 1_700_000_000_000


def ts_of(i: int) -> str:
    """A valid hybrid-logical-clock string, increasing with ``i``."""
    return f"{BASE_MS + i // 8:013d}.{i % 8:05d}"


def field_value(rng: random.Random, name: str, i: int) -> Any:
    if name == "status":
        return rng.choice(("new", "scheduled", "in_progress", "done", "invoiced"))
    if name in ("price", "estimate_hours"):
        return round(rng.uniform(10, 50_000), 2)
    if name == "priority":
        return rng.randint(1, 5)
    if name == "crew":
        return [f"user{rng.randint(0, 30)}" for _ in range(rng.randint(1, 3))]
    if name == "scheduled_at":
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T08:00:00Z"
    return f"{name} {i} " + "x" * rng.randint(0, 40)


@dataclass
class Edit:
    job: int  # index of the job document
    client: int  # index of the editing client (device)
    update: bytes  # the Yjs v1 update of the edit's transaction


@dataclass
class JobWorkload:
    n_jobs: int
    n_clients: int
    job_ids: list[str]
    edits: list[Edit] = field(default_factory=list)  # in generation order (causally valid)

    def per_job(self) -> list[list[bytes]]:
        out: list[list[bytes]] = [[] for _ in range(self.n_jobs)]
        for e in self.edits:
            out[e.job].append(e.update)
        return out


class _Client:
    """One device's copy of one job document, capturing its local transactions."""

    __slots__ = ("doc", "fields", "captured", "remote", "_sub")

    def __init__(self) -> None:
        self.doc = Doc()
        self.fields = self.doc.get("fields", type=Map)
        self.captured: list[bytes] = []
        self.remote = False
        self._sub = self.doc.observe(self._on)

    def _on(self, ev: Any) -> None:
        if not self.remote:
            self.captured.append(ev.update)

    def pull(self, other: "_Client") -> None:
        self.remote = True
        try:
            self.doc.apply_update(other.doc.get_update(self.doc.get_state()))
        finally:
            self.remote = False


def job_edits(n_updates: int, *, n_clients: int = 4, n_jobs: int = 50, sync_prob: float = 0.5,
              seed: int = 1234) -> JobWorkload:
    """``n_updates`` edit updates (one ``write_field`` per transaction) from ``n_clients``
    devices over ``n_jobs`` job documents.

    Before an edit, with probability ``sync_prob`` the editing device first pulls the job
    from another random device, so later writes supersede other devices' writes (deletes of
    foreign items) and some writes stay concurrent (several live candidates per field).
    """
    from schema.documents import write_field

    rng = random.Random(seed)
    wl = JobWorkload(n_jobs, n_clients, [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_jobs)])
    clients = [[_Client() for _ in range(n_clients)] for _ in range(n_jobs)]
    for i in range(n_updates):
        j = rng.randrange(n_jobs)
        c = rng.randrange(n_clients)
        me = clients[j][c]
        if n_clients > 1 and rng.random() < sync_prob:
            other = rng.randrange(n_clients - 1)
            me.pull(clients[j][other if other < c else other + 1])
        name = rng.choice(FIELDS)
        before = len(me.captured)
        with me.doc.transaction():
            write_field(me.doc, name, field_value(rng, name, i), ts=ts_of(i), device=f"dev{c}",
                        author=f"user{c}", role=ROLES[c % len(ROLES)])
        assert len(me.captured) == before + 1
        wl.edits.append(Edit(j, c, me.captured[-1]))
    return wl


def big_history_doc(n_edits: int, n_fields: int, *, seed: int = 1234, keyed: bool = True) -> Doc:
    """One client's doc after ``n_edits`` sequential field writes spread over ``n_fields``
    fields, each in its own transaction.

    ``keyed=True``: our schema, equivalent to ``write_field`` for a single writer (which
    always sees exactly the previous write of the field): delete the previous write key,
    insert ``"{field}/{ts}/{device}"``. ``keyed=False``: the plain Yjs way, ``m[field] = value``
    overwriting one key per field (for comparison only)."""
    rng = random.Random(seed)
    doc = Doc()
    m = doc.get("fields", type=Map)
    current: dict[int, str] = {}
    for i in range(n_edits):
        f = i % n_fields if i < n_fields else rng.randrange(n_fields)
        value = {"v": f"value {i}", "a": "user0", "r": "crew"}
        with doc.transaction():
            if not keyed:
                m[f"f{f:03d}"] = value
                continue
            key = f"f{f:03d}/{ts_of(i)}/dev0"
            old = current.get(f)
            if old is not None:
                del m[old]
            m[key] = value
        current[f] = key
    return doc


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector into {client: clock} (its byte order is not canonical)."""
    pos = 0

    def uint() -> int:
        nonlocal pos
        out = shift = 0
        while True:
            b = sv[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out
            shift += 7

    return {uint(): uint() for _ in range(uint())}
