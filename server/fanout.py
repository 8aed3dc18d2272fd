"""Live fan-out: one room per document in this process, bridged across processes by Redis.

Local path. The engine calls :meth:`Fanout.on_commit` after every durable commit. The room
of that document queues the update and, once per event-loop turn, builds the y-protocols
update message once (updates committed in the same turn are merged into one) and hands the
same bytes to every member, except the connection(s) that pushed it: a connection marks
the update it is pushing (:meth:`Room.pushing`), the commit consumes the mark, so the
sender never gets its own update back. Members own bounded send queues (a member that
cannot keep up closes itself and resyncs on reconnect).

Cross-process path (``REDIS_URL``). Every local commit is also published on
``syncd:doc:{doc_id}`` as ``(origin instance, seq, update)``; every process listens on
``syncd:doc:*``. A process hearing of a commit made elsewhere first catches its engine up
from the shared log (``engine.refresh``), then broadcasts the update to its local room.

Redis is fail-open: it only carries hints, PostgreSQL is the truth.

* Redis down: local rooms keep working (same-process fan-out never touches Redis), and the
  engine keeps accepting. Commits that could not be published are remembered per document
  (``gaps``); once publishing works again a *resync* notice is published for each of them.
* The subscription dropped: it is re-established with backoff; then, before any further
  message is handled, every local room resyncs: the engine catches the document up from
  the log and the whole document state (one message, encoded once) goes to every member.
  Yjs ignores what a client already has, so this recovers exactly the gap, whatever it was.
* A resync notice does the same for one document.
* No Redis at startup: in-process only, and the subscription keeps retrying.

Without ``REDIS_URL`` fan-out is in-process only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Protocol

from pycrdt import merge_updates

from syncd.errors import SyncError, UnknownDocument
from syncd.protocol import Principal
from syncd.update_scan import (INTERNAL_LIMITS, ScanError, ScanResult, scan_update, update_client_ids,
                               without_clients)

from .redis_pubsub import subscribe_forever
from .ws_protocol import AwarenessEntry, AwarenessTable, Limits, awareness_message, update_message

__all__ = ["Member", "Room", "Fanout", "RedisBridge", "RemoteCommit", "RESYNC_SEQ", "CHANNEL_PREFIX",
           "encode_notice", "decode_notice"]

log = logging.getLogger("server.fanout")

CHANNEL_PREFIX = "syncd:doc:"
#: the ``seq`` of a whole-document resync message (newer than anything)
RESYNC_SEQ = 1 << 62


class Member(Protocol):
    """What a room needs from a live connection."""

    principal: Principal

    def deliver(self, message: bytes, seq: int) -> None:
        """Queue a document update message (``seq``: the newest log entry it holds)."""

    def send(self, message: bytes) -> None:
        """Queue any other message (awareness)."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection (idempotent)."""


