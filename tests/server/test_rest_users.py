"""``GET /api/users``: names for the screens; emails only for office and owner."""

from __future__ import annotations

from test_rest_kit import caller, start  # type: ignore[import-not-found]


async def test_users_list_shows_names_and_hides_emails_from_crews(make_harness):
    h = await start(make_harness)
    office = await caller(h, "office")
    crew = await caller(h, "crew")
    seen = await office.ok("GET", "/api/users")
    ids = {u["id"] for u in seen}
    assert office.id in ids and crew.id in ids
    assert all(u["email"] for u in seen)
    r = await office.get("/api/users", role="crew")
    assert r.status_code == 200 and {u["role"] for u in r.json()["data"]} == {"crew"}
    as_crew = await crew.ok("GET", "/api/users")
    assert {u["id"] for u in as_crew} == ids and all(u["email"] is None for u in as_crew)
    r = await crew.get("/api/users", role="janitor")
    assert r.status_code == 422
    h.client.cookies.clear()  # no session at all
    r = await h.client.get("/api/users")
    assert r.status_code == 401
