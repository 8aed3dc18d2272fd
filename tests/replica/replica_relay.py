"""Test scaffolding: a tiny in-memory relay implementing ``SyncTransport``.

One plain pycrdt Doc and one append-only log per doc_id. It refuses updates it cannot
integrate (``MissingDependencies`` with its state vector, like the engine), answers a pull
with the log tail since the cursor (the caller's own entries excluded) or with a
state-vector diff, and can be told to misbehave. It validates nothing else: the real engine
is tested elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from pycrdt import Doc, merge_updates

from conflict_rules.hlc import format_ts
from syncd.errors import MissingDependencies, SyncError, UnknownDocument, UpdateTooLarge
from syncd.protocol import PullResult, PushAck
from syncd.update_scan import decode_state_vector, missing_dependencies, scan_update

__all__ = ["Relay", "RelayTransport", "EMPTY"]

EMPTY = b"\x00\x00"


@dataclass
class Relay:
    """The shared 'server' of a test."""

    wall_ms: Callable[[], int] | None = None  # server clock; None = the real one
    max_update_bytes: int | None = None
    docs: dict[str, Doc] = field(default_factory=dict)
    logs: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # (device, update)
    digests: dict[tuple[str, bytes], int] = field(default_factory=dict)
    refuse: dict[str, SyncError] = field(default_factory=dict)  # doc_id -> error raised on push
    pushes: list[tuple[str, str, bytes]] = field(default_factory=list)  # (device, doc_id, update)
    pulls: list[tuple[str, str, int | None]] = field(default_factory=list)  # (device, doc_id, since)

    def transport(self, device_id: str = "", visible: Callable[[str], bool] | None = None) -> "RelayTransport":
        """A transport for one device; ``visible`` filters what ``list_docs`` shows it."""
        return RelayTransport(self, device_id, visible)

    def server_time(self) -> str:
        import time

        ms = self.wall_ms() if self.wall_ms else time.time_ns() // 1_000_000
        return format_ts(ms, 0)

    def accept(self, device: str, doc_id: str, update: bytes) -> PushAck:
        self.pushes.append((device, doc_id, update))
        if doc_id in self.refuse:
            raise self.refuse[doc_id]
        if self.max_update_bytes is not None and len(update) > self.max_update_bytes:
            raise UpdateTooLarge(f"{len(update)} bytes")
        digest = hashlib.sha256(update).digest()
        if (doc_id, digest) in self.digests:
            return PushAck(doc_id, self.digests[(doc_id, digest)], True, self.server_time())
        doc = self.docs.setdefault(doc_id, Doc())
        missing = missing_dependencies(scan_update(update), decode_state_vector(doc.get_state()))
        if missing:
            raise MissingDependencies("missing", {"missing": missing, "state_vector": doc.get_state().hex()})
        doc.apply_update(update)
        log = self.logs.setdefault(doc_id, [])
        log.append((device, update))
        self.digests[(doc_id, digest)] = len(log)
        return PushAck(doc_id, len(log), False, self.server_time())

    def answer(self, device: str, doc_id: str, state_vector: bytes, since_seq: int | None) -> PullResult:
        self.pulls.append((device, doc_id, since_seq))
        if doc_id not in self.docs:
            raise UnknownDocument(doc_id)
        log = self.logs.get(doc_id, [])
        if since_seq is not None and 0 <= since_seq <= len(log):
            tail = [u for d, u in log[since_seq:] if d != device]
            update = EMPTY if not tail else merge_updates(*tail)
        else:
            update = self.docs[doc_id].get_update(state_vector)
        return PullResult(doc_id, update, len(log), self.server_time())

    def lose_since(self, doc_id: str, seq: int) -> None:
        """Simulate a server restored from an old backup: keep the first ``seq`` entries."""
        log = self.logs[doc_id][:seq]
        self.logs[doc_id] = log
        self.docs[doc_id] = Doc()
        if log:
            self.docs[doc_id].apply_update(merge_updates(*(u for _, u in log)))
        self.digests = {k: v for k, v in self.digests.items() if k[0] != doc_id or v <= seq}


@dataclass
class RelayTransport:
    """``SyncTransport`` of one device against a Relay."""

    relay: Relay
    device_id: str = ""
    visible: Callable[[str], bool] | None = None

    async def push(self, doc_id: str, update: bytes) -> PushAck:
        return self.relay.accept(self.device_id, doc_id, update)

    async def pull(self, doc_id: str, state_vector: bytes, since_seq: int | None) -> PullResult:
        return self.relay.answer(self.device_id, doc_id, state_vector, since_seq)

    async def list_docs(self) -> list[str]:
        return [d for d in self.relay.docs if self.visible is None or self.visible(d)]