class Room:
    """The live connections of one document in this process."""

    def __init__(self, doc_id: str, limits: Limits = Limits()) -> None:
        self.doc_id = doc_id
        self.members: dict[Member, None] = {}
        self.awareness = AwarenessTable(limits.max_awareness_clients, limits.max_room_awareness)
        self._pushes: dict[bytes, list[Member]] = {}
        self._pending: list[tuple[bytes, int, tuple[Member, ...]]] = []
        self._flush_scheduled = False

    # --- echo suppression -----------------------------------------------------------------
    def pushing(self, update: bytes, member: Member) -> None:
        """``member`` is about to push ``update``: its commit must not be sent back to it."""
        self._pushes.setdefault(update, []).append(member)

    def push_settled(self, update: bytes, member: Member, committed: bool) -> None:
        """The push returned. A new commit's mark is consumed by :meth:`committed`; a
        duplicate or a refusal never reaches it, so drop the mark here."""
        if committed:
            return
        marks = self._pushes.get(update)
        if marks and member in marks:
            marks.remove(member)
            if not marks:
                del self._pushes[update]

    # --- document updates -----------------------------------------------------------------
    def committed(self, update: bytes, seq: int, *, local: bool) -> None:
        """A durable commit of this document; broadcast at the end of this loop turn."""
        exclude = tuple(self._pushes.pop(update, ())) if local else ()
        self._pending.append((update, seq, exclude))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what was committed since the last flush: merged, encoded once."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if not pending or not self.members:
            return
        if len(pending) == 1:
            update, seq, exclude = pending[0]
            self._send_update(update_message(update), seq, exclude)
            return
        seq = max(s for _, s, _ in pending)
        senders = {m for _, _, ex in pending for m in ex}
        merged = _merge([u for u, _, _ in pending])
        if merged is None:  # could not merge: one message per update, still never echoed
            for update, s, exclude in pending:
                self._send_update(update_message(update), s, exclude)
            return
        self._send_update(update_message(merged), seq, tuple(senders))
        # A sender gets the merge minus the struct sections of its own client ids: the merge
        # is scanned once, then sliced per sender (its own deletions stay in the delete set:
        # harmless).
        own: dict[Member, list[bytes]] = {}
        for u, _, ex in pending:
            for m in ex:
                own.setdefault(m, []).append(u)
        newest_first: list[tuple[bytes, int, tuple[Member, ...]]] = []
        sections: ScanResult | None = None
        for m, mine in own.items():
            if m not in self.members or len(mine) == len(pending):
                continue  # gone, or nothing in this flush is from anyone else
            if not newest_first:  # the first sender that needs a copy: scan and order once
                newest_first = sorted(pending, key=lambda p: p[1], reverse=True)
                sections = _scan_merged(merged)
            others = _without_clients(merged, sections, mine) if sections is not None else None
            if others is None:
                for u, s, ex in pending:
                    if m not in ex:
                        m.deliver(update_message(u), s)
            else:
                m.deliver(update_message(others), next(s for _, s, ex in newest_first if m not in ex))

    def _send_update(self, message: bytes, seq: int, exclude: tuple[Member, ...]) -> None:
        for m in list(self.members):
            if m not in exclude:
                m.deliver(message, seq)

    def broadcast_state(self, state: bytes) -> None:
        """Send a whole-document update to every member (resync after a gap)."""
        message = update_message(state)
        for m in list(self.members):
            m.deliver(message, RESYNC_SEQ)

    # --- awareness ------------------------------------------------------------------------
    def relay_awareness(self, member: Member, entries: Iterable[AwarenessEntry]) -> None:
        payload = self.awareness.apply(member, entries)
        if payload is not None:
            self._send_others(member, awareness_message(payload))

    def awareness_snapshot(self) -> bytes | None:
        payload = self.awareness.snapshot()
        return awareness_message(payload) if payload is not None else None

    def _send_others(self, member: Member | None, message: bytes) -> None:
        for m in list(self.members):
            if m is not member:
                m.send(message)

    def remove(self, member: Member) -> None:
        self.members.pop(member, None)
        for update, marks in list(self._pushes.items()):
            if member in marks:
                marks.remove(member)
                if not marks:
                    del self._pushes[update]
        payload = self.awareness.drop(member)
        if payload is not None:
            self._send_others(None, awareness_message(payload))


def _scan_merged(merged: bytes) -> ScanResult | None:
    """The struct sections of a merged broadcast (None, logged, if it cannot be read: the
    senders then get the other updates one by one)."""
    try:
        return scan_update(merged, INTERNAL_LIMITS)
    except ScanError as e:
        log.error("scanning a merged broadcast failed: %s", e)
        return None


def _without_clients(merged: bytes, sections: ScanResult, own: list[bytes]) -> bytes | None:
    """``merged`` without the struct sections of the client ids that appear in ``own``."""
    try:
        clients: set[int] = set()
        for u in own:
            clients.update(update_client_ids(u))
        return without_clients(merged, sections, clients)
    except ScanError as e:
        log.error("filtering a merged broadcast failed: %s", e)
        return None


def _merge(updates: list[bytes]) -> bytes | None:
    try:
        return merge_updates(*updates)
    except BaseException as e:  # pycrdt's PanicException is a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)):
            raise
        log.error("merging %d committed updates failed: %s: %s", len(updates), type(e).__name__, e)
        return None


# --- Redis wire format ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RemoteCommit:
    """A notice from another process: a commit (``update`` set) or a resync request."""

    origin: str
    doc_id: str
    seq: int
    update: bytes | None


def _uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad number")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def encode_notice(origin: str, doc_id: str, seq: int, update: bytes | None) -> bytes:
    """``C`` commit or ``R`` resync: kind, origin, doc id, seq, then the update bytes."""
    o, d = origin.encode(), doc_id.encode()
    return b"".join((b"C" if update is not None else b"R", _uint(len(o)), o, _uint(len(d)), d, _uint(seq),
                     update or b""))


