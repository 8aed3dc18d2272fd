"""Push and pull through a relay: outbox semantics, fallbacks, clock, partial replication."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

from conflict_rules.hlc import format_ts, parse_ts
from syncd.errors import Forbidden, Unavailable, UnknownDocument
from syncd.protocol import PullResult

from replica import NotIntegrable, Replica

from replica_relay import Relay  # type: ignore[import-not-found]


async def office_with_job(open_replica, name="office") -> tuple[Replica, str, str]:
    r = await open_replica(name, role="office")
    cid = await r.create_customer(name="Ann", phone="555 0101")
    jid = await r.create_job(cid, "Kitchen")
    return r, cid, jid


async def test_two_replicas_converge(open_replica, relay: Relay):
    a, cid, jid = await office_with_job(open_replica, "a")
    b = await open_replica("b", role="office")
    await a.sync(relay.transport(a.device_id))
    report = await b.sync(relay.transport(b.device_id))
    assert sorted(report.pull.changed) == sorted([f"customer:{cid}", f"job:{jid}"])
    mid = await b.add_material(jid, "2x4 studs", quantity=20)
    await b.update_customer(cid, address="1 Main St")
    await a.add_note(jid, "call before coming")
    await b.sync(relay.transport(b.device_id))
    await a.sync(relay.transport(a.device_id))
    await b.sync(relay.transport(b.device_id))
    assert a.job(jid) == b.job(jid)
    assert a.customer(cid) == b.customer(cid) == {"id": cid, "name": "Ann", "phone": "555 0101",
                                                  "address": "1 Main St"}
    assert [m["id"] for m in a.job(jid)["materials"]] == [mid]
    assert await a.pending() == [] and await b.pending() == []


async def test_push_sends_one_merged_update_per_doc_and_acks_it(open_replica, relay: Relay):
    r, cid, jid = await office_with_job(open_replica)
    await r.add_material(jid, "studs")
    await r.add_note(jid, "hi")
    report = await r.push(relay.transport(r.device_id))
    assert report.ok and report.pushed == {f"customer:{cid}": 1, f"job:{jid}": 3}
    assert [(d, len(relay.logs[d])) for d in (f"customer:{cid}", f"job:{jid}")] == [
        (f"customer:{cid}", 1), (f"job:{jid}", 1)]
    assert await r.pending() == []
    assert (await r.push(relay.transport(r.device_id))).pushed == {}  # nothing left to send


class LossyTransport:
    """The relay stores the first push, but its response is lost on the way back."""

    def __init__(self, relay: Relay, device: str) -> None:
        self.inner, self.lost = relay.transport(device), False

    async def push(self, doc_id, update):
        ack = await self.inner.push(doc_id, update)
        if not self.lost:
            self.lost = True
            raise ConnectionResetError("response lost")
        return ack

    async def pull(self, doc_id, state_vector, since_seq):
        return await self.inner.pull(doc_id, state_vector, since_seq)

    async def list_docs(self):
        return await self.inner.list_docs()


async def test_lost_ack_is_resent_and_acked_as_duplicate(open_replica, relay: Relay):
    r, cid, jid = await office_with_job(open_replica)
    t = LossyTransport(relay, r.device_id)
    try:
        await r.push(t)
    except ConnectionResetError:
        pass
    assert len(await r.pending()) == 2  # the relay has the customer, the device does not know
    await r.close()
    r = await open_replica("office")
    report = await r.push(t)
    assert report.duplicates == [f"customer:{cid}"] and report.pushed == {f"customer:{cid}": 1, f"job:{jid}": 1}
    assert await r.pending() == []
    assert (len(relay.logs[f"customer:{cid}"]), len(relay.logs[f"job:{jid}"])) == (1, 1)


async def test_refused_doc_keeps_its_updates_and_others_go_on(open_replica, relay: Relay):
    r, cid, jid = await office_with_job(open_replica)
    relay.refuse[f"job:{jid}"] = Forbidden("not yours")
    report = await r.push(relay.transport(r.device_id))
    assert not report.ok and isinstance(report.errors[f"job:{jid}"], Forbidden)
    assert report.pushed == {f"customer:{cid}": 1}
    assert [d for _, d, _ in await r.pending()] == [f"job:{jid}"]
    relay.refuse[f"job:{jid}"] = Unavailable("try later")
    await r.add_note(jid, "still offline-ish")
    assert isinstance((await r.push(relay.transport(r.device_id))).errors[f"job:{jid}"], Unavailable)
    assert len(await r.pending()) == 2
    del relay.refuse[f"job:{jid}"]
    report = await r.push(relay.transport(r.device_id))
    assert report.ok and report.pushed == {f"job:{jid}": 2}
    b = await open_replica("b")
    await b.pull(relay.transport(b.device_id))
    assert b.job(jid)["notes"][0]["body"] == "still offline-ish"


async def test_missing_dependencies_resends_what_the_server_lacks(open_replica, relay: Relay):
    r, cid, jid = await office_with_job(open_replica)
    await r.push(relay.transport(r.device_id))
    relay.lose_since(f"job:{jid}", 0)  # the server came back from an old backup
    await r.add_material(jid, "studs")
    report = await r.push(relay.transport(r.device_id))
    assert report.ok and report.resent_full == [f"job:{jid}"]
    b = await open_replica("b")
    await b.pull(relay.transport(b.device_id))
    assert b.job(jid) == r.job(jid) and b.job(jid)["title"] == "Kitchen"
    assert await r.pending() == []


async def test_too_large_merged_outbox_is_sent_one_by_one(open_replica, relay: Relay):
    r, cid, jid = await office_with_job(open_replica)
    await r.push(relay.transport(r.device_id))
    for i in range(5):
        await r.add_note(jid, f"note {i} " + "x" * 200)
    one = max(len(u) for _, _, u in await r.pending())
    relay.max_update_bytes = one + 10
    report = await r.push(relay.transport(r.device_id))
    assert report.ok and report.pushed == {f"job:{jid}": 5}
    assert len(relay.logs[f"job:{jid}"]) == 6


async def test_pull_uses_the_cursor_after_the_first_time(open_replica, relay: Relay):
    a, cid, jid = await office_with_job(open_replica, "a")
    await a.push(relay.transport(a.device_id))
    b = await open_replica("b")
    t = relay.transport(b.device_id)
    await b.pull(t)
    assert await b.cursor(f"job:{jid}") == 1
    await a.add_note(jid, "n")
    await a.push(relay.transport(a.device_id))
    relay.pulls.clear()
    report = await b.pull(t)
    assert (b.device_id, f"job:{jid}", 1) in relay.pulls
    assert report.changed == [f"job:{jid}"] and report.unchanged == [f"customer:{cid}"]
    assert await b.cursor(f"job:{jid}") == 2 and b.job(jid) == a.job(jid)


class GappyTransport:
    """Answers cursor pulls with a chosen (maybe non-integrable) update; full pulls honestly."""

    def __init__(self, relay: Relay, device: str, answers: list[bytes]) -> None:
        self.relay, self.device, self.answers, self.calls = relay, device, list(answers), []

    async def push(self, doc_id, update):
        return self.relay.accept(self.device, doc_id, update)

    async def pull(self, doc_id, state_vector, since_seq):
        self.calls.append(since_seq)
        if since_seq is not None and self.answers:
            return PullResult(doc_id, self.answers.pop(0), 1, self.relay.server_time())
        return self.relay.answer(self.device, doc_id, state_vector, None)

    async def list_docs(self):
        return list(self.relay.docs)


async def test_gap_in_log_tail_triggers_a_full_pull(open_replica, relay: Relay):
    a, cid, jid = await office_with_job(open_replica, "a")
    await a.push(relay.transport(a.device_id))
    b = await open_replica("b")
    await b.pull(relay.transport(b.device_id), [f"job:{jid}"])
    ups = []
    for i in range(3):
        await a.add_note(jid, f"n{i}")
        ups.append((await a.pending())[-1][2])
        await a.push(relay.transport(a.device_id))
    t = GappyTransport(relay, b.device_id, [ups[2]])  # n2 without n0, n1: a gap
    report = await b.pull(t, [f"job:{jid}"])
    assert report.ok and report.full_pulls == [f"job:{jid}"] and t.calls == [1, None]
    assert [n["body"] for n in b.job(jid)["notes"]] == ["n0", "n1", "n2"]


async def test_out_of_order_and_duplicate_delivery_never_loses_content(open_replica):
    """The pycrdt hazard: one client's updates 0, 2, 3, 1 (plus repeats) delivered one by one."""
    a = await open_replica("a")
    jid = await a.create_job(str(uuid.uuid4()), "Deck")
    mid = await a.add_material(jid, "studs")
    await a.update_material(jid, mid, quantity=5)
    await a.update_material(jid, mid, purchased=True)
    ups = [u for _, _, u in await a.pending()]
    assert len(ups) == 4
    b = await open_replica("b")
    doc_id = f"job:{jid}"
    outcomes = []
    for i in (0, 2, 3, 2, 1, 0, 3, 2, 1):
        before = b.doc(doc_id).get_state() if b.has_doc(doc_id) else None
        try:
            outcomes.append((i, await b._apply_remote(doc_id, ups[i], None, None)))
        except NotIntegrable:
            outcomes.append((i, "refused"))
            assert (b.doc(doc_id).get_state() if b.has_doc(doc_id) else None) == before
    assert outcomes == [(0, True), (2, "refused"), (3, "refused"), (2, "refused"), (1, True), (0, False),
                        (3, "refused"), (2, True), (1, False)]
    await b._apply_remote(doc_id, ups[3], None, None)
    assert b.job(jid) == a.job(jid)
    m = b.job(jid)["materials"][0]
    assert (m["quantity"], m["purchased"]) == (5.0, True)
    await b.close()
    b = await open_replica("b")  # and what was stored rebuilds the same document
    assert b.job(jid) == a.job(jid)


