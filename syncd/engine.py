"""The sync engine: accept, merge, durably commit, project, serve pulls, compact.

Pushes are queued and handled by one batch processor per process (the single writer):

    scan -> dependency check -> client-id binding -> apply observed -> validate
         -> (batch) one transaction: op log + projection rows + events + watermarks
         -> notify listeners (fan-out) -> acknowledge

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
from .sqlite_inline import inline_calls
from .store import Store
from .update_scan import ScanError, ScanLimits, ScanResult, is_duplicate, missing_dependencies, scan_update
from .validation import ValidatedWrite, validate_changes

__all__ = ["SyncEngine", "EngineConfig", "Authorizer", "CommitListener"]

log = logging.getLogger("syncd.engine")

#: ``authorizer(principal, doc_id, view_before, writes)`` raises Forbidden to refuse a write.
Authorizer = Callable[[Principal, str, "DocView | None", list[ValidatedWrite]], None]
#: ``listener(doc_id, update, seq, principal)`` runs after a durable commit (fan-out).
CommitListener = Callable[[str, bytes, int, Principal], Awaitable[None] | None]


#: ``devices.last_seen_at`` is written at most this often per device (seconds)
SEEN_RESOLUTION_S = 60.0


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
    #: SQLite: run the batch transaction's statements on the event loop's thread, between
    #: BEGIN IMMEDIATE and COMMIT (both stay on aiosqlite's thread); see syncd.sqlite_inline
    inline_sqlite: bool = True


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


@dataclass
class _Prepared:
    """A batch checked and applied in memory, ready to be written."""

    batch: list[_Submission]
    accepted: list[_Accepted] = field(default_factory=list)
    #: (doc_id, digest) -> the submission accepted with it in this batch
    leaders: dict[tuple[str, bytes], _Submission] = field(default_factory=dict)
    #: (submission, leader): the same update as a leader of this batch
    followers: list[tuple[_Submission, _Submission]] = field(default_factory=list)
    #: content the document already holds (maybe not yet durable): answered after the commit
    duplicates: list[tuple[_Submission, LiveDoc]] = field(default_factory=list)
    new_devices: dict[str, str] = field(default_factory=dict)
    new_bindings: dict[int, str] = field(default_factory=dict)
    deltas: dict[str, Delta] = field(default_factory=dict)
    views: dict[str, DocView] = field(default_factory=dict)
    touched: dict[str, LiveDoc] = field(default_factory=dict)


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
        #: True when other processes may write the same database (PostgreSQL); reads then
        #: check the log for their commits. SQLite is one process by design (embedded).
        self._shared = config.shared if config.shared is not None else db.dialect.name == "postgresql"
        self.store = Store(db.dialect.name, local_ids=not self._shared)
        #: SQLite: the batch transaction's statements run on the loop thread (syncd.sqlite_inline)
        self._inline = db.dialect.name == "sqlite" and config.inline_sqlite
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
        #: when each device's ``last_seen_at`` was last written (monotonic seconds)
        self._seen: dict[str, float] = {}
        self._listeners: list[CommitListener] = []
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._batch_lock = asyncio.Lock()
        self._batch_conn: Any = None
        #: the batcher's own connection, kept between batches: a pooled checkout per batch
        #: cost a pre-ping (PostgreSQL) and a reset ROLLBACK on return, round trips on the path
        #: of every acknowledgement; dropped after any failed batch (the next one takes a
        #: fresh, pinged connection from the pool)
        self._writer: Any = None
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
        await self._drop_writer()
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
        return await self.submit(principal, doc_id, update)

    def submit(self, principal: Principal, doc_id: str, update: bytes) -> "asyncio.Future[PushAck]":
        """:meth:`push` without the coroutine: checks the update's envelope now (raising
        SyncError), queues it and returns the future of its acknowledgement. Cancelling what
        awaits the future does not withdraw the update (the WebSocket path relies on that: a
        connection that goes away does not take an accepted edit with it)."""
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
        fut: asyncio.Future[PushAck] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Submission(principal, doc_id, bytes(update), fut))
        return fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
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

    def _mark_inflight(self, batch: list[_Submission]) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        for sub in batch:
            self._inflight[sub.doc_id] = done
        return done

    def _unmark_inflight(self, batch: list[_Submission], done: asyncio.Future) -> None:
        for sub in batch:
            if self._inflight.get(sub.doc_id) is done:
                del self._inflight[sub.doc_id]
        if not done.done():
            done.set_result(None)
        self._evict()

    def _abort_batch(self, batch: list[_Submission], err: SyncError) -> None:
        """A batch that will not be committed: forget what it applied, fail its submitters."""
        for sub in batch:
            self._docs.pop(sub.doc_id, None)  # reload from the log on next use
        for sub in batch:
            if not sub.future.done():
                sub.future.set_exception(err)

    # --- one batch: lock, check and commit in one transaction --------------------------------
    async def _process(self, batch: list[_Submission]) -> None:
        done = self._mark_inflight(batch)
        try:
            async with self._batch_lock:
                await self._process_locked(batch)
        finally:
            self._unmark_inflight(batch, done)

    async def _process_locked(self, batch: list[_Submission]) -> None:
        """One write transaction per batch. It first locks the batch's documents (across
        processes) and catches their in-memory copies up with whatever other processes
        committed; then every update is checked and applied against current state, and the
        log, projection, events and heads are written before the single commit."""
        prep: _Prepared | None = None
        written = None
        try:
            if self._writer is None or self._writer.closed or self._writer.invalidated:
                await self._drop_writer()
                self._writer = await self.db.connect()
            async with self._writer.begin():
                conn = self._writer
                self._batch_conn = conn
                # SQLite: between BEGIN IMMEDIATE and COMMIT nothing waits on a lock, so the
                # statements run on this thread instead of one aiosqlite thread hop each
                with inline_calls(await conn.get_raw_connection() if self._inline else None):
                    heads = await self.store.lock_heads(conn, sorted({s.doc_id for s in batch}))
                    for doc_id, last in heads.items():
                        live = self._docs.get(doc_id)
                        if live is not None and live.last_seq != last:
                            await self._rebuild(live, [])
                    prep = await self._prepare(batch)
                    if prep.accepted:
                        written = await self._write(conn, prep)
        except BaseException as e:
            self._batch_conn = None
            broken, self._writer = self._writer, None  # the next batch takes a fresh connection
            self.store.forget_ids()
            self._seen.clear()
            if _is_fatal(e) and not isinstance(e, asyncio.CancelledError):
                raise
            log.error("batch transaction failed: %s: %s", type(e).__name__, e)
            self._abort_batch(batch, Unavailable(
                f"storage failed ({type(e).__name__}); nothing was stored, retry"))
            await self._close_quietly(broken)  # after the pushers were answered
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        self._batch_conn = None
        if written is not None:
            await self._after_commit(prep, *written)
        else:
            self._finish(prep)

    async def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        await self._close_quietly(conn)

    @staticmethod
    async def _close_quietly(conn: Any) -> None:
        if conn is not None:
            try:
                await asyncio.shield(conn.close())
            except Exception as e:  # a broken connection: the pool discards it
                log.warning("closing the batch connection failed: %s: %s", type(e).__name__, e)

    # --- checking a batch --------------------------------------------------------------------
    async def _prepare(self, batch: list[_Submission]) -> "_Prepared":
        """Scan, check, apply and validate every update of the batch against the in-memory
        documents, then resolve the new views and the projection deltas. Refused updates
        are answered here; nothing is written."""
        prep = _Prepared(batch)
        batch_updates: dict[str, list[bytes]] = {}
        for sub in batch:
            try:
                sub.digest = hashlib.sha256(sub.update).digest()
                key = (sub.doc_id, sub.digest)
                leader = prep.leaders.get(key)
                if leader is not None:  # the same update twice in one batch
                    prep.followers.append((sub, leader))
                    continue
                acc = await self._accept_one(sub, prep, batch_updates)
                if acc is None:
                    continue
                prep.accepted.append(acc)
                prep.leaders[key] = sub
                batch_updates.setdefault(sub.doc_id, []).append(sub.update)
            except SyncError as e:
                self.stats["refused"] += 1
                if not sub.future.done():
                    sub.future.set_exception(e)
        if prep.accepted:
            prep.accepted = await self._verify_integrated(prep.accepted, batch_updates)
        if prep.accepted:
            self._resolve_views(prep)
        return prep

    def _resolve_views(self, prep: "_Prepared") -> None:
        """New views and projection deltas of the touched documents; the documents' views
        advance now (the next batch diffs against them), their log positions at commit."""
        touched: dict[str, LiveDoc] = {a.live.doc_id: a.live for a in prep.accepted}
        for d, live in touched.items():
            new_view = live.resolve()
            if self.config.paranoid:  # tests: the incremental view must equal a full resolution
                if new_view != live.full_view():
                    raise AssertionError(f"incremental view of {d} differs from a full resolution")
            items, notes = live.touched() if live.view is not None else (None, True)
            delta = diff_views(live.kind, live.record_id, live.view, new_view, items=items, notes=notes)
            if self.config.paranoid:  # tests: the partial diff must equal the full one
                full = diff_views(live.kind, live.record_id, live.view, new_view)
                if (full.upserts, full.events) != (delta.upserts, delta.events):
                    raise AssertionError(f"partial projection diff of {d} differs from the full diff")
            prep.deltas[d] = delta
            prep.views[d] = new_view
            live.view = new_view
            live.clear_touched()
        prep.touched = touched

    async def _accept_one(self, sub: _Submission, prep: "_Prepared",
                          batch_updates: dict[str, list[bytes]]) -> _Accepted | None:
        p = sub.principal
        await self._check_device(p, prep.new_devices)
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
        bindings = await self._check_clients(p, scan, sv, prep.new_bindings)
        try:
            changes = live.apply_observed(sub.update, {c: end for c, (_, end) in scan.clients.items()})
        except BaseException as e:
            if _is_fatal(e):
                raise
            await self._rebuild(live, batch_updates.get(sub.doc_id, []))
            if isinstance(e, IncompleteApply):
                raise MissingDependencies(str(e), {"state_vector": live.doc.get_state().hex()}) from None
            raise MalformedUpdate(f"the update could not be applied: {type(e).__name__}: {e}") from None
        if not changes and dup_content:  # answered once the content it repeats is durable
            self.stats["duplicates"] += 1
            prep.duplicates.append((sub, live))
            return None
        try:
            writes = validate_changes(live.kind, changes, p, self._clock(), self.config.max_skew_ms)
            self._check_new_notes(live, writes)
            if self.authorizer is not None:
                self.authorizer(p, sub.doc_id, live.view, writes)
        except SyncError:
            await self._rebuild(live, batch_updates.get(sub.doc_id, []))
            raise
        if writes:  # canonical timestamps sort as strings: the newest one moves the clock past all
            self.hlc.receive(max(w.key.ts for w in writes))
        prep.new_bindings.update(bindings)
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

    async def _write(self, conn: Any, prep: "_Prepared") -> tuple[list[int], dict[str, int], int]:
        accepted, touched = prep.accepted, prep.touched
        rows = [{"doc_id": a.sub.doc_id, "digest": a.sub.digest, "update": a.sub.update,
                 "user_id": a.sub.principal.user_id, "device_id": a.sub.principal.device_id} for a in accepted]
        for dev, user in prep.new_devices.items():
            await self.store.add_device(conn, dev, user)
        await self.store.bind_clients(conn, prep.new_bindings)
        seqs = await self.store.append(conn, rows)
        last: dict[str, int] = {}
        for a, s in zip(accepted, seqs):
            last[a.sub.doc_id] = s
        deltas = [(d, prep.deltas[d], last[d]) for d in touched]
        n = await self.store.write_deltas(conn, deltas)
        n += await self._automations(conn, deltas, prep.views, touched)
        await self.store.upsert_heads(conn, [
            {"doc_id": d, "kind": live.kind, "record_id": live.record_id, "last_seq": last[d],
             "projected_seq": last[d]} for d, live in touched.items()])
        now = time.monotonic()
        stale = {d for d in {a.sub.principal.device_id for a in accepted}
                 if now - self._seen.get(d, -SEEN_RESOLUTION_S) >= SEEN_RESOLUTION_S}
        if stale:  # last_seen_at to the minute, not one UPDATE per batch
            await self.store.touch_devices(conn, stale)
            for d in stale:
                self._seen[d] = now
        return seqs, last, n + len(rows) + len(touched)

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

    async def _after_commit(self, prep: "_Prepared", seqs: list[int], last: dict[str, int], n_rows: int) -> None:
        accepted = prep.accepted
        for d, live in prep.touched.items():
            live.last_seq = max(live.last_seq, last[d])
        self.stats["batches"] += 1
        self.stats["accepted"] += len(accepted)
        self.stats["rows_written"] += n_rows
        self._devices.update(prep.new_devices)
        self._bindings.update(prep.new_bindings)
        for a, s in zip(accepted, seqs):
            a.live.digests[a.sub.digest] = s
        # listeners (fan-out) first: a pusher that has its ack knows the others were told
        for a, s in zip(accepted, seqs):
            for listener in self._listeners:
                try:
                    r = listener(a.sub.doc_id, a.sub.update, s, a.sub.principal)
                    if asyncio.iscoroutine(r):
                        await r
                except Exception:  # a broken listener must not undo a durable write
                    log.exception("commit listener failed for %s seq %s", a.sub.doc_id, s)
        now = self.server_time()
        for a, s in zip(accepted, seqs):
            _resolve(a.sub.future, PushAck(a.sub.doc_id, s, False, now))
        self._finish(prep)

    def _finish(self, prep: "_Prepared") -> None:
        """Answer the batch's duplicates once what they duplicate is durable."""
        for sub, leader in prep.followers:
            if leader.future.done() and not leader.future.cancelled() and leader.future.exception() is None:
                ack = leader.future.result()
                _resolve(sub.future, PushAck(ack.doc_id, ack.seq, True, ack.server_time))
            elif not sub.future.done():
                sub.future.set_exception(leader.future.exception() if leader.future.done() and
                                         not leader.future.cancelled() else Unavailable("retry"))
        for sub, live in prep.duplicates:
            _resolve(sub.future, PushAck(sub.doc_id, live.last_seq, True, self.server_time()))

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
        res, ack = await self._pull(principal, doc_id, state_vector, since_seq)
        if ack is not None:
            async with self.db.begin() as conn:
                await self.store.record_ack(conn, principal.device_id, doc_id, ack)
        return res

    async def pull_many(self, principal: Principal,
                        requests: list[tuple[str, bytes | None, int | None]]) -> list[PullResult | SyncError]:
        """Several pulls for one device (``(doc_id, state_vector, since_seq)`` each), answered
        in order: a :class:`PullResult` or the :class:`SyncError` of that document. The
        device's acknowledgements are recorded in one transaction instead of one per document
        (a device syncing from empty or catching up on many documents)."""
        out: list[PullResult | SyncError] = []
        acks: list[tuple[str, int]] = []
        current = await self._load_many([r[0] for r in requests])
        for doc_id, sv, since in requests:
            try:
                res, ack = await self._pull(principal, doc_id, sv, since, current=doc_id in current)
            except SyncError as e:
                out.append(e)
                continue
            out.append(res)
            if ack is not None:
                acks.append((doc_id, ack))
        if acks:
            async with self.db.begin() as conn:
                await self.store.record_acks(conn, principal.device_id, acks)
        return out

    async def _load_many(self, doc_ids: list[str]) -> set[str]:
        """Bring several documents into memory with three queries (not three per document),
        and, with other processes writing, catch up only those behind the log. Returns the
        documents known to be current now (no per-document refresh needed)."""
        wanted: list[str] = []
        for d in dict.fromkeys(doc_ids):
            try:
                parse_doc_id(d)
            except ValueError:
                continue  # answered by _pull with its own error
            wanted.append(d)
        if len(wanted) < 2:
            return set()
        missing = [d for d in wanted if d not in self._docs and d not in self._load_locks]
        current: set[str] = set()
        async with self.reader.connect() as conn:
            heads = await self.store.heads_of(conn, wanted) if (missing or self._shared) else {}
            if missing:
                snaps = await self.store.snapshots(conn, missing)
                entries = await self.store.entries_many(conn, missing, {d: s[1] for d, s in snaps.items()})
        for d in missing:
            if d in self._docs or (d not in heads and d not in snaps and not entries.get(d)):
                continue  # loaded meanwhile, or unknown (UnknownDocument from _pull)
            snap, ents = snaps.get(d), entries.get(d, [])
            try:
                live = LiveDoc.build(d, snap[0] if snap else None, [e.update for e in ents])
            except IncompleteApply:
                continue  # _pull's own load reports it
            live.horizon = snap[1] if snap else 0
            live.last_seq = max([live.horizon] + [e.seq for e in ents])
            live.digests = {e.digest: e.seq for e in ents}
            self._docs[d] = live
            current.add(d)
        if self._shared:
            behind = [d for d in wanted if d not in current and d in self._docs
                      and heads.get(d, 0) != self._docs[d].last_seq]
            current |= {d for d in wanted if d in self._docs and d not in behind}
            for d in behind:
                await self.refresh(d)
                current.add(d)
        self._evict()
        return current

    async def _pull(self, principal: Principal, doc_id: str, state_vector: bytes | None,
                    since_seq: int | None, *, current: bool = False) -> tuple[PullResult, int | None]:
        """A pull and the acknowledgement it implies (``since_seq`` the device already has).
        ``current``: the document was just loaded or checked against the log."""
        try:
            parse_doc_id(doc_id)
        except ValueError as e:
            raise MalformedUpdate(str(e)) from None
        await self._settled(doc_id)
        live = await self._get_doc(doc_id)
        await self._settled(doc_id)
        if self._shared and not current:
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
        ack = min(since_seq, live.last_seq) if since_seq is not None and since_seq > 0 else None
        return PullResult(doc_id, update, seq, self.server_time()), ack

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
