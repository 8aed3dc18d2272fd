"""A storage outage is a 503 the client retries, never an opaque 500."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from server.errors import render


def test_locked_or_unreachable_database_is_503_with_retry_after():
    r = render(OperationalError("INSERT ...", {}, Exception("database is locked")))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert b'"UNAVAILABLE"' in r.body
    assert render(RuntimeError("bug")).status_code == 500