async def test_pull_of_a_gap_then_duplicates_converges(open_replica, relay: Relay):
    a, cid, jid = await office_with_job(open_replica, "a")
    await a.push(relay.transport(a.device_id))
    b = await open_replica("b")
    await b.pull(relay.transport(b.device_id), [f"job:{jid}"])
    ups = []
    for i in range(3):
        await a.add_note(jid, f"n{i}")
        ups.append((await a.pending())[-1][2])
        await a.push(relay.transport(a.device_id))
    t = GappyTransport(relay, b.device_id, [ups[1], ups[0], ups[0], ups[2]])
    for _ in range(4):
        assert (await b.pull(t, [f"job:{jid}"])).ok
    assert [n["body"] for n in b.job(jid)["notes"]] == ["n0", "n1", "n2"]
    assert b.job(jid) == a.job(jid)


async def test_server_time_corrects_a_wrong_device_clock(open_replica, relay: Relay, tmp_path):
    device_now = [1_700_000_000_000]
    relay.wall_ms = lambda: device_now[0] + 3_600_000  # the device is an hour slow
    r = await open_replica("crew1", clock=lambda: device_now[0])
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    await r.push(relay.transport(r.device_id))
    assert r.hlc.offset_ms == 3_600_000
    await r.add_note(jid, "after correction")
    assert parse_ts(r.job(jid)["notes"][0]["time"]).wall_ms == device_now[0] + 3_600_000
    relay.wall_ms = lambda: device_now[0] + 3_600_500  # within a second: left alone
    await r.pull(relay.transport(r.device_id))
    assert r.hlc.offset_ms == 3_600_000
    await r.close()
    r2 = await open_replica("crew1", clock=lambda: device_now[0])
    assert r2.hlc.offset_ms == 3_600_000


