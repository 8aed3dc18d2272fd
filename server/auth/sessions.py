"""Accounts, devices and refresh-token families in SQL (``users``, ``devices``, ``refresh_tokens``).

A login starts a *family*: one chain of refresh tokens for one device. Refreshing marks the
presented token used and issues the next one in the same family. Presenting a used token
again means two parties hold the chain (a stolen token): the whole family is revoked, and
with it every access token naming it (``fam`` claim, checked on each request). Logout
revokes the family the same way.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schema import tables as t

from ..errors import Conflict, Unauthorized
from . import passwords
from .tokens import new_family_id, new_refresh_token, refresh_token_device, refresh_token_hash

__all__ = ["User", "RefreshOutcome", "Sessions", "normalize_email"]

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


class Sessions:
    """SQL side of authentication; stateless apart from the engine it uses."""

    def __init__(self, db: AsyncEngine, *, refresh_ttl_s: int) -> None:
        self.db = db
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._insert = postgresql.insert if db.dialect.name == "postgresql" else sqlite.insert

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

    async def session_state(self, user_id: str, family_id: str) -> tuple[User | None, bool]:
        """The user behind an access token and whether its family was revoked (one query)."""
        revoked = exists().where(and_(t.refresh_tokens.c.family_id == family_id,
                                      t.refresh_tokens.c.revoked_at.is_not(None)))
        q = select(t.users, revoked.label("family_revoked")).where(t.users.c.id == user_id)
        # a read: never queue behind SQLite's write lock (BEGIN IMMEDIATE is for writers)
        reader = self.db.execution_options(sqlite_begin="DEFERRED") if self.db.dialect.name == "sqlite" else self.db
        async with reader.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None, False
        return _user(row), bool(row.family_revoked)

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
        stmt = (update(t.refresh_tokens).where(t.refresh_tokens.c.family_id == family_id,
                                               t.refresh_tokens.c.revoked_at.is_(None))
                .values(revoked_at=_now()))
        if conn is not None:
            await conn.execute(stmt)
            return
        async with self.db.begin() as c:
            await c.execute(stmt)

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
