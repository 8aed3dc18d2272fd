"""Two engines (two server processes) on one database behave as one."""

from __future__ import annotations

import asyncio
import random

from pycrdt import Map

from schema import documents as D
import pytest

from syncd.engine import EngineConfig, SyncEngine
from syncd.errors import Unavailable
from syncd.verify import verify

from engine_helpers import BareDevice, add_user, job_doc  # type: ignore[import-not-found]


async def test_two_engines_interleaving_writes_to_the_same_documents(db_engine):
    # several processes on one database are declared (PostgreSQL's default; SQLite's opt-in)
    a, b = SyncEngine(db_engine, EngineConfig(shared=True)), SyncEngine(db_engine, EngineConfig(shared=True))
    async with a, b:
        devs = [BareDevice(await add_user(db_engine, "office"), "office") for _ in range(4)]
        docs = [job_doc() for _ in range(3)]
        rnd = random.Random(7)
        for d in docs:  # everyone starts from the same created job
            await a.push(devs[0].principal, d, devs[0].set_fields(d, title="start"))
            for dev in devs[1:]:
                dev.apply(d, (await b.pull(dev.principal, d)).update)

        async def writer(dev: BareDevice, n: int) -> None:
            for i in range(n):
                d = rnd.choice(docs)
                mid = D.new_id()
                u = dev.edit(d, lambda doc, s: (D.write_field(doc, "title", f"{dev.principal.device_id}-{i}", **s),
                                                D.write_material_field(doc, mid, "name", f"m{i}", **s)))
                await rnd.choice([a, b]).push(dev.principal, d, u)  # a load balancer picks a process
        await asyncio.gather(*[writer(dev, 15) for dev in devs])
        for d in docs:  # a Redis hint (or a reconnect) makes each catch up; then both agree
            await a.refresh(d)
            await b.refresh(d)
            va, vb = await a.view(d), await b.view(d)
            assert va == vb
            expected = set()
            for dev in devs:
                if d in dev.docs:
                    expected |= {k.split("/")[0] for k in dev.docs[d].get("materials", type=Map).keys()}
            assert set(va.materials) == expected  # no material from any device was lost
    assert (await verify(db_engine)).ok


async def test_an_engine_that_believes_it_is_alone_never_commits_over_another_writer(sqlite_db):
    """SQLite's default is one process (ids handed out from memory). A second writer on the
    same file, not declared ``shared``, never makes the engine store anything wrong: a stale
    document is caught up under the write lock before checking, and an id taken by the other
    writer fails the batch whole (UNAVAILABLE), after which the retry succeeds."""
    a, b = SyncEngine(sqlite_db, EngineConfig(paranoid=True)), SyncEngine(sqlite_db, EngineConfig(paranoid=True))
    async with a, b:
        one = BareDevice(await add_user(sqlite_db, "office"), "office")
        two = BareDevice(await add_user(sqlite_db, "office"), "office")
        d = job_doc()
        await a.push(one.principal, d, one.set_fields(d, title="first"))
        two.apply(d, (await b.pull(two.principal, d)).update)  # b holds the document now
        await a.push(one.principal, d, one.set_fields(d, description="behind b's back"))
        await b.push(two.principal, d, two.set_fields(d, address="1 Main St"))  # b catches up first
        view = await b.view(d)
        assert view.record["description"] == "behind b's back" and view.record["address"] == "1 Main St"
        one.apply(d, (await a.pull(one.principal, d)).update)
        update = one.set_fields(d, title="second")
        with pytest.raises(Unavailable):  # a's next id was taken by b: nothing stored
            await a.push(one.principal, d, update)
        assert not (await a.push(one.principal, d, update)).duplicate  # the retry lands
        assert (await a.view(d)).record["title"] == "second"
    assert (await verify(sqlite_db)).ok


async def test_batch_reads_never_wait_on_a_pooled_connection(db_engine):
    """Many requests holding pooled connections while they wait for SQLite's write lock must
    not starve the batch that holds it (it used to borrow a second connection for reads)."""
    async with SyncEngine(db_engine) as eng:
        owner = BareDevice(await add_user(db_engine, "office"), "office")
        doc = job_doc()
        first = await eng.push(owner.principal, doc, owner.set_fields(doc, title="t"))
        readers = [BareDevice(await add_user(db_engine, "crew"), "crew") for _ in range(30)]
        writers = [BareDevice(await add_user(db_engine, "office"), "office") for _ in range(30)]

        async def pull_and_ack(dev):  # a pull with a cursor writes the device's acknowledgement
            for _ in range(3):
                await eng.pull(dev.principal, doc, None, first.seq)

        async def new_device_push(dev):  # unknown device and client id: the batch must read them
            d = job_doc()
            await eng.push(dev.principal, d, dev.set_fields(d, title="new"))

        await asyncio.wait_for(asyncio.gather(*[pull_and_ack(r) for r in readers],
                                              *[new_device_push(w) for w in writers]), timeout=60)
    assert (await verify(db_engine)).ok
