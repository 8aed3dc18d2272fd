"""The server's in-memory copy of one document.

Built from the snapshot and the log entries after it, applied in log order: every entry was
integrable into the document made of the entries before it when it was accepted, so this
order never hits pycrdt's out-of-order loss (and costs O(history), where one
``merge_updates`` of a long log is quadratic). ``apply_observed`` applies one update while
recording exactly which writes it added or deleted, keeps an index of the live writes in
sync with the document (so a commit re-resolves only the fields that changed, without
walking pycrdt maps), and checks the state vector covers the update.
"""

from __future__ import annotations

from typing import Any, Iterable

from pycrdt import Doc, Map

from conflict_rules.candidates import Candidate
from schema.documents import KIND_JOB, ROOTS, RawCustomerDoc, RawJobDoc, RawRecord, parse_doc_id, parse_entry, parse_key
from schema.view import DocView, refresh_view, resolve_raw

from .update_scan import decode_state_vector
from .validation import Change

__all__ = ["LiveDoc", "EMPTY_UPDATE", "IncompleteApply"]

EMPTY_UPDATE = b"\x00\x00"


def _change(root: str, key: str, ch: dict[str, Any]) -> Change:
    """A raw map event entry as a Change, its key parsed once (None if malformed)."""
    try:
        wk = parse_key(root, key)
    except ValueError:
        wk = None
    return Change(root, key, ch["action"], ch.get("newValue"), wk)


class IncompleteApply(RuntimeError):
    """The document's state vector does not cover an update just applied (content pending)."""


