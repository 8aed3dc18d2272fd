"""An in-process transport: a replica talking straight to an engine (tests, benchmarks, CLI)."""

from __future__ import annotations

from .engine import SyncEngine
from .protocol import Principal, PullResult, PushAck

__all__ = ["LocalTransport"]


class LocalTransport:
    """Implements ``syncd.protocol.SyncTransport`` for one authenticated principal."""

    def __init__(self, engine: SyncEngine, principal: Principal) -> None:
        self.engine = engine
        self.principal = principal

    async def push(self, doc_id: str, update: bytes) -> PushAck:
        return await self.engine.push(self.principal, doc_id, update)

    async def pull(self, doc_id: str, state_vector: bytes, since_seq: int | None) -> PullResult:
        return await self.engine.pull(self.principal, doc_id, state_vector, since_seq)

    async def list_docs(self) -> list[str]:
        return await self.engine.list_docs(self.principal)
