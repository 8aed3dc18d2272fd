"""An in-process transport: a replica talking straight to an engine (tests, benchmarks, CLI).

Besides ``syncd.protocol.SyncTransport`` it offers the batch pulls ``replica.sync.pull``
prefers (``pull_many``, ``pull_listed``), both one ``SyncEngine.pull_many`` (acknowledgements
recorded in one transaction).
"""

from __future__ import annotations

from .engine import SyncEngine
from .errors import SyncError
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

    async def pull_many(self, requests: list[tuple[str, bytes | None, int | None]]) -> list[PullResult | SyncError]:
        """One answer per ``(doc_id, state_vector, since_seq)``, in order."""
        return await self.engine.pull_many(self.principal, requests)

    async def pull_listed(self, known: dict[str, tuple[bytes | None, int | None]]
                          ) -> tuple[list[str], list[PullResult | SyncError]]:
        """Every listed document, pulled with ``known``'s state vector and cursor where given."""
        listed = await self.list_docs()
        return listed, await self.pull_many([(d, *known.get(d, (None, None))) for d in listed])
