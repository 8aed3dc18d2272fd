"""The replica's engine room: identity, documents in memory, the store, the clock.

Invariant: every document in memory is exactly the merge of its stored updates. A local edit
is committed to SQLite (with the clock) before the edit call returns; a remote update is
stored with the new cursor (and the clock) in one commit. When a write cannot be stored, or a
remote update does not integrate completely, the document is rebuilt from the store.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from pycrdt import Doc, Map, merge_updates

from conflict_rules.hlc import HLC, format_ts, parse_ts
from schema.documents import REMOVED, ROOTS, entry_value, make_key, parse_doc_id, parse_key
from syncd.update_scan import ScanError

from .clock import adjust_offset, clock_meta, load_clock, receive_max
from .crdt import LOCAL_ORIGIN, REMOTE_ORIGIN, captured_update, check_remote, new_doc, rebuild, unintegrated
from .errors import IntegrityError, NotIntegrable, ReplicaError, UnknownRecord
from .identity import Identity, new_client_id, new_device_id
from .store import OutboxRow, Store

__all__ = ["ReplicaCore", "COMPACT_AFTER", "Stamp"]

#: A document's acked updates are folded into one row once there are more than this many.
COMPACT_AFTER = 500

#: What a writer gets for the write keys it makes: ts, device, author, role.
Stamp = dict[str, str]
T = TypeVar("T")


def _one(updates: list[bytes]) -> bytes | None:
    return None if not updates else updates[0] if len(updates) == 1 else merge_updates(*updates)


class ReplicaCore:
    """Documents, store and clock of one device; the domain API lives in ``Replica``."""

    def __init__(self, store: Store, identity: Identity, hlc: HLC, docs: dict[str, Doc],
                 compact_after: int = COMPACT_AFTER) -> None:
        self._store = store
        self.identity = identity
        self.hlc = hlc
        self._docs = docs
        self.compact_after = compact_after

    @classmethod
    async def open(cls, path: str, *, user_id: str, role: str, device_id: str | None = None,
                   clock: Callable[[], int] | None = None, compact_after: int = COMPACT_AFTER):
        """Open (or create) the replica stored at ``path``.

        The device id and Yjs client id are created on first open and fixed afterwards
        (``device_id`` may name the device on first open; a different one later is an error).
        ``user_id`` and ``role`` are those of the signed-in user. ``clock`` (ms since epoch)
        replaces the wall clock, for tests.
        """
        store = await Store.open(path)
        try:
            meta = await store.meta()
            stored_device = meta.get("device_id")
            if stored_device and device_id and device_id != stored_device:
                raise ValueError(f"this store belongs to device {stored_device!r}, not {device_id!r}")
            identity = Identity(
                device_id=stored_device or device_id or new_device_id(),
                client_id=int(meta["client_id"]) if "client_id" in meta else new_client_id(),
                user_id=user_id,
                role=role,
            )
            hlc = load_clock(meta, clock)
            await store.set_meta(device_id=identity.device_id, client_id=identity.client_id,
                                 user_id=user_id, role=role, **clock_meta(hlc))
            docs = {d: rebuild(identity.client_id, ups) for d, ups in (await store.updates_by_doc()).items()}
        except BaseException:
            await store.close()
            raise
        return cls(store, identity, hlc, docs, compact_after)

    async def close(self) -> None:
        """Close the store. Everything acknowledged to the caller is already durable."""
        await self._store.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- identity ---------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        """This device's id (random, fixed per install)."""
        return self.identity.device_id

    @property
    def client_id(self) -> int:
        """The Yjs client id every document of this install writes as."""
        return self.identity.client_id

    @property
    def user_id(self) -> str:
        """The signed-in user's id (author of every local write)."""
        return self.identity.user_id

    @property
    def role(self) -> str:
        """The signed-in user's role: owner, office or crew."""
        return self.identity.role

    # --- documents ------------------------------------------------------------------------

    def doc(self, doc_id: str) -> Doc:
        """The live pycrdt document (read it; write through the domain API only)."""
        try:
            return self._docs[doc_id]
        except KeyError:
            raise UnknownRecord(f"document {doc_id} is not on this device") from None

    def has_doc(self, doc_id: str) -> bool:
        """Whether the document is on this device."""
        return doc_id in self._docs

    def doc_ids(self) -> list[str]:
        """Ids of the documents on this device, sorted."""
        return sorted(self._docs)

    async def pending(self, doc_id: str | None = None) -> list[OutboxRow]:
        """The outbox: ``(update_id, doc_id, update)`` not yet acknowledged, oldest first."""
        return await self._store.pending(doc_id)

    async def cursor(self, doc_id: str) -> int | None:
        """The server log sequence number this device has pulled a document up to."""
        return await self._store.cursor(doc_id)

    async def cursors(self, doc_ids: list[str] | None = None) -> dict[str, int]:
        """The cursors of several documents (every document when None), in one read."""
        return await self._store.cursors(doc_ids)

    async def _reload(self, doc_id: str) -> None:
        """Make the in-memory document the merge of its stored updates again."""
        ups = await self._store.doc_updates(doc_id)
        if ups:
            self._docs[doc_id] = rebuild(self.client_id, ups)
        else:
            self._docs.pop(doc_id, None)

    # --- local edits ------------------------------------------------------------------------

    async def _edit(self, doc_id: str, write: Callable[[Doc, Stamp], T], *, create: bool = False) -> T:
        """Run ``write(doc, stamp)`` in one local transaction and store its update durably.

        ``stamp`` carries one fresh HLC timestamp for the whole transaction. The update and the
        clock are committed together before this returns; if that fails the document is
        rebuilt from the store and the error propagates.
        """
        parse_doc_id(doc_id)
        doc = self._docs.get(doc_id)
        if doc is None:
            if not create:
                raise UnknownRecord(f"document {doc_id} is not on this device")
            doc = new_doc(self.client_id)
        stamp = {"ts": self.hlc.now(), "device": self.device_id, "author": self.user_id, "role": self.role}
        self._docs[doc_id] = doc
        try:
            with captured_update(doc) as ups, doc.transaction(origin=LOCAL_ORIGIN):
                result = write(doc, stamp)
        except BaseException:
            await self._reload(doc_id)
            raise
        try:
            # Awaited directly (not in a task): the store's lock then keeps commits in edit order.
            await self._store.append_local(doc_id, _one(ups), clock_meta(self.hlc))
        except BaseException:
            await self._reload(doc_id)  # queued after the failed commit: sees its real outcome
            raise
        return result

    # --- remote updates --------------------------------------------------------------------

    async def _apply_remote(self, doc_id: str, update: bytes, seq: int | None, server_time: str | None) -> bool:
        """Apply a received update if it integrates completely; store it with the cursor.

        Raises ``NotIntegrable`` (nothing applied) when the update depends on content this
        device lacks, ``IntegrityError`` (document rebuilt, nothing stored) when content
        stayed pending after the apply. Returns True if the document changed.
        """
        changed, data = await self._integrate(doc_id, update, server_time)
        await self._store.append_remote(doc_id, data, seq, clock_meta(self.hlc))
        await self._store.compact(doc_id, self.compact_after)
        return changed

    async def _integrate(self, doc_id: str, update: bytes, server_time: str | None) -> tuple[bool, bytes | None]:
        """The in-memory half of :meth:`_apply_remote`: (changed, the update to store)."""
        parse_doc_id(doc_id)
        known = self._docs.get(doc_id)
        doc = known if known is not None else new_doc(self.client_id)
        check = check_remote(doc, update)
        if check.missing:
            raise NotIntegrable(doc_id, check.missing)
        try:
            with captured_update(doc) as ups, doc.transaction(origin=REMOTE_ORIGIN):
                doc.apply_update(update)
            short = unintegrated(doc, update, check.scan)
        except BaseException:
            await self._reload(doc_id)
            raise
        if short:
            await self._reload(doc_id)
            raise IntegrityError(f"{doc_id}: the update was applied but content of client(s) {short} "
                                 "stayed pending (the state vector does not cover it); nothing was stored")
        if ups or known is not None:
            self._docs[doc_id] = doc
        receive_max(self.hlc, check.write_times)
        if server_time is not None:
            adjust_offset(self.hlc, server_time)
        return bool(ups), _one(ups)

    async def _apply_remote_many(self, answers: list[tuple[str, bytes, int | None, str | None]]
                                 ) -> list[bool | Exception]:
        """:meth:`_apply_remote` for several documents' answers, stored in **one** commit (a
        device pulling many documents makes one fsync, not one per document).

        Per answer: True/False (changed) or the exception that document raised
        (``NotIntegrable``, ``IntegrityError``, ``ScanError``, ``ValueError``...; nothing of it
        applied or stored). If the commit fails, every document of the batch is rebuilt from
        the store and the error propagates. A document answered twice is committed in between.
        """
        out: list[bool | Exception] = []
        rows: dict[str, tuple[list[bytes], int | None]] = {}

        async def flush() -> None:
            if not rows:
                return
            batch = [(d, _one(ups), seq) for d, (ups, seq) in rows.items()]
            try:
                await self._store.append_remote_many(batch, clock_meta(self.hlc))
            except BaseException:
                for d in rows:
                    await self._reload(d)
                raise
            finally:
                done = list(rows)
                rows.clear()
            await self._store.compact_many(done, self.compact_after)

        for doc_id, update, seq, server_time in answers:
            if doc_id in rows:
                await flush()
            try:
                changed, data = await self._integrate(doc_id, update, server_time)
            except (ReplicaError, ScanError, ValueError) as e:
                out.append(e)
                continue
            rows[doc_id] = ([data] if data is not None else [], seq)
            out.append(changed)
        await flush()
        return out

    async def _restamp(self, doc_id: str, server_ms: int) -> int:
        """The server refused this document's writes as stamped too far ahead of its clock
        (``CLOCK_SKEW``: this device's clock ran fast, say while it worked offline). Keep the
        edits; fix their times.

        The clock moves to the server's time (``server_ms``: its wall clock when it refused).
        Then every visible write of this device stamped after that time is written again in
        one local edit, with a fresh stamp: same record, item, field and value, the old key
        deleted. The document's outbox (the refused updates and this one, merged for the
        push) then inserts and deletes the old keys in one update, so the server never sees
        them, and writes the same values at times it accepts. Returns how many writes were
        re-stamped (0: nothing of this device is ahead of the server; the refusal was about
        something else).
        """
        kind, _ = parse_doc_id(doc_id)
        adjust_offset(self.hlc, format_ts(server_ms, 0))
        if parse_ts(self.hlc.last).wall_ms > server_ms:
            self.hlc.restart_at(server_ms)

        def ahead(root: str, key: str) -> tuple[Any, ...] | None:
            try:
                wk = parse_key(root, key)
            except ValueError:
                return None
            if wk.device != self.device_id or parse_ts(wk.ts).wall_ms <= server_ms:
                return None
            return wk.item, wk.field

        def rewrite(doc: Doc, stamp: Stamp) -> int:
            moved: dict[str, str] = {}  # old key -> new key, for every root
            plan: list[tuple[Map, str, str, Any, bool]] = []
            for root in ROOTS[kind]:
                m = doc.get(root, type=Map)
                for key in list(m.keys()):
                    where = ahead(root, key)
                    if where is None:
                        continue
                    new = make_key(root, ts=stamp["ts"], device=stamp["device"], item=where[0], field=where[1])
                    moved[key] = new
                    value = m[key]
                    plan.append((m, key, new, value.get("v") if isinstance(value, dict) else None,
                                 root == "materials" and where[1] == REMOVED))
            for m, key, new, v, removal in plan:
                if removal and isinstance(v, list):
                    v = sorted(moved.get(k, k) for k in v)  # a removal covers the same writes, renamed
                del m[key]
                m[new] = entry_value(v, author=stamp["author"], role=stamp["role"])
            return len(plan)

        if doc_id not in self._docs:
            return 0
        return await self._edit(doc_id, rewrite)

    async def _acknowledge(self, doc_id: str, update_ids: list[int], server_time: str | None) -> None:
        """Mark outbox updates acknowledged (and correct the clock offset) in one commit."""
        if server_time is not None:
            adjust_offset(self.hlc, server_time)
        await self._store.mark_acked(update_ids, clock_meta(self.hlc))
        await self._store.compact(doc_id, self.compact_after)

    async def _drop(self, doc_id: str) -> bool:
        """Forget a document the server no longer shows this device.

        Refused (returns False, nothing deleted) while the document has unacknowledged local
        updates: those must reach the server first.
        """
        doc = self._docs.pop(doc_id, None)  # no local edit can start on it meanwhile
        dropped = await self._store.drop_doc(doc_id)
        if not dropped and doc is not None:
            self._docs[doc_id] = doc
        return dropped
