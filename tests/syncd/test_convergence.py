"""Convergence under random schedules: every replica, the server and the SQL projection agree.

Four replicas (owner, office, two crews) make random edits of every rule kind (lww fields,
owner-wins status, union materials, appended notes) while a hostile network delivers their
updates in random order, duplicates them, drops requests or acknowledgements (the update
stays in the outbox and is re-sent), and disconnects replicas for a while. At the end every
replica re-sends its outbox and pulls: all documents, resolved views and the projection must
be equal, and Yjs itself, fed the log in a random order, must build the same document.
"""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from schema import documents as D
from schema.view import resolve_doc
from syncd.errors import MissingDependencies
from syncd.projection import rows_for_view
from syncd.verify import verify

from engine_helpers import BareDevice, add_user  # type: ignore[import-not-found]

STATUSES = ["lead", "scheduled", "in_progress", "on_hold", "completed"]
ROOTS = ("fields", "materials", "notes")


class Replica(BareDevice):
    """A bare device with an outbox of unacknowledged updates and a pull cursor."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.outbox: list[tuple[str, bytes]] = []
        self.cursor: dict[str, int] = {}
        self.online = True

    def local(self, doc_id: str, fn) -> None:
        self.outbox.append((doc_id, self.edit(doc_id, fn)))


def apply_edit(rep: Replica, doc_id: str, kind: int, rnd: random.Random) -> None:
    d = rep.doc(doc_id)
    mats = sorted({k.split("/")[0] for k in d.get("materials", type=Map).keys()})
    if kind == 0:
        rep.local(doc_id, lambda dd, s: D.write_field(dd, "title", f"t{rnd.randrange(99)}", **s))
    elif kind == 1:
        rep.local(doc_id, lambda dd, s: D.write_field(dd, "status", rnd.choice(STATUSES), **s))
    elif kind == 2 or not mats:
        mid = D.new_id()
        rep.local(doc_id, lambda dd, s: (D.write_material_field(dd, mid, "name", "drywall screws", **s),
                                         D.write_material_field(dd, mid, "quantity", rnd.randrange(1, 9), **s)))
    elif kind == 3:
        mid, f = rnd.choice(mats), rnd.choice(["quantity", "purchased"])
        v = rnd.randrange(1, 50) if f == "quantity" else rnd.random() < 0.5
        rep.local(doc_id, lambda dd, s: D.write_material_field(dd, mid, f, v, **s))
    elif kind == 4:
        mid = rnd.choice(mats)
        rep.local(doc_id, lambda dd, s: D.remove_material(dd, mid, **s))
    elif kind == 5:
        rep.local(doc_id, lambda dd, s: D.add_note(dd, D.new_id(), f"note {rnd.randrange(999)}", **s))
    elif kind == 6:
        rep.local(doc_id, lambda dd, s: D.write_field(dd, "estimate", float(rnd.randrange(1000)), **s))
    else:  # a new owner changes who wins the status (owner-wins context)
        rep.local(doc_id, lambda dd, s: D.write_field(dd, "owner_id", rnd.choice(OWNERS), **s))


async def deliver(engine, rep: Replica, rnd: random.Random) -> None:
    """Send a random subset of the outbox in random order through a lossy network."""
    if not rep.outbox:
        return
    picks = rnd.sample(range(len(rep.outbox)), k=rnd.randint(1, len(rep.outbox)))
    acked = set()
    for i in picks:
        doc_id, u = rep.outbox[i]
        fate = rnd.random()
        if fate < 0.15:
            continue  # request lost
        try:
            await engine.push(rep.principal, doc_id, u)
        except MissingDependencies:
            continue  # sent ahead of an earlier one: stays in the outbox
        if rnd.random() < 0.2:
            await engine.push(rep.principal, doc_id, u)  # duplicated by the network
        if fate < 0.3:
            continue  # acknowledgement lost: re-sent later
        acked.add(i)
    rep.outbox = [x for i, x in enumerate(rep.outbox) if i not in acked]


async def pull(engine, rep: Replica, doc_id: str, rnd: random.Random) -> None:
    if rnd.random() < 0.5 and doc_id in rep.cursor:
        res = await engine.pull(rep.principal, doc_id, rep.doc(doc_id).get_state(), rep.cursor[doc_id])
    else:
        res = await engine.pull(rep.principal, doc_id, rep.doc(doc_id).get_state(), None)
    # the replica applies a whole pull result at once; it is integrable by construction
    rep.apply(doc_id, res.update)
    rep.cursor[doc_id] = res.seq


async def flush(engine, rep: Replica) -> None:
    """Reconnect: re-send the outbox in order until acknowledged."""
    for doc_id, u in rep.outbox:
        await engine.push(rep.principal, doc_id, u)
    rep.outbox = []


def doc_json(d: Doc) -> dict:
    return {r: d.get(r, type=Map).to_py() for r in ROOTS}


OWNERS: list[str] = []
schedule = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9), st.integers(0, 7), st.integers(0, 1)),
                    min_size=5, max_size=40)


@pytest.fixture
async def team(db_engine):
    roles = ["owner", "office", "crew", "crew"]
    reps = []
    for r in roles:
        reps.append((await add_user(db_engine, r), r))
    return reps


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=schedule, seed=st.integers(0, 2**32 - 1))
async def test_random_schedules_converge(engine, db_engine, team, yjs, steps, seed):
    rnd = random.Random(seed)
    reps = [Replica(uid, role) for uid, role in team]
    OWNERS[:] = [reps[1].principal.user_id, reps[2].principal.user_id]
    docs = [D.doc_id_for("job", str(uuid.uuid4())) for _ in range(2)]
    owner = reps[0]
    for doc_id in docs:  # the office creates the job; everyone starts from it
        owner.local(doc_id, lambda dd, s: D.write_fields(dd, {"title": "job", "status": "scheduled",
                                                               "owner_id": reps[1].principal.user_id}, **s))
        await flush(engine, owner)
        for r in reps[1:]:
            await pull(engine, r, doc_id, rnd)
    for who, action, edit_kind, which_doc in steps:
        rep, doc_id = reps[who], docs[which_doc]
        if action <= 4:
            apply_edit(rep, doc_id, edit_kind, rnd)
        elif action == 5:
            rep.online = not rep.online  # disconnect / reconnect
        elif rep.online and action <= 7:
            await deliver(engine, rep, rnd)
        elif rep.online:
            await pull(engine, rep, doc_id, rnd)
    for rep in reps:
        rep.online = True
        await flush(engine, rep)
    for rep in reps:
        for doc_id in docs:
            await pull(engine, rep, doc_id, rnd)
    for doc_id in docs:
        live = engine._docs[doc_id]
        server_json = doc_json(live.doc)
        server_view = resolve_doc(live.doc, "job")
        for rep in reps:
            assert doc_json(rep.doc(doc_id)) == server_json
            assert resolve_doc(rep.doc(doc_id), "job") == server_view
        # every material ever added on any replica is still there unless a removal saw it all
        assert rows_for_view("job", live.record_id, server_view) == rows_for_view("job", live.record_id, live.view)
        # Yjs, fed the log in a random order, builds the same document
        async with db_engine.connect() as conn:
            entries = await engine.store.entries(conn, doc_id)
        ups = [e.update for e in entries]
        rnd.shuffle(ups)
        ref = yjs.apply([ups], roots=list(ROOTS))[0]
        assert ref["json"] == server_json
    report = await verify(db_engine)
    assert report.ok, report.to_json()