class LiveDoc:
    """A document, its committed log position, its committed view and its live writes."""

    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id
        self.kind, self.record_id = parse_doc_id(doc_id)
        self.doc = Doc()
        self.last_seq = 0
        self.horizon = 0  # entries <= horizon are folded into the snapshot
        self.view: DocView | None = None
        self.digests: dict[bytes, int] = {}
        self.sv: dict[int, int] = {}
        # live writes: record field -> key -> Candidate; material -> field -> key -> Candidate; notes
        self._rec: dict[str, dict[str, Candidate]] = {}
        self._mat: dict[str, dict[str, dict[str, Candidate]]] = {}
        self._notes: dict[str, Candidate] = {}
        self._touched_fields: set[str] = set()
        self._touched_items: set[str] = set()
        self._touched_notes = False
        self._changes: list[Change] | None = None
        self._subs: list[Any] = []
        self._attach()

    def _attach(self) -> None:
        # pycrdt's own ``Map.observe`` wraps every event in Python objects (the target map, its
        # path, a read transaction) before the callback runs; that wrapping cost more than the
        # apply itself. The integrated map's observer hands over the raw event, of which only
        # ``keys`` is read, inside the transaction. pycrdt's wrapper also collected callback
        # exceptions and raised them after the transaction; ``_make_observer`` does the same
        # (``apply_observed`` raises them), so an indexing error can never pass unnoticed.
        self._observer_errors: list[BaseException] = []
        self._subs = [self.doc.get(r, type=Map).integrated.observe(self._make_observer(r))
                      for r in ROOTS[self.kind]]

    def adopt(self, fresh: "LiveDoc") -> None:
        """Take over a freshly built copy (after a refusal) while keeping this object."""
        self.doc = fresh.doc
        self.last_seq, self.horizon = fresh.last_seq, fresh.horizon
        self.view, self.digests, self.sv = fresh.view, fresh.digests, fresh.sv
        self._rec, self._mat, self._notes = fresh._rec, fresh._mat, fresh._notes
        self._touched_fields, self._touched_items = fresh._touched_fields, fresh._touched_items
        self._touched_notes = fresh._touched_notes
        self._attach()

    def _make_observer(self, root: str):
        errors = self._observer_errors

        def observe(event: Any) -> None:
            try:
                changes = [_change(root, key, ch) for key, ch in event.keys.items()]
                self._index(changes)
                if self._changes is not None:
                    self._changes.extend(changes)
            except BaseException as e:  # raised by apply_observed / _apply once the apply returns
                errors.append(e)
        return observe

    def _apply(self, update: bytes) -> None:
        """``doc.apply_update`` that raises what an observer raised (as pycrdt's wrapper did)."""
        self.doc.apply_update(update)
        if self._observer_errors:
            errs = tuple(self._observer_errors)
            self._observer_errors.clear()
            if len(errs) == 1:
                raise errs[0]
            raise ExceptionGroup("observer callback errors", errs)

    def _index(self, changes: Iterable[Change]) -> None:
        for ch in changes:
            wk = ch.wk
            if wk is None:
                continue  # never accepted by the server; a reader skips it like read_raw does
            if ch.root == "fields":
                group = self._rec.setdefault(wk.field, {})  # type: ignore[arg-type]
                self._touched_fields.add(wk.field)  # type: ignore[arg-type]
            elif ch.root == "materials":
                group = self._mat.setdefault(wk.item, {}).setdefault(wk.field, {})  # type: ignore[arg-type]
                self._touched_items.add(wk.item)  # type: ignore[arg-type]
            else:
                self._touched_notes = True
                if ch.action == "delete":
                    self._notes.pop(wk.item, None)  # type: ignore[arg-type]
                else:
                    c = self._candidate(wk, ch)
                    if c is not None:
                        self._notes[wk.item] = c  # type: ignore[index]
                continue
            if ch.action == "delete":
                group.pop(ch.key, None)
            else:
                c = self._candidate(wk, ch)
                if c is None:
                    group.pop(ch.key, None)
                else:
                    group[ch.key] = c

    @staticmethod
    def _candidate(wk: Any, ch: Change) -> Candidate | None:
        try:
            v, a, r = parse_entry(ch.new_value)
        except ValueError:
            return None
        return Candidate(key=ch.key, value=v, author=a, role=r, device=wk.device, time=wk.ts)

    @classmethod
    def build(cls, doc_id: str, snapshot: bytes | None, updates: list[bytes]) -> "LiveDoc":
        """A document from its snapshot and the log entries after it, in log order."""
        live = cls(doc_id)
        parts = ([snapshot] if snapshot else []) + updates
        want: dict[int, int] = {}
        for u in parts:
            live._apply(u)
        if parts:  # a sanity check on the newest entry (each was integrable when accepted)
            from pycrdt import get_state
            want = decode_state_vector(get_state(parts[-1]))
        live.sv = decode_state_vector(live.doc.get_state())
        short = {c: k for c, k in want.items() if live.sv.get(c, 0) < k}
        if short:
            raise IncompleteApply(f"{doc_id}: the log does not integrate (clients {sorted(short)})")
        live.view = live.full_view() if parts else None
        live.clear_touched()
        return live

    def state_vector(self) -> dict[int, int]:
        return self.sv

    def apply_observed(self, update: bytes, expect: dict[int, int] | None = None) -> list[Change]:
        """Apply an update and return the writes it changed.

        ``expect`` (client -> end clock, from the scan) is what the state vector must cover
        afterwards; IncompleteApply if it does not.
        """
        self._changes = []
        try:
            self._apply(update)
            changes = self._changes
        finally:
            self._changes = None
        if expect is None:  # no scan: check against the document's real state vector now
            from pycrdt import get_state
            self.sv = decode_state_vector(self.doc.get_state())
            short = {c: k for c, k in decode_state_vector(get_state(update)).items() if self.sv.get(c, 0) < k}
            if short:
                raise IncompleteApply(f"{self.doc_id}: state vector short after apply for clients {sorted(short)}")
        else:  # the scan proved the update integrable; ``verify_state_vector`` confirms per batch
            for c, end in expect.items():
                if self.sv.get(c, 0) < end:
                    self.sv[c] = end
        return changes

    def verify_state_vector(self) -> None:
        """Check the tracked state vector against the document's real one (IncompleteApply)."""
        real = decode_state_vector(self.doc.get_state())
        if real != self.sv:
            short = sorted(c for c, k in self.sv.items() if real.get(c, 0) < k)
            self.sv = real
            raise IncompleteApply(f"{self.doc_id}: content did not integrate for clients {short}")

    # --- views ----------------------------------------------------------------------------
    def _record_raw(self) -> RawRecord:
        return RawRecord(fields={f: list(d.values()) for f, d in self._rec.items() if d})

    def _material_raw(self, mid: str) -> RawRecord:
        return RawRecord(fields={f: list(d.values()) for f, d in self._mat.get(mid, {}).items() if d})

    def raw(self) -> RawJobDoc | RawCustomerDoc:
        if self.kind == KIND_JOB:
            mats = {mid: self._material_raw(mid) for mid in self._mat}
            return RawJobDoc(record=self._record_raw(), materials={m: r for m, r in mats.items() if r.fields},
                             notes=dict(self._notes))
        return RawCustomerDoc(record=self._record_raw())

    def full_view(self) -> DocView:
        return resolve_raw(self.raw(), self.kind)

    def resolve(self) -> DocView:
        """The view of the current content: incremental from the committed view."""
        if self.view is None:
            return self.full_view()
        need = self._touched_fields | {"owner_id", "status"}
        record = RawRecord(fields={f: list(self._rec[f].values()) for f in need if self._rec.get(f)})
        return refresh_view(self.view, self.kind, record, set(self._touched_fields),
                            {mid: self._material_raw(mid) for mid in self._touched_items},
                            dict(self._notes) if self._touched_notes else None)

    def touched(self) -> tuple[set[str], bool]:
        """(material ids, notes changed?) since the last commit: what the projection may need."""
        return set(self._touched_items), self._touched_notes

    def clear_touched(self) -> None:
        self._touched_fields, self._touched_items, self._touched_notes = set(), set(), False

    def encode_state(self) -> bytes:
        return self.doc.get_update()

    def diff(self, state_vector: bytes | None) -> bytes:
        return self.doc.get_update(state_vector) if state_vector else self.doc.get_update()

    def to_json(self) -> dict[str, Any]:
        return {r: self.doc.get(r, type=Map).to_py() for r in ROOTS[self.kind]}