async def test_remote_timestamps_move_the_clock_forward(open_replica, relay: Relay):
    fast, slow = [2_000_000_000_000], [2_000_000_000_000 - 120_000]
    a = await open_replica("a", clock=lambda: fast[0])
    jid = await a.create_job(str(uuid.uuid4()), "Deck")
    await a.push(relay.transport(a.device_id))
    relay.wall_ms = lambda: slow[0]  # offsets stay within tolerance for b
    b = await open_replica("b", clock=lambda: slow[0])
    await b.pull(relay.transport(b.device_id))
    await b.update_job(jid, title="Deck v2")
    assert b.job(jid)["title"] == "Deck v2"  # b's write orders after a's, despite b's slow clock
    assert b.hlc.last > format_ts(fast[0], 0)


async def test_unlisted_docs_are_dropped_unless_updates_wait(open_replica, relay: Relay, tmp_path):
    office, cid, jid = await office_with_job(open_replica)
    jid2 = await office.create_job(cid, "Porch")
    await office.push(relay.transport(office.device_id))
    visible = {f"customer:{cid}", f"job:{jid}", f"job:{jid2}"}
    crew = await open_replica("crew1", role="crew")
    t = relay.transport(crew.device_id, visible=lambda d: d in visible)
    await crew.pull(t)
    assert len(crew.doc_ids()) == 3
    await crew.add_note(jid2, "offline note")
    relay.refuse[f"job:{jid2}"] = Unavailable("down")
    visible -= {f"job:{jid}", f"job:{jid2}"}  # both jobs unassigned
    report = await crew.sync(t)
    assert report.pull.dropped == [f"job:{jid}"] and report.pull.kept == [f"job:{jid2}"]
    assert crew.doc_ids() == sorted([f"customer:{cid}", f"job:{jid2}"])
    with sqlite3.connect(str(tmp_path / "crew1.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM updates WHERE doc_id = ?", (f"job:{jid}",)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM cursors WHERE doc_id = ?", (f"job:{jid}",)).fetchone() == (0,)
    await crew.close()
    crew = await open_replica("crew1", role="crew")
    assert crew.doc_ids() == sorted([f"customer:{cid}", f"job:{jid2}"])
    del relay.refuse[f"job:{jid2}"]
    report = await crew.sync(t)
    assert report.push.pushed == {f"job:{jid2}": 1} and report.pull.dropped == [f"job:{jid2}"]
    assert crew.doc_ids() == [f"customer:{cid}"]


async def test_pull_errors_are_reported_per_doc(open_replica, relay: Relay):
    a, cid, jid = await office_with_job(open_replica, "a")
    await a.push(relay.transport(a.device_id))
    b = await open_replica("b")
    report = await b.pull(relay.transport(b.device_id), [f"job:{uuid.uuid4()}", f"job:{jid}"])
    assert [type(e) for e in report.errors.values()] == [UnknownDocument]
    assert b.doc_ids() == [f"job:{jid}"]


async def test_empty_answer_stores_cursor_only(open_replica, relay: Relay, tmp_path):
    a, cid, jid = await office_with_job(open_replica, "a")
    await a.push(relay.transport(a.device_id))
    report = await a.pull(relay.transport(a.device_id))
    assert sorted(report.unchanged) == sorted([f"customer:{cid}", f"job:{jid}"])
    with sqlite3.connect(str(tmp_path / "a.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM updates WHERE origin = 'remote'").fetchone() == (0,)
        assert db.execute("SELECT seq FROM cursors WHERE doc_id = ?", (f"job:{jid}",)).fetchone() == (1,)


class SlowTransport:
    """Holds every push until ``release`` is set, so the test can edit meanwhile."""

    def __init__(self, relay: Relay, device: str) -> None:
        self.inner, self.entered, self.release = relay.transport(device), asyncio.Event(), asyncio.Event()

    async def push(self, doc_id, update):
        self.entered.set()
        await self.release.wait()
        return await self.inner.push(doc_id, update)

    async def pull(self, doc_id, state_vector, since_seq):
        return await self.inner.pull(doc_id, state_vector, since_seq)

    async def list_docs(self):
        return await self.inner.list_docs()


async def test_edits_made_during_a_push_stay_in_the_outbox(open_replica, relay: Relay):
    r = await open_replica("office")
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    t = SlowTransport(relay, r.device_id)
    pushing = asyncio.create_task(r.push(t))
    await t.entered.wait()
    await r.add_note(jid, "typed while the push was in flight")
    t.release.set()
    report = await pushing
    assert report.pushed == {f"job:{jid}": 1}
    [(_, doc_id, _)] = await r.pending()
    assert doc_id == f"job:{jid}"
    assert (await r.push(relay.transport(r.device_id))).pushed == {f"job:{jid}": 1}


async def test_concurrent_edits_are_all_stored_in_order(open_replica):
    r = await open_replica("office")
    jid = await r.create_job(str(uuid.uuid4()), "Deck")
    ids = await asyncio.gather(*(r.add_note(jid, f"n{i}") for i in range(20)))
    assert [n["id"] for n in r.job(jid)["notes"]] == list(ids)
    outbox = await r.pending()
    assert len(outbox) == 21 and [row[0] for row in outbox] == sorted(row[0] for row in outbox)
    await r.close()
    r = await open_replica("office")
    assert [n["id"] for n in r.job(jid)["notes"]] == list(ids)