def decode_notice(data: bytes) -> RemoteCommit:
    """Inverse of :func:`encode_notice`; ValueError if malformed."""
    if not data or data[:1] not in (b"C", b"R"):
        raise ValueError("unknown notice kind")
    n, pos = _read_uint(data, 1)
    origin = data[pos:pos + n].decode()
    pos += n
    n, pos = _read_uint(data, pos)
    doc_id = data[pos:pos + n].decode()
    pos += n
    if pos > len(data):
        raise ValueError("truncated notice")
    seq, pos = _read_uint(data, pos)
    return RemoteCommit(origin, doc_id, seq, data[pos:] if data[:1] == b"C" else None)


class RedisBridge:
    """Publishes local commits and listens for other processes' (see the module docstring).

    ``on_remote(notices)`` gets the notices of other instances in arrival order, a drained
    batch at a time; ``on_resubscribed()`` runs after every (re)subscription, before any
    further notice is handled.
    """

    def __init__(self, url: str, *, instance_id: str,
                 on_remote: Callable[[list[RemoteCommit]], Awaitable[None]],
                 on_resubscribed: Callable[[], Awaitable[None]],
                 prefix: str = CHANNEL_PREFIX, max_outbox: int = 10_000, timeout_s: float = 2.0,
                 max_backoff_s: float = 5.0) -> None:
        self.url = url
        self.instance_id = instance_id
        self.prefix = prefix
        self.on_remote = on_remote
        self.on_resubscribed = on_resubscribed
        self.max_outbox = max_outbox
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.subscribed = asyncio.Event()
        self.gaps: set[str] = set()
        self.stats = {"published": 0, "received": 0, "publish_failures": 0, "resubscribed": 0, "dropped": 0}
        self._outbox: deque[tuple[str, int, bytes]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pub: Any = None

    def _client(self) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # no silent retries: every reconnect must go through our loops, which resync
        return aioredis.from_url(self.url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s,
                                 retry=Retry(NoBackoff(), 0), health_check_interval=max(1, int(self.timeout_s * 5)))

    async def start(self) -> None:
        self._pub = self._client()
        self._tasks = [asyncio.create_task(self._publish_loop(), name="fanout-redis-publish"),
                       asyncio.create_task(self._subscribe_loop(), name="fanout-redis-subscribe")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pub is not None:
            await self._pub.aclose()
            self._pub = None

    # --- publishing -----------------------------------------------------------------------
    def publish(self, doc_id: str, seq: int, update: bytes) -> None:
        """Queue a commit for other processes (never blocks; a full queue becomes a gap)."""
        if len(self._outbox) >= self.max_outbox:
            self.gaps.add(doc_id)
            self.stats["dropped"] += 1
        else:
            self._outbox.append((doc_id, seq, update))
        self._wake.set()

    async def _publish_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox or self.gaps:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 512))]
                gaps = set(self.gaps)
                try:
                    pipe = self._pub.pipeline(transaction=False)
                    for doc_id in gaps:
                        pipe.publish(self.prefix + doc_id, encode_notice(self.instance_id, doc_id, 0, None))
                    for doc_id, seq, update in batch:
                        pipe.publish(self.prefix + doc_id, encode_notice(self.instance_id, doc_id, seq, update))
                    await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if not self.stats["publish_failures"] or backoff == 0.05:
                        log.warning("Redis publish failed (%s: %s); local fan-out goes on, other processes "
                                    "will resync these documents", type(e).__name__, e)
                    self.stats["publish_failures"] += 1
                    self.gaps.update(d for d, _, _ in batch)
                    self.gaps.update(gaps)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    # commits queued meanwhile are gaps too: their notices would be stale
                    while self._outbox:
                        self.gaps.add(self._outbox.popleft()[0])
                    continue
                if gaps:
                    log.info("Redis publish recovered: sent resync notices for %d documents", len(gaps))
                self.gaps -= gaps
                self.stats["published"] += len(batch)
                backoff = 0.05

    # --- subscription ---------------------------------------------------------------------
    async def _subscribe_loop(self) -> None:
        async def subscribed() -> None:
            self.stats["resubscribed"] += 1
            await self.on_resubscribed()

        async def messages(batch: list[dict[str, Any]]) -> None:
            notices = self._decode(batch)
            if notices:
                self.stats["received"] += len(notices)
                await self.on_remote(notices)

        await subscribe_forever(
            self._client, lambda pubsub: pubsub.psubscribe(self.prefix + "*"), "psubscribe",
            on_subscribed=subscribed, on_messages=messages, subscribed=self.subscribed, log=log,
            lost="Redis subscription lost; local fan-out goes on, resync on reconnect",
            confirm_timeout_s=self.timeout_s, read_timeout_s=self.timeout_s * 5, max_backoff_s=self.max_backoff_s)

    def _decode(self, batch: list[dict[str, Any]]) -> list[RemoteCommit]:
        out = []
        for msg in batch:
            if msg.get("type") != "pmessage":
                continue
            try:
                notice = decode_notice(msg["data"])
            except (ValueError, UnicodeDecodeError, TypeError):
                log.warning("ignoring a malformed notice on %r", msg.get("channel"))
                continue
            if notice.origin != self.instance_id:
                out.append(notice)
        return out


