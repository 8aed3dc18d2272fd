"""The device <-> engine sync contract, independent of any transport.

A device pushes the updates of its outbox one document at a time and pulls what it lacks.
Transports (in-process for tests and benchmarks, HTTP push/pull, WebSocket) are thin adapters
that carry these values; they all end in ``SyncEngine.push``/``pull``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Principal", "PushAck", "PullResult", "SyncTransport"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is writing, as authenticated by the server (never as claimed by the update)."""

    user_id: str
    role: str  # "owner" | "office" | "crew"
    device_id: str


@dataclass(frozen=True, slots=True)
class PushAck:
    doc_id: str
    seq: int  # log sequence number of the entry (the original one for a duplicate)
    duplicate: bool  # True when the update was already stored or changed nothing
    server_time: str  # server HLC reading, for the device clock


@dataclass(frozen=True, slots=True)
class PullResult:
    doc_id: str
    update: bytes  # apply to the device document (may be empty-ish: no new content)
    seq: int  # the device has everything up to here once it applied ``update``
    server_time: str


class SyncTransport(Protocol):
    """What a replica needs from the other side."""

    async def push(self, doc_id: str, update: bytes) -> PushAck: ...

    async def pull(self, doc_id: str, state_vector: bytes, since_seq: int | None) -> PullResult: ...

    async def list_docs(self) -> list[str]: ...
