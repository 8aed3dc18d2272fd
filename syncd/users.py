"""``syncd user add|list``: server accounts (email, name, role, argon2id password hash).

    syncd user add EMAIL --role owner|office|crew --name NAME [--password-stdin] [--json]
    syncd user list [--json]

Without ``--password-stdin`` the password is prompted twice (hidden). Emails are stored
normalized (lowercase); adding an email that exists fails with exit status 1, invalid input
with exit status 2. The schema must exist (``syncd migrate``).

Register with ``cli.add_command(user)``; the library functions :func:`add_user` and
:func:`list_users` serve scripts and tests.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

import click
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import tables as t
from schema.models import ROLES

from .output import emit, emit_table, fail, json_option

__all__ = ["user", "add_user", "list_users", "normalize_account_email", "UserExists", "InvalidAccount"]


class UserExists(Exception):
    """An account with this email exists already."""


class InvalidAccount(ValueError):
    """The email, name, role or password is not acceptable."""


def normalize_account_email(email: str) -> str:
    """Validate an account email and return its stored form (lowercase); InvalidAccount if bad."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as e:
        raise InvalidAccount(f"not a valid email address: {e}") from None


def _check(name: str, role: str, password: str) -> str:
    from server.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS

    if role not in ROLES:
        raise InvalidAccount(f"role must be one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidAccount("the name must be 1 to 200 characters")
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidAccount(f"the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    return name


async def add_user(db: AsyncEngine, email: str, name: str, role: str, password: str) -> dict[str, Any]:
    """Create an account; raise InvalidAccount or UserExists."""
    from server.auth.passwords import hash_password

    email = normalize_account_email(email)
    name = _check(name, role, password)
    password_hash = await asyncio.to_thread(hash_password, password)
    row = {"id": str(uuid.uuid4()), "email": email, "name": name, "role": role, "password_hash": password_hash,
           "active": True, "created_at": datetime.now(timezone.utc)}
    try:
        async with db.begin() as conn:
            taken = (await conn.execute(select(t.users.c.id).where(func.lower(t.users.c.email) == email))).first()
            if taken is not None:
                raise UserExists(f"a user with email {email} already exists")
            await conn.execute(t.users.insert().values(**row))
    except IntegrityError:  # a concurrent add of the same email
        raise UserExists(f"a user with email {email} already exists") from None
    return {k: row[k] for k in ("id", "email", "name", "role", "active", "created_at")}


async def list_users(db: AsyncEngine) -> list[dict[str, Any]]:
    q = select(t.users.c.id, t.users.c.email, t.users.c.name, t.users.c.role, t.users.c.active,
               t.users.c.created_at).order_by(t.users.c.email)
    async with db.connect() as conn:
        return [{str(k): v for k, v in r._mapping.items()} for r in (await conn.execute(q)).all()]


def _database_url(ctx: click.Context) -> str | None:
    import os

    obj = ctx.find_root().obj or {}
    return obj.get("database_url") or os.environ.get("DATABASE_URL") or None


def _run(ctx: click.Context, as_json: bool, fn: Any, *args: Any) -> Any:
    from schema.db import create_engine

    async def go() -> Any:
        db = create_engine(_database_url(ctx))
        try:
            return await fn(db, *args)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except (OperationalError, ProgrammingError) as e:
        msg = str(e.orig if getattr(e, "orig", None) is not None else e).lower()
        if "no such table" in msg or "does not exist" in msg:
            fail("the database has no schema yet; run `syncd migrate` first", as_json)
        fail(f"database error: {type(e).__name__}: {e.orig if getattr(e, 'orig', None) is not None else e}",
             as_json)


@click.group()
def user() -> None:
    """Manage user accounts (owner, office, crew)."""


@user.command("add")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(ROLES), help="The user's role.")
@click.option("--name", required=True, help="Display name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@json_option
@click.pass_context
def add_command(ctx: click.Context, email: str, role: str, name: str, password_stdin: bool, as_json: bool) -> None:
    """Create the account EMAIL."""
    try:
        email = normalize_account_email(email)
    except InvalidAccount as e:
        fail(str(e), as_json, code=2, error_code="INVALID_INPUT")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    try:
        created = _run(ctx, as_json, add_user, email, name, role, password)
    except InvalidAccount as e:
        fail(str(e), as_json, code=2, error_code="INVALID_INPUT")
    except UserExists as e:
        fail(str(e), as_json, code=1, error_code="USER_EXISTS")
    emit(created, as_json, f"created {created['role']} {created['email']} (id {created['id']})")


@user.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List the accounts."""
    rows = _run(ctx, as_json, list_users)
    emit_table("users", ["email", "name", "role", "active", "created", "id"],
               [(r["email"], r["name"], r["role"], "yes" if r["active"] else "no",
                 r["created_at"].strftime("%Y-%m-%d %H:%M") if r["created_at"] else "", r["id"])
                for r in rows], rows, as_json)