class Fanout:
    """Rooms of this process, the engine listener, and the optional Redis bridge."""

    def __init__(self, engine: Any, *, redis_url: str | None = None, instance_id: str | None = None,
                 limits: Limits = Limits(), prefix: str = CHANNEL_PREFIX,
                 on_remote_job: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.engine = engine
        self.limits = limits
        self.instance_id = instance_id or uuid.uuid4().hex[:16]
        self.rooms: dict[str, Room] = {}
        #: called with a job's doc id after another process committed to it (unassignment check)
        self.on_remote_job = on_remote_job
        self.bridge = (RedisBridge(redis_url, instance_id=self.instance_id, on_remote=self._on_remote,
                                   on_resubscribed=self.resync_all, prefix=prefix) if redis_url else None)
        self._active = False

    async def start(self) -> "Fanout":
        if not self._active:
            self._active = True
            self.engine.add_listener(self.on_commit)
            if self.bridge is not None:
                await self.bridge.start()
        return self

    async def stop(self) -> None:
        self._active = False  # the engine has no remove_listener: the listener goes quiet
        if self.bridge is not None:
            await self.bridge.stop()

    async def __aenter__(self) -> "Fanout":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # --- membership -----------------------------------------------------------------------
    def join(self, doc_id: str, member: Member) -> Room:
        room = self.rooms.get(doc_id)
        if room is None:
            room = self.rooms[doc_id] = Room(doc_id, self.limits)
        room.members[member] = None
        return room

    def leave(self, room: Room, member: Member) -> None:
        room.remove(member)
        if not room.members and self.rooms.get(room.doc_id) is room:
            del self.rooms[room.doc_id]

    def members(self, doc_id: str) -> list[Member]:
        room = self.rooms.get(doc_id)
        return list(room.members) if room else []

    # --- commits ------------------------------------------------------------------------
    def on_commit(self, doc_id: str, update: bytes, seq: int, principal: Principal) -> None:
        """Engine listener: runs inside the engine's batch, so it only queues."""
        if not self._active:
            return
        room = self.rooms.get(doc_id)
        if room is not None:
            room.committed(update, seq, local=True)
        if self.bridge is not None:
            self.bridge.publish(doc_id, seq, update)

    async def catch_up(self, doc_id: str) -> None:
        """Apply what other processes committed to ``doc_id`` to this process's engine."""
        if self.bridge is not None:
            await self.engine.refresh(doc_id)

    async def _on_remote(self, notices: list[RemoteCommit]) -> None:
        for doc_id in dict.fromkeys(n.doc_id for n in notices):
            try:
                await self.engine.refresh(doc_id)
            except (SyncError, ValueError) as e:
                log.warning("refresh of %s after a remote commit failed: %s", doc_id, e)
        for n in notices:
            room = self.rooms.get(n.doc_id)
            if n.update is None:
                if room is not None:
                    await self.resync(n.doc_id)
            elif room is not None:
                room.committed(n.update, n.seq, local=False)
        if self.on_remote_job is not None:
            for doc_id in dict.fromkeys(n.doc_id for n in notices if n.doc_id.startswith("job:")):
                try:
                    await self.on_remote_job(doc_id)
                except Exception:
                    log.exception("unassignment check of %s failed", doc_id)

    async def resync(self, doc_id: str) -> None:
        """Send the whole current document to every member of its room (after a gap)."""
        room = self.rooms.get(doc_id)
        if room is None or not room.members:
            return
        principal = next(iter(room.members)).principal
        try:
            await self.engine.refresh(doc_id)
            state = (await self.engine.pull(principal, doc_id)).update
        except UnknownDocument:
            return
        except SyncError as e:
            log.warning("resync of %s failed (%s); closing its connections so they resync", doc_id, e)
            for m in list(room.members):
                m.close(1013, "resync failed: reconnect")
            return
        room.broadcast_state(state)

    async def resync_all(self) -> None:
        """After the Redis subscription was (re)established: every local room catches up."""
        for doc_id in list(self.rooms):
            await self.resync(doc_id)
