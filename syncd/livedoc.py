"""The server's in-memory copy of one document.

Built by *merging* the snapshot and log entries first and applying the result once (never
applying one client's updates piecemeal out of order, which pycrdt 0.14 can get wrong).
``apply_observed`` applies one update while recording exactly which writes it added or
deleted, then checks the state vector covers the update.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map, MapEvent, get_state, merge_updates

from schema.documents import ROOTS, parse_doc_id
from schema.view import DocView, resolve_doc

from .update_scan import decode_state_vector
from .validation import Change

__all__ = ["LiveDoc", "EMPTY_UPDATE", "IncompleteApply"]

EMPTY_UPDATE = b"\x00\x00"


class IncompleteApply(RuntimeError):
    """The document's state vector does not cover an update just applied (content pending)."""


class LiveDoc:
    """A document, its committed log position and its projected (committed) view."""

    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id
        self.kind, self.record_id = parse_doc_id(doc_id)
        self.doc = Doc()
        self.last_seq = 0
        self.horizon = 0  # entries <= horizon are folded into the snapshot
        self.view: DocView | None = None
        self.digests: dict[bytes, int] = {}
        self._changes: list[Change] | None = None
        self._subs: list[Any] = []
        self._attach()

    def _attach(self) -> None:
        self._subs = [self.doc.get(r, type=Map).observe(self._make_observer(r)) for r in ROOTS[self.kind]]

    def adopt(self, fresh: "LiveDoc") -> None:
        """Take over a freshly built copy (after a refusal) while keeping this object."""
        self.doc = fresh.doc
        self.last_seq, self.horizon = fresh.last_seq, fresh.horizon
        self.view, self.digests = fresh.view, fresh.digests
        self._attach()

    def _make_observer(self, root: str):
        def observe(event: MapEvent) -> None:
            if self._changes is None:
                return
            for key, ch in event.keys.items():
                self._changes.append(Change(root, key, ch["action"], ch.get("newValue")))
        return observe

    @classmethod
    def build(cls, doc_id: str, snapshot: bytes | None, updates: list[bytes]) -> "LiveDoc":
        """A document from its snapshot and the log entries after it, merged then applied."""
        live = cls(doc_id)
        parts = ([snapshot] if snapshot else []) + updates
        if parts:
            merged = parts[0] if len(parts) == 1 else merge_updates(*parts)
            live.doc.apply_update(merged)
            live._check_covers(merged)
        live.view = resolve_doc(live.doc, live.kind) if parts else None
        return live

    def state_vector(self) -> dict[int, int]:
        return decode_state_vector(self.doc.get_state())

    def apply_observed(self, update: bytes) -> list[Change]:
        """Apply an update and return the writes it changed (raises IncompleteApply)."""
        self._changes = []
        try:
            self.doc.apply_update(update)
            changes = self._changes
        finally:
            self._changes = None
        self._check_covers(update)
        return changes

    def _check_covers(self, update: bytes) -> None:
        want = decode_state_vector(get_state(update))
        have = self.state_vector()
        short = {c: k for c, k in want.items() if have.get(c, 0) < k}
        if short:
            raise IncompleteApply(f"{self.doc_id}: state vector short after apply for clients {sorted(short)}")

    def resolve(self) -> DocView:
        return resolve_doc(self.doc, self.kind)

    def encode_state(self) -> bytes:
        return self.doc.get_update()

    def diff(self, state_vector: bytes | None) -> bytes:
        return self.doc.get_update(state_vector) if state_vector else self.doc.get_update()

    def to_json(self) -> dict[str, Any]:
        return {r: self.doc.get(r, type=Map).to_py() for r in ROOTS[self.kind]}
