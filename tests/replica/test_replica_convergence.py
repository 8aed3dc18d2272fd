"""Randomized: three devices edit offline, sync in random order, restart; they converge."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replica import Replica
from syncd.update_scan import decode_state_vector

from replica_relay import Relay  # type: ignore[import-not-found]

WHO = st.sampled_from(["office", "crew1", "crew2"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("title"), WHO, st.text("abcxyz ", min_size=1, max_size=6).filter(str.strip)),
        st.tuples(st.just("phone"), WHO, st.from_regex(r"\A[0-9]{3} [0-9]{4}\Z")),
        st.tuples(st.just("add_material"), WHO, st.sampled_from(["studs", "screws", "drywall"])),
        st.tuples(st.just("buy"), WHO, st.integers(0, 5)),
        st.tuples(st.just("quantity"), WHO, st.integers(0, 5)),
        st.tuples(st.just("remove"), WHO, st.integers(0, 5)),
        st.tuples(st.just("note"), WHO, st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("status"), st.just("office"), st.sampled_from(["scheduled", "on_hold", "estimate"])),
        st.tuples(st.just("push"), WHO, st.none()),
        st.tuples(st.just("pull"), WHO, st.none()),
        st.tuples(st.just("restart"), WHO, st.none()),
    ),
    max_size=30,
)


async def scenario(ops: list[tuple], base: Path) -> None:
    relay = Relay()
    roles = {"office": "office", "crew1": "crew", "crew2": "crew"}
    users = {name: str(uuid.uuid4()) for name in roles}

    async def open_(name: str) -> Replica:
        return await Replica.open(str(base / f"{name}.db"), user_id=users[name], role=roles[name])

    devs = {name: await open_(name) for name in roles}
    try:
        office = devs["office"]
        cid = await office.create_customer(name="Ann")
        jid = await office.create_job(cid, "Job")
        for r in devs.values():
            (await r.sync(relay.transport(r.device_id))).raise_for_errors()
        for r in devs.values():
            (await r.sync(relay.transport(r.device_id))).raise_for_errors()
        for op, who, arg in ops:
            r = devs[who]
            live = [m["id"] for m in r.job(jid)["materials"]]
            if op == "title":
                await r.update_job(jid, title=arg)
            elif op == "phone":
                await r.update_customer(cid, phone=arg)
            elif op == "add_material":
                await r.add_material(jid, arg)
            elif op in ("buy", "quantity", "remove") and live:
                mid = live[arg % len(live)]
                if op == "buy":
                    await r.update_material(jid, mid, purchased=True)
                elif op == "quantity":
                    await r.update_material(jid, mid, quantity=arg)
                else:
                    await r.remove_material(jid, mid)
            elif op == "note":
                await r.add_note(jid, arg)
            elif op == "status":
                await r.set_status(jid, arg)
            elif op == "push":
                (await r.push(relay.transport(r.device_id))).raise_for_errors()
            elif op == "pull":
                (await r.pull(relay.transport(r.device_id))).raise_for_errors()
            elif op == "restart":
                await r.close()
                devs[who] = await open_(who)
        for _ in range(2):
            for r in devs.values():
                (await r.sync(relay.transport(r.device_id))).raise_for_errors()
        views = {name: (r.job(jid), r.customer(cid)) for name, r in devs.items()}
        assert views["crew1"] == views["office"] and views["crew2"] == views["office"]
        for doc_id, server_doc in relay.docs.items():
            want = decode_state_vector(server_doc.get_state())  # byte order of clients may differ
            assert [decode_state_vector(r.doc(doc_id).get_state()) for r in devs.values()] == [want] * 3
        assert [await r.pending() for r in devs.values()] == [[], [], []]
        notes = views["office"][0]["notes"]
        assert len(notes) == sum(1 for op, _, _ in ops if op == "note")
    finally:
        for r in devs.values():
            await r.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_offline_edits_converge(ops):
    with tempfile.TemporaryDirectory() as base:
        asyncio.run(scenario(ops, Path(base)))
