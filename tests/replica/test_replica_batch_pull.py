"""``replica.sync.pull`` through a transport with batch pulls (``LocalTransport`` on the real
engine, SQLite and PostgreSQL): the same outcome as one request per document, fewer calls."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from schema.db import create_engine
from server import policy
from syncd.engine import SyncEngine
from syncd.local_transport import LocalTransport
from syncd.errors import SyncError
from syncd.protocol import Principal, PullResult
from syncd.update_scan import decode_state_vector

from replica_relay import Relay, RelayTransport  # type: ignore[import-not-found]


class Recording(LocalTransport):
    """A LocalTransport recording which of its methods were called."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.calls: list[str] = []

    async def pull(self, *a: Any) -> Any:
        self.calls.append("pull")
        return await super().pull(*a)

    async def list_docs(self) -> list[str]:
        self.calls.append("list_docs")
        return await super().list_docs()

    async def pull_many(self, requests: Any) -> Any:
        self.calls.append(f"pull_many:{len(requests)}")
        return await super().pull_many(requests)

    async def pull_listed(self, known: Any) -> Any:
        self.calls.append(f"pull_listed:{len(known)}")
        listed = await self.engine.list_docs(self.principal)  # not through the recorded methods
        return listed, await LocalTransport.pull_many(self, [(d, *known.get(d, (None, None))) for d in listed])

    def take(self) -> list[str]:
        out, self.calls = self.calls, []
        return out


class OneByOne:
    """Only the SyncTransport protocol: no batch methods (the replica falls back)."""

    def __init__(self, inner: LocalTransport) -> None:
        self.push, self.pull, self.list_docs = inner.push, inner.pull, inner.list_docs


def same(x: Any, y: Any) -> bool:
    """Two documents hold the same content (state vectors compared decoded: the encoding's
    client order is not canonical)."""
    return decode_state_vector(x.get_state()) == decode_state_vector(y.get_state())


async def test_replicas_converge_through_batch_pulls_with_a_gap_handled(db_url, open_replica, office_users):
    db = create_engine(db_url)
    try:
        async with SyncEngine(db, authorizer=policy.authorize_writes) as engine:
            ua, ub, uc = await office_users(db, 3)
            a = await open_replica("a", role="office", user_id=ua)
            b = await open_replica("b", role="office", user_id=ub)
            c = await open_replica("c", role="office", user_id=uc)
            ta, tb, tc = (Recording(engine, Principal(r.user_id, "office", r.device_id)) for r in (a, b, c))
            cid = await a.create_customer(name="Ann", phone="555 0101")
            jids = [await a.create_job(cid, f"Job {i}") for i in range(3)]
            assert (await a.sync(ta)).ok
            docs = sorted([f"customer:{cid}", *(f"job:{j}" for j in jids)])

            report = await b.pull(tb)  # from empty: one call for the listing and every answer
            assert report.ok and sorted(report.changed) == docs and tb.take() == ["pull_listed:0"]
            mid = await b.add_material(jids[0], "2x4 studs", quantity=20)
            await a.update_customer(cid, address="1 Main St")
            assert (await b.sync(tb)).ok and (await a.sync(ta)).ok
            report = await b.pull(tb)
            assert report.ok and report.changed == [f"customer:{cid}"] and tb.take()[-1] == "pull_listed:4"
            for d in docs:
                assert same(a.doc(d), b.doc(d))
            assert [m["id"] for m in a.job(jids[0])["materials"]] == [mid]

            # named documents: one pull_many
            await a.add_note(jids[1], "call first")
            assert (await a.sync(ta)).ok
            report = await b.pull(tb, [f"job:{jids[1]}", f"job:{jids[2]}"])
            assert report.changed == [f"job:{jids[1]}"] and report.unchanged == [f"job:{jids[2]}"]
            assert tb.take() == ["pull_many:2"]

            # a gap: b's cursor claims an entry it never received; the tail is not applied, the
            # document is re-pulled by state vector in one more pull_many
            j = f"job:{jids[2]}"
            await a.update_job(jids[2], title="one")
            assert (await a.push(ta)).ok
            s1 = (await engine.pull(ta.principal, j)).seq
            await a.update_job(jids[2], title="two")
            assert (await a.push(ta)).ok
            await b._store.append_remote(j, None, s1, {})
            report = await b.pull(tb)
            assert report.ok and report.full_pulls == [j] and j in report.changed
            assert tb.take() == ["pull_listed:4", "pull_many:1"]
            assert b.job(jids[2])["title"] == "two" and same(b.doc(j), a.doc(j))

            # the same outcome one request per document
            report = await c.pull(OneByOne(tc))
            assert report.ok and sorted(report.changed) == docs
            for d in docs:
                assert same(c.doc(d), a.doc(d))
    finally:
        await db.dispose()


