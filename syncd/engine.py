"""The sync engine: accept, merge, durably commit, project, serve pulls, compact.

Pushes are queued and handled by one batch processor per process (the single writer):

    scan -> dependency check -> client-id binding -> apply observed -> validate
         -> (batch) one transaction: op log + projection rows + events + watermarks
         -> acknowledge -> notify listeners (fan-out)

A refused update never reaches the log; the document is rebuilt from the log (plus the
batch's accepted updates) so its in-memory copy never holds refused content. A failed
commit fails the whole batch (nothing is acknowledged) and rebuilds the touched documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pycrdt import merge_updates
from sqlalchemy.ext.asyncio import AsyncEngine

from conflict_rules.hlc import DEFAULT_MAX_SKEW_MS, HLC
from schema.documents import ROOTS, parse_doc_id
from schema.view import DocView, explain_path

from .automations import insert_tasks, job_context, tasks_for
from .errors import (ClientIdConflict, Forbidden, MalformedUpdate, MissingDependencies, SyncError,
                     Unavailable, UnknownDocument, UpdateTooLarge)
from .livedoc import EMPTY_UPDATE, IncompleteApply, LiveDoc
from .projection import Delta, diff_views
from .protocol import Principal, PullResult, PushAck
from .store import Store
from .update_scan import ScanError, ScanLimits, ScanResult, is_duplicate, missing_dependencies, scan_update
from .validation import ValidatedWrite, validate_changes

__all__ = ["SyncEngine", "EngineConfig", "Authorizer", "CommitListener"]

log = logging.getLogger("syncd.engine")

#: ``authorizer(principal, doc_id, view_before, writes)`` raises Forbidden to refuse a write.
Authorizer = Callable[[Principal, str, "DocView | None", list[ValidatedWrite]], None]
#: ``listener(doc_id, update, seq, principal)`` runs after a durable commit (fan-out).
CommitListener = Callable[[str, bytes, int, Principal], Awaitable[None] | None]


@dataclass(frozen=True)
class EngineConfig:
    max_update_bytes: int = 1 << 20
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    max_batch: int = 512
    max_docs_in_memory: int = 5000
    #: check every incremental view against a full resolution (tests)
    paranoid: bool = False
    #: other processes write the same database (default: yes on PostgreSQL, no on SQLite)
    shared: bool | None = None
    scan_limits: ScanLimits = ScanLimits()


@dataclass
class _Submission:
    principal: Principal
    doc_id: str
    update: bytes
    future: asyncio.Future
    digest: bytes = b""


@dataclass
class _Accepted:
    sub: _Submission
    live: LiveDoc
    writes: list[ValidatedWrite]
    new_clients: dict[int, str] = field(default_factory=dict)


def _resolve(fut: asyncio.Future, value: Any) -> None:
    """Answer a submitter unless it stopped waiting (a cancelled request must not fail a batch)."""
    if not fut.done():
        fut.set_result(value)


def _is_fatal(e: BaseException) -> bool:
    return isinstance(e, (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit))


class SyncEngine:
    """One process's sync engine over one database."""

    def __init__(self, db: AsyncEngine, config: EngineConfig = EngineConfig(), *,
                 authorizer: Authorizer | None = None, clock: Callable[[], int] | None = None) -> None:
        self.db = db
        self.config = config
        self.store = Store(db.dialect.name)
        # reads must not take SQLite's write lock (the batcher's commits hold it)
        self.reader = db.execution_options(sqlite_begin="DEFERRED") if db.dialect.name == "sqlite" else db
        self.authorizer = authorizer
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.hlc = HLC(clock=self._clock)
        self._docs: OrderedDict[str, LiveDoc] = OrderedDict()
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._bindings: dict[int, str] = {}
        self._devices: dict[str, str] = {}
        self._users: set[str] = set()
        self._listeners: list[CommitListener] = []
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._batch_lock = asyncio.Lock()
        self._batch_conn: Any = None
        #: True when other processes may write the same database (PostgreSQL); reads then
        #: check the log for their commits. SQLite is one process by design (embedded).
        self._shared = config.shared if config.shared is not None else db.dialect.name == "postgresql"
        self._edit_clients: dict[str, int] = {}
        self._edit_locks: dict[str, asyncio.Lock] = {}
        self.stats = {"accepted": 0, "duplicates": 0, "refused": 0, "batches": 0, "rows_written": 0}

    def _read(self) -> Any:
        """A connection for reads. Inside the batch transaction that is the batch's own
        connection: borrowing a second one from the pool while holding SQLite's write lock
        can deadlock against requests that hold the other pooled connections and wait for
        that lock."""
        conn = self._batch_conn
        if conn is not None and asyncio.current_task() is self._task:
            return contextlib.nullcontext(conn)
        return self.reader.connect()

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> "SyncEngine":
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="syncd-batcher")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            sub = self._queue.get_nowait()
            if not sub.future.done():
                sub.future.set_exception(Unavailable("the sync engine is shutting down; retry"))

    async def __aenter__(self) -> "SyncEngine":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def server_time(self) -> str:
        return self.hlc.now()

    # --- push ---------------------------------------------------------------------------
    async def push(self, principal: Principal, doc_id: str, update: bytes) -> PushAck:
        """Accept one update; returns once it is durable and projected (or raises SyncError)."""
        if self._task is None:
            raise Unavailable("the sync engine is not running")
        if not isinstance(update, (bytes, bytearray)):
            raise MalformedUpdate("an update must be bytes")
        if len(update) > self.config.max_update_bytes:
            raise UpdateTooLarge(f"update of {len(update)} bytes exceeds the limit of "
                                 f"{self.config.max_update_bytes} bytes")
        try:
            parse_doc_id(doc_id)
        except ValueError as e:
            raise MalformedUpdate(str(e)) from None
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Submission(principal, doc_id, bytes(update), fut))
        return await fut

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.config.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            except BaseException as e:  # the batcher must survive anything but cancellation
                if _is_fatal(e):
                    for s in batch:
                        if not s.future.done():
                            s.future.set_exception(Unavailable("the sync engine stopped; retry"))
                    raise
                log.exception("batch failed")
                for s in batch:
                    if not s.future.done():
                        s.future.set_exception(Unavailable(f"internal error: {type(e).__name__}; retry"))

    async def _process(self, batch: list[_Submission]) -> None:
        done = asyncio.get_running_loop().create_future()
        for sub in batch:
            self._inflight[sub.doc_id] = done
        try:
            async with self._batch_lock:
                await self._process_locked(batch)
        finally:
            for sub in batch:
                if self._inflight.get(sub.doc_id) is done:
                    del self._inflight[sub.doc_id]
            done.set_result(None)
            self._evict()

    async def _process_locked(self, batch: list[_Submission]) -> None:
        """One write transaction per batch. It first locks the batch's documents (across
        processes) and catches their in-memory copies up with whatever other processes
        committed; then every update is checked and applied against current state, and the
        log, projection, events and heads are written before the single commit."""
        accepted: list[_Accepted] = []
        batch_updates: dict[str, list[bytes]] = {}
        pending_digests: dict[tuple[str, bytes], _Submission] = {}
        followers: list[tuple[_Submission, _Submission]] = []
        new_devices: dict[str, str] = {}
        new_bindings: dict[int, str] = {}
        written: tuple[list[int], dict[str, int], int, dict[str, DocView], dict[str, LiveDoc]] | None = None
        try:
            async with self.db.begin() as conn:
                self._batch_conn = conn
                heads = await self.store.lock_heads(conn, sorted({s.doc_id for s in batch}))
                for doc_id, last in heads.items():
                    live = self._docs.get(doc_id)
                    if live is not None and live.last_seq != last:
                        await self._rebuild(live, [])
                for sub in batch:
                    try:
                        sub.digest = hashlib.sha256(sub.update).digest()
                        key = (sub.doc_id, sub.digest)
                        if key in pending_digests:
                            followers.append((sub, pending_digests[key]))
                            continue
                        acc = await self._accept_one(sub, new_devices, new_bindings, batch_updates)
                        if acc is None:
                            continue
                        accepted.append(acc)
                        pending_digests[key] = sub
                        batch_updates.setdefault(sub.doc_id, []).append(sub.update)
                    except SyncError as e:
                        self.stats["refused"] += 1
                        if not sub.future.done():
                            sub.future.set_exception(e)
                if accepted:
                    accepted = await self._verify_integrated(accepted, batch_updates)
                if accepted:
                    written = await self._write(conn, accepted, new_devices, new_bindings)
        except BaseException as e:
            self._batch_conn = None
            if _is_fatal(e) and not isinstance(e, asyncio.CancelledError):
                raise
            log.error("batch transaction failed: %s: %s", type(e).__name__, e)
            for a in accepted:
                self._docs.pop(a.live.doc_id, None)  # reload from the log on next use
            err = Unavailable(f"storage failed ({type(e).__name__}); nothing was stored, retry")
            for sub in batch:
                if not sub.future.done():
                    sub.future.set_exception(err)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        self._batch_conn = None
        if written is not None:
            await self._after_commit(accepted, new_devices, new_bindings, *written)
        for sub, leader in followers:
            if leader.future.done() and not leader.future.cancelled() and leader.future.exception() is None:
                ack = leader.future.result()
                _resolve(sub.future, PushAck(ack.doc_id, ack.seq, True, ack.server_time))
            elif not sub.future.done():
                sub.future.set_exception(leader.future.exception() if leader.future.done() else Unavailable("retry"))

    async def _accept_one(self, sub: _Submission, new_devices: dict[str, str], new_bindings: dict[int, str],
                          batch_updates: dict[str, list[bytes]]) -> _Accepted | None:
        p = sub.principal
        await self._check_device(p, new_devices)
        live = await self._get_doc(sub.doc_id, create=True)
        seq = live.digests.get(sub.digest)
        if seq is not None:
            self.stats["duplicates"] += 1
            _resolve(sub.future, PushAck(sub.doc_id, seq, True, self.server_time()))
            return None
        try:
            scan = scan_update(sub.update, self.config.scan_limits)
        except ScanError as e:
            raise MalformedUpdate(f"not a valid update: {e}") from None
        if scan.has_nested_types or not scan.content_types <= {"any", "deleted", "gc", "skip"}:
            raise MalformedUpdate("updates may only hold plain values in the document's maps "
                                  f"(found {sorted(scan.content_types)})")
        stray = scan.roots - set(ROOTS[live.kind])
        if stray:
            raise MalformedUpdate(f"a {live.kind} document has no root(s) {sorted(stray)}")
        sv = live.state_vector()
        missing = missing_dependencies(scan, sv)
        if missing:
            raise MissingDependencies(
                "the update builds on changes the server does not have yet; re-send the earlier "
                "updates of this document first", {"missing": missing[:10], "state_vector": live.doc.get_state().hex()})
        dup_content = is_duplicate(scan, sv)
        bindings = await self._check_clients(p, scan, sv, new_bindings)
        try:
            changes = live.apply_observed(sub.update, {c: end for c, (_, end) in scan.clients.items()})
        except BaseException as e:
            if _is_fatal(e):
                raise
            await self._rebuild(live, batch_updates.get(sub.doc_id, []))
            if isinstance(e, IncompleteApply):
                raise MissingDependencies(str(e), {"state_vector": live.doc.get_state().hex()}) from None
            raise MalformedUpdate(f"the update could not be applied: {type(e).__name__}: {e}") from None
        if not changes and dup_content:
            self.stats["duplicates"] += 1
            _resolve(sub.future, PushAck(sub.doc_id, live.last_seq, True, self.server_time()))
            return None
        try:
            writes = validate_changes(live.kind, changes, p, self._clock(), self.config.max_skew_ms)
            self._check_new_notes(live, writes)
            if self.authorizer is not None:
                self.authorizer(p, sub.doc_id, live.view, writes)
        except SyncError:
            await self._rebuild(live, batch_updates.get(sub.doc_id, []))
            raise
        for w in writes:
            self.hlc.receive(w.key.ts)
        new_bindings.update(bindings)
        return _Accepted(sub, live, writes, bindings)

    @staticmethod
    def _check_new_notes(live: LiveDoc, writes: list[ValidatedWrite]) -> None:
        """A note is written once: a second write under an existing note id is refused."""
        new = [w.key for w in writes if w.key.root == "notes"]
        if not new:
            return
        from pycrdt import Map
        ids: dict[str, int] = {}
        for k in live.doc.get("notes", type=Map).keys():
            nid = k.split("/", 1)[0]
            ids[nid] = ids.get(nid, 0) + 1
        for wk in new:
            if ids.get(wk.item or "", 0) > 1:
                raise Forbidden(f"note {wk.item} already exists: notes are append-only")

    async def _check_device(self, p: Principal, new_devices: dict[str, str]) -> None:
        owner = self._devices.get(p.device_id) or new_devices.get(p.device_id)
        if owner is None:
            async with self._read() as conn:
                owner = await self.store.device_owner(conn, p.device_id)
                if owner is None:
                    if p.user_id not in self._users:
                        if not await self.store.user_exists(conn, p.user_id):
                            raise Forbidden(f"unknown user {p.user_id!r}")
                        self._users.add(p.user_id)
                    new_devices[p.device_id] = p.user_id
                    return
            self._devices[p.device_id] = owner
        if owner != p.user_id:
            raise Forbidden(f"device {p.device_id!r} belongs to another user")

    async def _check_clients(self, p: Principal, scan: ScanResult, sv: dict[int, int],
                             new_bindings: dict[int, str]) -> dict[int, str]:
        """Every client id that brings new content must be bound to this device."""
        fresh = [c for c, (_, end) in scan.clients.items() if end > sv.get(c, 0)]
        unknown = [c for c in fresh if c not in self._bindings and c not in new_bindings]
        if unknown:
            async with self._read() as conn:
                self._bindings.update(await self.store.client_bindings(conn, unknown))
        out: dict[int, str] = {}
        for c in fresh:
            dev = self._bindings.get(c) or new_bindings.get(c)
            if dev is None:
                out[c] = p.device_id
            elif dev != p.device_id:
                raise ClientIdConflict(f"client id {c} belongs to another device; a device must use its own "
                                       "client id")
        return out

    async def _verify_integrated(self, accepted: list[_Accepted], batch_updates: dict[str, list[bytes]]
                                 ) -> list[_Accepted]:
        """Once per document per batch: everything applied really integrated. A document
        that fails is rebuilt from the log and its updates are refused (never stored)."""
        bad: set[str] = set()
        for live in {a.live.doc_id: a.live for a in accepted}.values():
            try:
                live.verify_state_vector()
            except IncompleteApply as e:
                log.error("%s", e)
                bad.add(live.doc_id)
                await self._rebuild(live, [])
        if not bad:
            return accepted
        for a in accepted:
            if a.live.doc_id in bad and not a.sub.future.done():
                a.sub.future.set_exception(MissingDependencies(
                    "the update did not integrate; re-send this document's updates in order",
                    {"state_vector": a.live.doc.get_state().hex()}))
        return [a for a in accepted if a.live.doc_id not in bad]

    async def _write(self, conn: Any, accepted: list[_Accepted], new_devices: dict[str, str],
                     new_bindings: dict[int, str]):
        touched: dict[str, LiveDoc] = {a.live.doc_id: a.live for a in accepted}
        new_views = {d: live.resolve() for d, live in touched.items()}
        if self.config.paranoid:  # tests: the incremental view must equal a full resolution
            for d, live in touched.items():
                full = live.full_view()
                if new_views[d] != full:
                    raise AssertionError(f"incremental view of {d} differs from a full resolution")
        rows = [{"doc_id": a.sub.doc_id, "digest": a.sub.digest, "update": a.sub.update,
                 "user_id": a.sub.principal.user_id, "device_id": a.sub.principal.device_id} for a in accepted]
        for dev, user in new_devices.items():
            await self.store.add_device(conn, dev, user)
        await self.store.bind_clients(conn, new_bindings)
        seqs = await self.store.append(conn, rows)
        last: dict[str, int] = {}
        for a, s in zip(accepted, seqs):
            last[a.sub.doc_id] = s
        deltas: list[tuple[str, Delta, int]] = []
        for d, live in touched.items():
            items, notes = live.touched() if live.view is not None else (None, True)
            deltas.append((d, diff_views(live.kind, live.record_id, live.view, new_views[d], items=items, notes=notes),
                           last[d]))
            if self.config.paranoid:  # tests: the partial diff must equal the full one
                full = diff_views(live.kind, live.record_id, live.view, new_views[d])
                if (full.upserts, full.events) != (deltas[-1][1].upserts, deltas[-1][1].events):
                    raise AssertionError(f"partial projection diff of {d} differs from the full diff")
        n = await self.store.write_deltas(conn, deltas)
        n += await self._automations(conn, deltas, new_views, touched)
        await self.store.upsert_heads(conn, [
            {"doc_id": d, "kind": live.kind, "record_id": live.record_id, "last_seq": last[d],
             "projected_seq": last[d]} for d, live in touched.items()])
        await self.store.touch_devices(conn, {a.sub.principal.device_id for a in accepted})
        return seqs, last, n + len(rows) + len(touched), new_views, touched

    async def _automations(self, conn: Any, deltas: list[tuple[str, Delta, int]], new_views: dict[str, DocView],
                           touched: dict[str, LiveDoc]) -> int:
        """Tasks the automations propose for this commit's events, in the same transaction
        (tasks are not events: automations never trigger automations)."""
        evs = [e for _, delta, _ in deltas for e in delta.events]
        if not evs:
            return 0
        ctx = {live.record_id: job_context(new_views[d]) for d, live in touched.items() if live.kind == "job"}
        tasks = tasks_for(list(zip(self.store.last_event_ids, evs)), ctx)
        if tasks:
            await insert_tasks(conn, tasks)
        return len(tasks)

    async def _after_commit(self, accepted: list[_Accepted], new_devices: dict[str, str], new_bindings: dict[int, str],
                            seqs: list[int], last: dict[str, int], n_rows: int, new_views: dict[str, DocView],
                            touched: dict[str, LiveDoc]) -> None:
        self._devices.update(new_devices)
        self._bindings.update(new_bindings)
        for d, live in touched.items():
            live.view = new_views[d]
            live.clear_touched()
            live.last_seq = last[d]
        self.stats["batches"] += 1
        self.stats["accepted"] += len(accepted)
        self.stats["rows_written"] += n_rows
        now = self.server_time()
        for a, s in zip(accepted, seqs):
            a.live.digests[a.sub.digest] = s
            _resolve(a.sub.future, PushAck(a.sub.doc_id, s, False, now))
        for a, s in zip(accepted, seqs):
            for listener in self._listeners:
                try:
                    r = listener(a.sub.doc_id, a.sub.update, s, a.sub.principal)
                    if asyncio.iscoroutine(r):
                        await r
                except Exception:  # a broken listener must not undo a durable write
                    log.exception("commit listener failed for %s seq %s", a.sub.doc_id, s)

    # --- documents ------------------------------------------------------------------------
    async def _get_doc(self, doc_id: str, *, create: bool = False) -> LiveDoc:
        live = self._docs.get(doc_id)
        if live is not None:
            self._docs.move_to_end(doc_id)
            return live
        lock = self._load_locks.setdefault(doc_id, asyncio.Lock())
        async with lock:
            live = self._docs.get(doc_id)
            if live is None:
                live = await self._load(doc_id)
                if live is None:
                    if not create:
                        raise UnknownDocument(f"no document {doc_id!r}")
                    live = LiveDoc(doc_id)
                self._docs[doc_id] = live
        self._load_locks.pop(doc_id, None)
        return live

    async def _load(self, doc_id: str, extra: list[bytes] = ()) -> LiveDoc | None:
        async with self._read() as conn:
            head = await self.store.head(conn, doc_id)
            snap = await self.store.snapshot(conn, doc_id)
            entries = await self.store.entries(conn, doc_id, after_seq=snap[1] if snap else 0)
        if head is None and snap is None and not entries and not extra:
            return None
        live = LiveDoc.build(doc_id, snap[0] if snap else None, [e.update for e in entries])
        live.horizon = snap[1] if snap else 0
        live.last_seq = max([live.horizon] + [e.seq for e in entries])
        live.digests = {e.digest: e.seq for e in entries}
        if extra:
            committed_view = live.view
            for u in extra:
                live.apply_observed(u)
            live.view = committed_view
        return live

    async def _rebuild(self, live: LiveDoc, batch_accepted: list[bytes]) -> None:
        """Replace a document's in-memory copy by log + this batch's accepted updates."""
        fresh = await self._load(live.doc_id, batch_accepted) or LiveDoc(live.doc_id)
        live.adopt(fresh)

    def _evict(self) -> None:
        while len(self._docs) > self.config.max_docs_in_memory:
            doc_id, _ = next(iter(self._docs.items()))
            if doc_id in self._inflight:
                break
            self._docs.popitem(last=False)

    async def _settled(self, doc_id: str) -> None:
        fut = self._inflight.get(doc_id)
        while fut is not None:
            await asyncio.shield(fut)
            fut = self._inflight.get(doc_id)

    async def refresh(self, doc_id: str) -> bool:
        """Catch a loaded document up with entries other processes committed (a hint from
        Redis, or a reconnect). Returns True if anything new was applied."""
        live = self._docs.get(doc_id)
        if live is None:
            return False
        async with self._batch_lock:
            async with self.reader.connect() as conn:
                entries = await self.store.entries(conn, doc_id, after_seq=live.last_seq)
            if not entries:
                return False
            ups = [e.update for e in entries]
            try:
                live.apply_observed(ups[0] if len(ups) == 1 else merge_updates(*ups))
            except IncompleteApply:
                await self._rebuild(live, [])
                return True
            live.last_seq = max(e.seq for e in entries)
            live.digests.update({e.digest: e.seq for e in entries})
            live.view = live.resolve()
            live.clear_touched()
            return True

    # --- server-side writes (REST) -------------------------------------------------------
    async def edit(self, principal: Principal, doc_id: str, fn: Callable[[Any, dict[str, Any]], Any]) -> tuple[PushAck, Any]:
        """Write on behalf of ``principal`` (a REST call): ``fn(doc, stamp)`` edits a copy of
        the current document with the schema.documents writers; the resulting update is then
        accepted exactly like a device's push (validated, authored by the principal, durable).

        Each process uses its own Yjs client id per device (bound to that device like any
        other), and one edit at a time per device, so two edits never reuse the same ids.
        """
        from pycrdt import Doc
        import secrets
        lock = self._edit_locks.setdefault(principal.device_id, asyncio.Lock())
        async with lock:
            client_id = self._edit_clients.setdefault(principal.device_id, secrets.randbelow(2**52) + 2**20)
            await self._settled(doc_id)
            try:
                live = await self._get_doc(doc_id)
                state = live.encode_state()
            except UnknownDocument:
                state = None
            doc = Doc(client_id=client_id)
            if state:
                doc.apply_update(state)
            before = doc.get_state()
            stamp = {"ts": self.hlc.now(), "device": principal.device_id, "author": principal.user_id,
                     "role": principal.role}
            with doc.transaction(origin="server-edit"):
                result = fn(doc, stamp)
            if doc.get_state() == before:  # the edit wrote nothing: nothing to store
                last = self._docs[doc_id].last_seq if doc_id in self._docs else 0
                return PushAck(doc_id, last, True, self.server_time()), result
            ack = await self.push(principal, doc_id, doc.get_update(before))
            return ack, result

    # --- pull -----------------------------------------------------------------------------
    async def pull(self, principal: Principal, doc_id: str, state_vector: bytes | None = None,
                   since_seq: int | None = None) -> PullResult:
        """What a device lacks of one document: the log tail since its cursor when the cursor
        is past the compaction horizon, else a state-vector diff of the whole document."""
        try:
            parse_doc_id(doc_id)
        except ValueError as e:
            raise MalformedUpdate(str(e)) from None
        await self._settled(doc_id)
        live = await self._get_doc(doc_id)
        await self._settled(doc_id)
        if self._shared:
            await self.refresh(doc_id)  # another process may have committed since we loaded it
        if since_seq is not None and live.horizon <= since_seq <= live.last_seq:
            upto = live.last_seq
            async with self.reader.connect() as conn:
                entries = await self.store.entries(conn, doc_id, after_seq=since_seq, upto_seq=upto,
                                                   exclude_device=principal.device_id)
            ups = [e.update for e in entries]
            update = EMPTY_UPDATE if not ups else ups[0] if len(ups) == 1 else merge_updates(*ups)
            seq = upto
        else:
            try:
                update = live.diff(state_vector)
            except BaseException as e:
                if _is_fatal(e):
                    raise
                raise MalformedUpdate(f"invalid state vector: {type(e).__name__}") from None
            seq = live.last_seq
        if since_seq is not None and since_seq > 0:
            async with self.db.begin() as conn:
                await self.store.record_ack(conn, principal.device_id, doc_id, min(since_seq, live.last_seq))
        return PullResult(doc_id, update, seq, self.server_time())

    async def state_vector(self, doc_id: str) -> bytes:
        """The server's state vector of a document (UnknownDocument if there is none)."""
        await self._settled(doc_id)
        live = await self._get_doc(doc_id)
        if self._shared:
            await self.refresh(doc_id)
        return live.doc.get_state()

    async def list_docs(self, principal: Principal | None = None) -> list[str]:
        async with self.reader.connect() as conn:
            return [h["doc_id"] for h in await self.store.heads(conn)]

    # --- inspection -------------------------------------------------------------------------
    async def view(self, doc_id: str) -> DocView | None:
        await self._settled(doc_id)
        return (await self._get_doc(doc_id)).view

    async def explain(self, doc_id: str, path: str) -> dict[str, Any]:
        await self._settled(doc_id)
        live = await self._get_doc(doc_id)
        return explain_path(live.doc, live.kind, path)

    # --- compaction ---------------------------------------------------------------------------
    async def compact(self, doc_id: str) -> dict[str, Any]:
        """Fold log entries every known device has acknowledged into the snapshot."""
        await self._settled(doc_id)
        live = await self._get_doc(doc_id)
        async with self.db.begin() as conn:
            min_ack = await self.store.min_ack(conn, doc_id)
            horizon = live.last_seq if min_ack is None else min(min_ack, live.last_seq)
            before = await self.store.log_bytes(conn, doc_id)
            if horizon <= live.horizon:
                return {"doc_id": doc_id, "folded": 0, "horizon": live.horizon, "bytes_before": sum(before),
                        "bytes_after": sum(before)}
            snap = await self.store.snapshot(conn, doc_id)
            entries = await self.store.entries(conn, doc_id, after_seq=snap[1] if snap else 0, upto_seq=horizon)
            prefix = LiveDoc.build(doc_id, snap[0] if snap else None, [e.update for e in entries])
            state = prefix.encode_state()
            folded = await self.store.write_snapshot(conn, doc_id, state, horizon, len(entries))
            after = await self.store.log_bytes(conn, doc_id)
        live.horizon = horizon
        for e in entries:
            live.digests.pop(e.digest, None)
        return {"doc_id": doc_id, "folded": folded, "horizon": horizon, "bytes_before": sum(before),
                "bytes_after": sum(after), "state_bytes": len(live.encode_state())}
