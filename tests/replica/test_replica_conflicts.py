"""The brief's conflict cases, played by real replicas through a relay."""

from __future__ import annotations

import pytest

from replica import Replica

from replica_relay import Relay  # type: ignore[import-not-found]


async def settle(relay: Relay, *replicas: Replica) -> None:
    """Sync everyone until every device has everything (two rounds suffice)."""
    for _ in range(2):
        for r in replicas:
            report = await r.sync(relay.transport(r.device_id))
            report.raise_for_errors()


def same_everywhere(job_id: str, *replicas: Replica) -> dict:
    views = [r.job(job_id) for r in replicas]
    assert all(v == views[0] for v in views)
    return views[0]


@pytest.fixture
async def site(open_replica, relay: Relay):
    """An office-owned scheduled job, a company owner and two crew devices, all in sync."""
    office = await open_replica("office", role="office")
    owner = await open_replica("owner", role="owner")
    crew1 = await open_replica("crew1", role="crew")
    crew2 = await open_replica("crew2", role="crew")
    cid = await office.create_customer(name="Ann", address="1 Main St")
    jid = await office.create_job(cid, "Basement finish", status="scheduled")
    await office.assign(jid, [crew1.user_id, crew2.user_id])
    await settle(relay, office, owner, crew1, crew2)
    return jid, office, owner, crew1, crew2


@pytest.mark.parametrize("boss", ["owner", "office"])
@pytest.mark.parametrize("crew_first", [True, False])
async def test_owner_on_hold_beats_offline_crew_in_progress(site, relay, boss, crew_first):
    jid, office, owner, crew1, crew2 = site
    boss_replica = owner if boss == "owner" else office  # role owner, or the job's owner_id
    await crew1.set_status(jid, "in_progress")  # offline, unaware
    await boss_replica.set_status(jid, "on_hold")
    first, second = (crew1, boss_replica) if crew_first else (boss_replica, crew1)
    await first.push(relay.transport(first.device_id))
    await second.push(relay.transport(second.device_id))
    await settle(relay, office, owner, crew1, crew2)
    assert same_everywhere(jid, office, owner, crew1, crew2)["status"] == "on_hold"
    e = crew1.explain(f"job:{jid}", "status")
    assert e["concurrent"] and e["value"] == "on_hold"
    assert {c["value"] for c in e["candidates"]} == {"on_hold", "in_progress"}


async def test_crew_that_saw_on_hold_then_resumes_wins(site, relay):
    jid, office, owner, crew1, crew2 = site
    await owner.set_status(jid, "on_hold")
    await settle(relay, office, owner, crew1, crew2)
    assert crew1.job(jid)["status"] == "on_hold"
    await crew1.set_status(jid, "in_progress")  # it saw the owner's write: supersedes it
    await settle(relay, office, owner, crew1, crew2)
    assert same_everywhere(jid, office, owner, crew1, crew2)["status"] == "in_progress"
    assert not crew1.explain(f"job:{jid}", "status")["concurrent"]


async def test_two_crews_add_the_same_material_offline(site, relay):
    jid, office, owner, crew1, crew2 = site
    m1 = await crew1.add_material(jid, "drywall screws", quantity=2, unit="box")
    m2 = await crew2.add_material(jid, "drywall screws", quantity=1, unit="box")
    await settle(relay, office, owner, crew1, crew2)
    mats = same_everywhere(jid, office, owner, crew1, crew2)["materials"]
    assert sorted(m["id"] for m in mats) == sorted([m1, m2])
    assert {m["name"] for m in mats} == {"drywall screws"}
    assert sorted(m["quantity"] for m in mats) == [1.0, 2.0]


@pytest.mark.parametrize("remover_first", [True, False])
async def test_edit_beats_concurrent_remove(site, relay, remover_first):
    jid, office, owner, crew1, crew2 = site
    mid = await office.add_material(jid, "2x4 studs", quantity=20)
    await settle(relay, office, owner, crew1, crew2)
    await office.remove_material(jid, mid)  # the office drops it from the list...
    await crew1.update_material(jid, mid, purchased=True)  # ...while the crew, offline, buys it
    first, second = (office, crew1) if remover_first else (crew1, office)
    await first.push(relay.transport(first.device_id))
    await second.push(relay.transport(second.device_id))
    await settle(relay, office, owner, crew1, crew2)
    mats = same_everywhere(jid, office, owner, crew1, crew2)["materials"]
    assert [(m["id"], m["purchased"], m["quantity"]) for m in mats] == [(mid, True, 20.0)]


async def test_remove_that_saw_every_edit_removes_everywhere(site, relay):
    jid, office, owner, crew1, crew2 = site
    mid = await office.add_material(jid, "2x4 studs")
    await settle(relay, office, owner, crew1, crew2)
    await crew1.update_material(jid, mid, purchased=True)
    await settle(relay, office, owner, crew1, crew2)
    await office.remove_material(jid, mid)
    await settle(relay, office, owner, crew1, crew2)
    assert same_everywhere(jid, office, owner, crew1, crew2)["materials"] == []


async def test_concurrent_field_edits_resolve_identically(site, relay):
    jid, office, owner, crew1, crew2 = site
    await office.update_job(jid, description="from the office")
    await owner.update_job(jid, description="from the owner")
    await crew1.add_note(jid, "crew1 note")
    await crew2.add_note(jid, "crew2 note")
    await settle(relay, office, owner, crew1, crew2)
    view = same_everywhere(jid, office, owner, crew1, crew2)
    assert view["description"] in ("from the office", "from the owner")
    assert sorted(n["body"] for n in view["notes"]) == ["crew1 note", "crew2 note"]
    assert view["notes"] == sorted(view["notes"], key=lambda n: (n["time"], n["device"]))