# --- the device side: one commit per batch --------------------------------------------------------


class BatchRelay(RelayTransport):
    """The test relay with batch pulls; ``corrupt`` docs answer garbage bytes."""

    corrupt: set[str] = set()

    async def pull_many(self, requests: Any) -> Any:
        out: list[Any] = []
        for doc_id, sv, since in requests:
            try:
                res = await self.pull(doc_id, sv or b"\x00", since)
            except SyncError as e:
                out.append(e)
                continue
            out.append(PullResult(doc_id, b"\x01\xff\xff\xff", res.seq, res.server_time)
                       if doc_id in self.corrupt else res)
        return out

    async def pull_listed(self, known: Any) -> Any:
        listed = await self.list_docs()
        return listed, await self.pull_many([(d, *known.get(d, (None, None))) for d in listed])


async def test_a_batch_is_stored_in_one_device_commit_and_a_bad_answer_spoils_only_its_document(
        open_replica, relay: Relay, tmp_path):
    office = await open_replica("office", role="office")
    cid = await office.create_customer(name="Ann")
    jids = [await office.create_job(cid, f"Job {i}") for i in range(3)]
    assert (await office.push(relay.transport(office.device_id))).ok
    docs = sorted([f"customer:{cid}", *(f"job:{j}" for j in jids)])

    crew = await open_replica("crew", role="office")
    commits: list[int] = []
    write = crew._store._write

    async def counting(statements: Any) -> Any:
        statements = list(statements)
        commits.append(len(statements))
        return await write(statements)

    crew._store._write = counting  # type: ignore[method-assign]
    transport = BatchRelay(relay, crew.device_id)
    transport.corrupt = {f"job:{jids[1]}"}
    report = await crew.pull(transport)
    assert sorted(report.changed) == sorted(set(docs) - {f"job:{jids[1]}"})
    assert list(report.errors) == [f"job:{jids[1]}"]
    assert len(commits) == 1  # three documents and their cursors, one fsync
    assert not crew.has_doc(f"job:{jids[1]}")
    # durable: a reopened device holds what was pulled, and the cursors
    await crew.close()
    crew = await open_replica("crew", role="office")
    assert crew.doc_ids() == sorted(set(docs) - {f"job:{jids[1]}"})
    assert crew.job(jids[0])["title"] == "Job 0"
    assert set(await crew.cursors()) == set(crew.doc_ids())
    transport = BatchRelay(relay, crew.device_id)
    transport.corrupt = set()
    report = await crew.pull(transport)
    assert report.ok and report.changed == [f"job:{jids[1]}"]

    # a failing device commit: nothing of the batch stays in memory either, and it propagates
    await office.update_job(jids[0], title="Renamed")
    await office.add_note(jids[2], "hello")
    assert (await office.push(relay.transport(office.device_id))).ok

    async def broken(*a: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    crew._store.append_remote_many = broken  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        await crew.pull(BatchRelay(relay, crew.device_id))
    assert crew.job(jids[0])["title"] == "Job 0" and crew.job(jids[2])["notes"] == []
