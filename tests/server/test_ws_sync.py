"""Live sync over WebSocket with pycrdt clients: handshake, fan-out, no echo, resend on gaps."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Doc, Map, YMessageType, YSyncMessageType, create_update_message

from schema import tables as t

from test_ws_kit import customer_doc, job_doc, live_server  # type: ignore[import-not-found]

SYNC, AWARENESS = YMessageType.SYNC, YMessageType.AWARENESS
STEP1, STEP2, UPDATE = YSyncMessageType.SYNC_STEP1, YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE


@pytest.fixture
async def server(db_url: str, tmp_path: Path):
    async with live_server(db_url, tmp_path / "keys") as s:
        yield s


async def test_edit_reaches_the_other_client_and_never_echoes(server):
    office = await server.user_session("office")
    other = await server.user_session("office")
    doc_id = job_doc()
    a = await (await server.client(office, doc_id)).sync()
    b = await (await server.client(other, doc_id)).sync()
    # the server asked both for what it lacks (sync step 1, with an empty document)
    await a.wait_for(lambda: a.of(SYNC, STEP1))

    u1 = await a.write(doc_id, title="Kitchen remodel", status="lead", customer_id=customer_doc()[9:])
    await b.wait_for(lambda: b.fields().get("title") == "Kitchen remodel")
    assert await server.count(t.oplog) == 1

    # b answers; a receives b's update, and by then any echo of u1 would have arrived first
    await b.write(doc_id, title="Kitchen + pantry")
    await a.wait_for(lambda: a.fields().get("title") == "Kitchen + pantry")
    assert len(a.updates) == 1 and u1 not in a.updates
    assert all(u != u1 for u in b.updates[1:])
    assert len(b.updates) == 1  # b got a's update once, and not its own
    await a.close()
    await b.close()


async def test_late_joiner_gets_the_document_in_step2(server):
    office = await server.user_session("office")
    doc_id = job_doc()
    a = await (await server.client(office, doc_id)).sync()
    watcher = await (await server.client(await server.user_session("office"), doc_id)).sync()
    await a.write(doc_id, title="Deck", status="lead", customer_id=customer_doc()[9:])
    await a.write(doc_id, status="estimate")
    await watcher.wait_for(lambda: watcher.fields().get("status") == "estimate")  # both committed
    assert await server.count(t.oplog) == 2
    late = await server.user_session("owner")
    c = await (await server.client(late, doc_id)).sync()
    assert c.fields()["title"] == "Deck" and c.fields()["status"] == "estimate"
    await a.close()
    await c.close()
    await watcher.close()


async def test_new_empty_document_syncs(server):
    office = await server.user_session("office")
    c = await (await server.client(office, job_doc())).sync()
    step2 = c.of(SYNC, STEP2)[-1].payload
    Doc().apply_update(step2)  # a valid (empty) update
    step1 = c.of(SYNC, STEP1)
    assert step1 and step1[0].payload == b"\x00"
    await c.close()


async def test_offline_edits_are_sent_in_answer_to_the_servers_step1(server):
    office = await server.user_session("office")
    doc_id = job_doc()
    c = await server.client(office, doc_id, answer_step1=False)
    # edits made offline, before the connection: the server's step 1 makes the client send them
    c.device.set_fields(doc_id, title="Offline title", status="lead", customer_id=customer_doc()[9:])
    step1 = await c.wait_for(lambda: c.of(SYNC, STEP1))
    await c.answer(step1[0].payload)
    o = await (await server.client(await server.user_session("office"), doc_id)).sync()
    await o.wait_for(lambda: o.fields().get("title") == "Offline title")
    await c.close()
    await o.close()


async def test_missing_dependencies_are_resent_after_a_server_step1(server):
    office = await server.user_session("office")
    doc_id = job_doc()
    c = await (await server.client(office, doc_id)).sync()
    n_step1 = len(c.of(SYNC, STEP1))
    c.device.set_fields(doc_id, title="First", status="lead", customer_id=customer_doc()[9:])  # never sent
    u2 = c.device.set_fields(doc_id, title="Second")
    await c.send(create_update_message(u2))
    # the server cannot apply u2 without u1: it asks (sync step 1), the client re-sends all
    await c.wait_for(lambda: len(c.of(SYNC, STEP1)) > n_step1)
    other = await server.user_session("office")
    o = await (await server.client(other, doc_id)).sync()
    await o.wait_for(lambda: o.fields().get("title") == "Second" or None)
    assert o.fields()["status"] == "lead"
    await c.close()
    await o.close()


async def test_concurrent_writers_converge_without_echo(server):
    doc_id = job_doc()
    seed = await (await server.client(await server.user_session("office"), doc_id)).sync()
    await seed.write(doc_id, title="Base", status="lead", customer_id=customer_doc()[9:])
    writers = [await (await server.client(await server.user_session("office"), doc_id)).sync() for _ in range(4)]
    for w in writers:
        await w.wait_for(lambda w=w: w.fields().get("title") == "Base")
    sent = [await w.write(doc_id, **{"description" if i % 2 else "address": f"value {i}"})
            for i, w in enumerate(writers)]
    everyone = [seed, *writers]
    want = {"title", "status", "customer_id", "description", "address"}
    for c in everyone:
        await c.wait_for(lambda c=c: want <= set(c.fields()) and
                         len(c.doc.get("fields", type=Map)) == len(everyone[0].doc.get("fields", type=Map)))
    # the same writes everywhere
    views = [sorted(c.doc.get("fields", type=Map).keys()) for c in everyone]
    assert all(v == views[0] for v in views), views
    for w, u in zip(writers, sent):
        assert u not in w.updates
    for c in everyone:
        await c.close()
