"""``syncd user add|list`` against real databases."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner
from sqlalchemy import select

from schema import tables as t
from schema.db import create_engine
from server.auth.passwords import verify_password
from syncd.users import user


async def _invoke(db_url: str, args: list[str], input: str | None = None):
    runner = CliRunner(env={"COLUMNS": "200"})
    # the command runs its own event loop: give it a thread
    return await asyncio.to_thread(runner.invoke, user, args, input=input, obj={"database_url": db_url})


async def _stored(db_url: str, email: str):
    db = create_engine(db_url)
    try:
        async with db.connect() as conn:
            return (await conn.execute(select(t.users).where(t.users.c.email == email))).first()
    finally:
        await db.dispose()


async def test_add_with_password_on_stdin_then_list(db_url):
    r = await _invoke(db_url, ["add", "Dana@Example.com", "--role", "office", "--name", "Dana Office",
                               "--password-stdin", "--json"], input="s3cret-pass\n")
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert created["email"] == "dana@example.com" and created["role"] == "office"
    row = await _stored(db_url, "dana@example.com")
    assert row.name == "Dana Office" and row.active
    assert row.password_hash.startswith("$argon2id$") and verify_password(row.password_hash, "s3cret-pass")
    r = await _invoke(db_url, ["list", "--json"])
    assert r.exit_code == 0
    listed = json.loads(r.stdout)
    assert [(u["email"], u["role"]) for u in listed] == [("dana@example.com", "office")]
    assert "password_hash" not in listed[0]
    r = await _invoke(db_url, ["list"])
    assert r.exit_code == 0 and "dana@example.com" in r.stdout and "Dana Office" in r.stdout


async def test_add_prompts_twice_for_the_password(db_url):
    r = await _invoke(db_url, ["add", "eve@example.com", "--role", "crew", "--name", "Eve"],
                      input="first-secret\nfirst-secret\n")
    assert r.exit_code == 0, r.output
    assert "created crew eve@example.com" in r.stdout
    assert verify_password((await _stored(db_url, "eve@example.com")).password_hash, "first-secret")


async def test_mismatched_prompts_store_nothing(db_url):
    r = await _invoke(db_url, ["add", "fay@example.com", "--role", "crew", "--name", "Fay"],
                      input="one-secret\nother-secret\n")
    assert r.exit_code != 0
    assert await _stored(db_url, "fay@example.com") is None


async def test_duplicate_email_is_refused(db_url):
    args = ["add", "gus@example.com", "--role", "owner", "--name", "Gus", "--password-stdin"]
    assert (await _invoke(db_url, args, input="password-1\n")).exit_code == 0
    r = await _invoke(db_url, ["add", "GUS@example.com", "--role", "crew", "--name", "Other", "--password-stdin"],
                      input="password-2\n")
    assert r.exit_code == 1
    assert "already exists" in r.stderr
    row = await _stored(db_url, "gus@example.com")
    assert row.role == "owner" and verify_password(row.password_hash, "password-1")


async def test_bad_input_is_refused_with_a_clear_message(db_url):
    cases = [
        (["add", "not-an-email", "--role", "crew", "--name", "X", "--password-stdin"], "long enough pw", "email"),
        (["add", "h@example.com", "--role", "admin", "--name", "X", "--password-stdin"], "long enough pw", "admin"),
        (["add", "h@example.com", "--role", "crew", "--name", "  ", "--password-stdin"], "long enough pw", "name"),
        (["add", "h@example.com", "--role", "crew", "--name", "X", "--password-stdin"], "short", "password"),
        (["add", "h@example.com", "--role", "crew", "--password-stdin"], "long enough pw", "--name"),
    ]
    for args, password, word in cases:
        r = await _invoke(db_url, args, input=password + "\n")
        assert r.exit_code == 2, (args, r.output)
        assert word in r.output, (args, r.output)
    db = create_engine(db_url)
    try:
        async with db.connect() as conn:
            assert (await conn.execute(select(t.users))).all() == []
    finally:
        await db.dispose()


async def test_an_unmigrated_database_gets_a_clear_error(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    r = await _invoke(url, ["list"])
    assert r.exit_code == 1 and "syncd migrate" in r.stderr
