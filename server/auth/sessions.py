"""Accounts, devices and refresh-token families in SQL (``users``, ``devices``, ``refresh_tokens``).

A login starts a *family*: one chain of refresh tokens for one device. Refreshing marks the
presented token used and issues the next one in the same family. Presenting a used token
again means two parties hold the chain (a stolen token): the whole family is revoked, and
with it every access token naming it (``fam`` claim, checked on each request). Logout
revokes the family the same way.

Every authenticated request needs the user as stored (active, role) and whether its family
was revoked. :class:`SessionCache` keeps that answer per family for a short time
(``SYNCD_SESSION_CACHE_S``, default 5 s; 0 turns the cache off), so a device pushing several
times a second costs one query per TTL instead of one per request. An entry used in the last
40 % of its life is re-read in the background, so a session in use rarely waits for that query.
What may change meanwhile:

* a family revoked **by this process** (logout, refresh-token reuse, an inactive account
  found at refresh) is dropped from the cache when its revocation commits, before the
  response: the next request with that session is refused;
* with Redis (``REDIS_URL``) every revocation is also announced on a channel
  (:mod:`server.auth.notices`), and the other processes drop it as soon as they hear it; a
  process whose subscription dropped clears its whole cache when it resubscribes;
* a revocation elsewhere without Redis, or a user disabled or given another role directly in
  the database (there is no API for either), is seen at the latest when the entry expires:
  after **at most the TTL** (5 s by default). :meth:`Sessions.invalidate_user` is the hook
  for a process that changes a user.

A query that started before an invalidation never refills the cache with what it read
(``SessionCache.epoch``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from sqlalchemy import and_, bindparam, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema import tables as t

from ..errors import Conflict, Unauthorized
from . import passwords
from .tokens import new_family_id, new_refresh_token, refresh_token_device, refresh_token_hash

__all__ = ["User", "RefreshOutcome", "Sessions", "SessionCache", "normalize_email", "DEFAULT_SESSION_CACHE_S",
           "session_cache_ttl_from_env"]

log = logging.getLogger("server.auth.sessions")

#: how long a session check is reused (seconds); env ``SYNCD_SESSION_CACHE_S``
DEFAULT_SESSION_CACHE_S = 5.0

INVALID_CREDENTIALS = "invalid email or password"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    role: str
    active: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name, "role": self.role}


def _user(row: Any) -> User:
    return User(row.id, row.email, row.name, row.role, bool(row.active))


class RefreshOutcome(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RefreshOutcome
    user: User | None = None
    device_id: str | None = None
    family_id: str | None = None
    token: str | None = None


def session_cache_ttl_from_env() -> float:
    """``SYNCD_SESSION_CACHE_S`` (seconds, >= 0), else :data:`DEFAULT_SESSION_CACHE_S`."""
    raw = os.environ.get("SYNCD_SESSION_CACHE_S", "").strip()
    if not raw:
        return DEFAULT_SESSION_CACHE_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SYNCD_SESSION_CACHE_S must be a number of seconds, not {raw!r}") from None
    if not 0 <= value <= 300:
        raise ValueError("SYNCD_SESSION_CACHE_S must be between 0 and 300 seconds")
    return value


SessionState = tuple[User | None, bool]


class SessionCache:
    """family id -> (user id, :data:`SessionState`) for ``ttl_s`` seconds, at most ``max_entries``.

    ``epoch`` grows with every invalidation: a reader takes it before its query and
    :meth:`put` ignores the answer if an invalidation happened meanwhile (the query may have
    read the state from before the change).
    """

    def __init__(self, ttl_s: float, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.epoch = 0
        self._entries: dict[str, tuple[float, str, SessionState]] = {}
        self.stats = {"hits": 0, "misses": 0, "invalidations": 0}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str, family_id: str) -> SessionState | None:
        found = self.peek(user_id, family_id)
        return None if found is None else found[0]

    def peek(self, user_id: str, family_id: str) -> tuple[SessionState, float] | None:
        """The cached state and the seconds it stays valid, if any."""
        e = self._entries.get(family_id)
        if e is None or e[1] != user_id:
            self.stats["misses"] += 1
            return None
        left = e[0] - self.clock()
        if left <= 0:
            del self._entries[family_id]
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return e[2], left

    def put(self, epoch: int, user_id: str, family_id: str, state: SessionState) -> None:
        if epoch != self.epoch or self.ttl_s <= 0:
            return
        if family_id not in self._entries and len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[family_id] = (self.clock() + self.ttl_s, user_id, state)

    def _evict(self) -> None:
        now = self.clock()
        stale = [f for f, e in self._entries.items() if e[0] <= now]
        if not stale:  # all fresh: drop the oldest quarter (insertion order)
            stale = [f for f, _ in zip(self._entries, range(max(1, self.max_entries // 4)))]
        for f in stale:
            del self._entries[f]

    def invalidate_families(self, family_ids: "list[str] | set[str] | tuple[str, ...]") -> None:
        self.epoch += 1
        self.stats["invalidations"] += 1
        for f in family_ids:
            self._entries.pop(f, None)

    def invalidate_user(self, user_id: str) -> None:
        self.epoch += 1
        self.stats["invalidations"] += 1
        for f in [f for f, e in self._entries.items() if e[1] == user_id]:
            del self._entries[f]

    def clear(self) -> None:
        self.epoch += 1
        self.stats["invalidations"] += 1
        self._entries.clear()


class _Abandoned(Exception):
    """The shared session query failed or was cancelled."""


#: called after a change this process made: ("family", family id) or ("user", user id)
Notifier = Callable[[str, str], Awaitable[None]]

_rt = t.refresh_tokens
#: one statement, built once: the user and whether the family has a revoked token
_SESSION_STATE = (select(t.users, exists().where(and_(_rt.c.family_id == bindparam("family_id"),
                                                      _rt.c.revoked_at.is_not(None))).label("family_revoked"))
                  .where(t.users.c.id == bindparam("user_id")))


class Sessions:
    """SQL side of authentication, and the short-lived cache of session checks."""

    #: an entry used in the last part of its TTL (this share) is re-read in the background
    REFRESH_AHEAD = 0.4
    #: background re-reads asked for within this window share one read (two queries for the
    #: whole batch instead of a connection, a transaction and a query per session: with 500
    #: devices that was ~170 reads a second at the default TTL); the window is far shorter
    #: than the refresh-ahead part of the TTL, so entries still never outlive their expiry
    REFRESH_BATCH_S = 0.05
    REFRESH_BATCH_MAX = 500

    def __init__(self, db: AsyncEngine, *, refresh_ttl_s: int, cache_ttl_s: float | None = None) -> None:
        self.db = db
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._insert = postgresql.insert if db.dialect.name == "postgresql" else sqlite.insert
        self.cache = SessionCache(session_cache_ttl_from_env() if cache_ttl_s is None else cache_ttl_s)
        #: set by :mod:`server.auth.notices` when Redis carries invalidations to other processes
        self.notifiers: list[Notifier] = []
        self._inflight: dict[tuple[str, str, int], asyncio.Future[SessionState]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        #: background re-reads waiting for the next batch: key -> the future misses may share
        self._batch: dict[tuple[str, str, int], asyncio.Future[SessionState]] = {}
        self._batch_task: asyncio.Task[None] | None = None
        # Session checks are single reads: on SQLite a deferred transaction (never waits for the
        # engine's write lock), on PostgreSQL autocommit (no BEGIN / ROLLBACK round trips).
        # Built once: execution_options() makes a new engine object per call.
        if db.dialect.name == "sqlite":
            self._reader = db.execution_options(sqlite_begin="DEFERRED")
        else:
            self._reader = db.execution_options(isolation_level="AUTOCOMMIT")

    # --- users ---------------------------------------------------------------------------
    async def authenticate(self, email: str, password: str) -> User:
        """The user with these credentials; Unauthorized with one message for every failure.

        An unknown email still costs one hash verification, so timing does not tell
        whether the account exists.
        """
        async with self.db.connect() as conn:
            row = (await conn.execute(select(t.users).where(func.lower(t.users.c.email) == normalize_email(email)))).first()
        if row is None or not row.active or not row.password_hash:
            await asyncio.to_thread(passwords.verify_dummy, password)
            raise Unauthorized(INVALID_CREDENTIALS, code="INVALID_CREDENTIALS")
        if not await asyncio.to_thread(passwords.verify_password, row.password_hash, password):
            raise Unauthorized(INVALID_CREDENTIALS, code="INVALID_CREDENTIALS")
        if passwords.needs_rehash(row.password_hash):
            new_hash = await asyncio.to_thread(passwords.hash_password, password)
            async with self.db.begin() as conn:
                await conn.execute(t.users.update().where(t.users.c.id == row.id).values(password_hash=new_hash))
        return _user(row)

    async def get_user(self, user_id: str) -> User | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(t.users).where(t.users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def session_state(self, user_id: str, family_id: str) -> SessionState:
        """The user behind an access token and whether its family was revoked (one query,
        or none within the cache's TTL)."""
        cached = self.cache.peek(user_id, family_id)
        if cached is not None:
            state, left = cached
            if left < self.cache.ttl_s * self.REFRESH_AHEAD:
                # in use and about to expire: re-read it now, off this request's path (the entry
                # is still never used past its expiry, so the bound is unchanged)
                self._refresh_in_background(user_id, family_id)
            return state
        # Requests of one session that miss together share one query, unless an invalidation
        # came in between (the key holds the epoch: a later request never reuses an older read).
        epoch = self.cache.epoch
        key = (user_id, family_id, epoch)
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except _Abandoned:  # the first one failed or was cancelled: ask ourselves
                return await self._query_state(user_id, family_id, epoch)
        fut: asyncio.Future[SessionState] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            state = await self._query_state(user_id, family_id, epoch)
        except BaseException:
            fut.set_exception(_Abandoned())
            fut.exception()  # retrieved: no warning when nobody else was waiting
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(state)
        return state

    def _refresh_in_background(self, user_id: str, family_id: str) -> None:
        epoch = self.cache.epoch
        key = (user_id, family_id, epoch)
        if key in self._inflight:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SessionState] = loop.create_future()
        self._inflight[key] = fut  # a miss of the same session meanwhile waits for this read
        self._batch[key] = fut
        if self._batch_task is None:
            task = loop.create_task(self._refresh_batch(), name="session-refresh")
            self._batch_task = task
            self._refreshing.add(task)
            task.add_done_callback(self._refreshing.discard)

    async def _refresh_batch(self) -> None:
        """Re-read, together, the sessions asked for during the batch window."""
        batch: dict[tuple[str, str, int], asyncio.Future[SessionState]] = {}
        try:
            await asyncio.sleep(self.REFRESH_BATCH_S)
            batch, self._batch, self._batch_task = self._batch, {}, None
            states = await self._read_states(sorted({(u, f) for u, f, _ in batch}))
            for (u, f, epoch), fut in batch.items():
                state = states[(u, f)]
                self.cache.put(epoch, u, f, state)  # ignored if invalidated meanwhile
                fut.set_result(state)
        except BaseException as e:
            if self._batch_task is asyncio.current_task():  # cancelled while waiting
                batch, self._batch, self._batch_task = self._batch, {}, None
            for fut in batch.values():
                if not fut.done():
                    fut.set_exception(_Abandoned())
                    fut.exception()  # retrieved: no warning when nobody else was waiting
            if isinstance(e, Exception):  # the next request past the expiry asks again
                log.warning("refreshing %d session check(s) failed: %s: %s", len(batch), type(e).__name__, e)
            else:
                raise
        finally:
            for key in batch:
                self._inflight.pop(key, None)

    async def _query_state(self, user_id: str, family_id: str, epoch: int) -> SessionState:
        state = await self._read_state(user_id, family_id)
        self.cache.put(epoch, user_id, family_id, state)  # ignored if invalidated meanwhile
        return state

    async def _read_state(self, user_id: str, family_id: str) -> SessionState:
        async with self._reader.connect() as conn:
            row = (await conn.execute(_SESSION_STATE, {"user_id": user_id, "family_id": family_id})).first()
        return (None, False) if row is None else (_user(row), bool(row.family_revoked))

    async def _read_states(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], SessionState]:
        """:meth:`_read_state` of many sessions: the users, then the revoked families, in two
        queries per :attr:`REFRESH_BATCH_MAX` sessions on one reader connection."""
        out: dict[tuple[str, str], SessionState] = {}
        async with self._reader.connect() as conn:
            for i in range(0, len(pairs), self.REFRESH_BATCH_MAX):
                chunk = pairs[i:i + self.REFRESH_BATCH_MAX]
                users = {r.id: _user(r) for r in (await conn.execute(
                    select(t.users).where(t.users.c.id.in_(sorted({u for u, _ in chunk}))))).all()}
                revoked = set((await conn.execute(
                    select(_rt.c.family_id).where(_rt.c.family_id.in_(sorted({f for _, f in chunk})),
                                                  _rt.c.revoked_at.is_not(None)).distinct())).scalars())
                for u, f in chunk:
                    user = users.get(u)
                    out[(u, f)] = (None, False) if user is None else (user, f in revoked)
        return out

    async def families_revoked(self, family_ids: "list[str] | set[str] | tuple[str, ...]") -> None:
        """After a revocation committed: drop the families from this process's cache, tell the others."""
        if not family_ids:
            return
        self.cache.invalidate_families(family_ids)
        for fam in family_ids:
            await self._notify("family", fam)

    async def invalidate_user(self, user_id: str) -> None:
        """After a change to a user (disabled, role) committed: forget its cached sessions here
        and in the other processes (with Redis)."""
        self.cache.invalidate_user(user_id)
        await self._notify("user", user_id)

    async def _notify(self, kind: str, ident: str) -> None:
        for notify in self.notifiers:
            try:
                await notify(kind, ident)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the TTL bounds what the other processes miss
                log.warning("could not announce the invalidation of %s %s: %s: %s", kind, ident, type(e).__name__, e)

    # --- devices -------------------------------------------------------------------------
    async def register_device(self, conn: AsyncConnection, device_id: str, user_id: str, name: str | None) -> None:
        """Record the device for this user; Conflict if the id belongs to another user."""
        now = _now()
        await conn.execute(self._insert(t.devices).values(
            id=device_id, user_id=user_id, name=name, created_at=now, last_seen_at=now,
        ).on_conflict_do_nothing(index_elements=[t.devices.c.id]))
        owner = (await conn.execute(select(t.devices.c.user_id).where(t.devices.c.id == device_id))).scalar_one()
        if owner != user_id:
            raise Conflict("this device id is registered to another account; log in without "
                           "device_id to get a new one", code="DEVICE_CONFLICT")
        values: dict[str, Any] = {"last_seen_at": now}
        if name:
            values["name"] = name
        await conn.execute(t.devices.update().where(t.devices.c.id == device_id).values(**values))

    # --- refresh tokens ------------------------------------------------------------------
    async def _insert_token(self, conn: AsyncConnection, user_id: str, family_id: str, device_id: str) -> str:
        token = new_refresh_token(device_id)
        now = _now()
        await conn.execute(t.refresh_tokens.insert().values(
            id=refresh_token_hash(token), family_id=family_id, user_id=user_id,
            expires_at=now + self.refresh_ttl, created_at=now))
        return token

    async def start_session(self, user: User, device_id: str, device_name: str | None) -> tuple[str, str]:
        """Register the device and open a new family; returns (family_id, refresh_token)."""
        family = new_family_id()
        async with self.db.begin() as conn:
            await self.register_device(conn, device_id, user.id, device_name)
            token = await self._insert_token(conn, user.id, family, device_id)
        return family, token

    async def revoke_family(self, family_id: str, conn: AsyncConnection | None = None) -> None:
        """Revoke every token of the family. With ``conn`` (the caller's transaction) the caller
        must call :meth:`families_revoked` once it committed."""
        stmt = (update(t.refresh_tokens).where(t.refresh_tokens.c.family_id == family_id,
                                               t.refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=_now()))
        if conn is not None:
            self.cache.invalidate_families((family_id,))  # again after the commit (caller)
            await conn.execute(stmt)
            return
        async with self.db.begin() as c:
            await c.execute(stmt)
        await self.families_revoked((family_id,))

    async def family_of(self, token: str) -> tuple[str, str] | None:
        """(family_id, user_id) of a refresh token, if it exists."""
        async with self.db.connect() as conn:
            row = (await conn.execute(select(t.refresh_tokens.c.family_id, t.refresh_tokens.c.user_id).where(
                t.refresh_tokens.c.id == refresh_token_hash(token)))).first()
        return None if row is None else (row[0], row[1])

    async def rotate(self, token: str) -> Rotation:
        """Spend a refresh token and issue its successor; detects reuse (revokes the family).

        The conditional ``UPDATE ... WHERE used_at IS NULL`` makes two concurrent uses of one
        token race safely: exactly one wins, the other is treated as reuse.
        """
        rot = await self._rotate(token)
        if rot.outcome in (RefreshOutcome.REUSED, RefreshOutcome.INACTIVE) and rot.family_id:
            await self.families_revoked((rot.family_id,))  # committed: the access tokens stop now
        return rot

    async def _rotate(self, token: str) -> Rotation:
        device_id = refresh_token_device(token)
        if device_id is None:
            return Rotation(RefreshOutcome.UNKNOWN)
        now = _now()
        th = refresh_token_hash(token)
        async with self.db.begin() as conn:
            row = (await conn.execute(select(t.refresh_tokens).where(t.refresh_tokens.c.id == th))).first()
            if row is None:
                return Rotation(RefreshOutcome.UNKNOWN)
            fam = row.family_id
            if row.revoked_at is not None:
                return Rotation(RefreshOutcome.REVOKED, family_id=fam, device_id=device_id)
            if row.used_at is not None:
                await self.revoke_family(fam, conn)
                return Rotation(RefreshOutcome.REUSED, family_id=fam, device_id=device_id)
            if row.expires_at <= now:
                return Rotation(RefreshOutcome.EXPIRED, family_id=fam, device_id=device_id)
            urow = (await conn.execute(select(t.users).where(t.users.c.id == row.user_id))).first()
            owner = (await conn.execute(select(t.devices.c.user_id).where(t.devices.c.id == device_id))).scalar()
            if urow is None or not urow.active or owner != row.user_id:
                await self.revoke_family(fam, conn)
                return Rotation(RefreshOutcome.INACTIVE, family_id=fam, device_id=device_id)
            res = await conn.execute(update(t.refresh_tokens).where(
                t.refresh_tokens.c.id == th, t.refresh_tokens.c.used_at.is_(None),
                t.refresh_tokens.c.revoked_at.is_(None)).values(used_at=now))
            if res.rowcount != 1:
                await self.revoke_family(fam, conn)
                return Rotation(RefreshOutcome.REUSED, family_id=fam, device_id=device_id)
            new = await self._insert_token(conn, row.user_id, fam, device_id)
            await conn.execute(t.devices.update().where(t.devices.c.id == device_id).values(last_seen_at=now))
        return Rotation(RefreshOutcome.OK, _user(urow), device_id, fam, new)

    async def count_active_tokens(self, family_id: str) -> int:
        """Live (unused, unrevoked) tokens of a family; for diagnostics and tests."""
        async with self.db.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(t.refresh_tokens).where(
                t.refresh_tokens.c.family_id == family_id, t.refresh_tokens.c.used_at.is_(None),
                t.refresh_tokens.c.revoked_at.is_(None)))).scalar_one()
