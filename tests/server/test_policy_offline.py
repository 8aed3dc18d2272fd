"""A crew that was offline is judged by what it saw, not by a change it could not see."""

from __future__ import annotations

import sys
from pathlib import Path

from schema import documents as D
from server import policy
from syncd.engine import SyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "syncd"))
from engine_helpers import BareDevice, add_user, job_doc  # type: ignore[import-not-found]  # noqa: E402


async def test_office_holds_the_job_while_the_offline_crew_starts_it(engine):
    db_engine = engine
    async with SyncEngine(db_engine, authorizer=policy.authorize_writes) as engine:  # noqa: F811
        office = BareDevice(await add_user(db_engine, "office"), "office")
        crew = BareDevice(await add_user(db_engine, "crew"), "crew")
        doc_id = job_doc()
        mid = D.new_id()
        await engine.push(office.principal, doc_id, office.edit(doc_id, lambda d, s: (
            D.write_fields(d, {"title": "Roof", "status": "scheduled", "owner_id": office.principal.user_id,
                               "crew": [crew.principal.user_id]}, **s),
            D.write_material_field(d, mid, "name", "shingles", **s))))
        crew.apply(doc_id, (await engine.pull(crew.principal, doc_id)).update)
        # offline: the crew starts the job and ticks the shingles, merged into one update
        before = crew.doc(doc_id).get_state()
        crew.set_fields(doc_id, status="in_progress")
        crew.edit(doc_id, lambda d, s: D.write_material_field(d, mid, "purchased", True, **s))
        offline = crew.doc(doc_id).get_update(before)
        # meanwhile the office (the job's owner) cancels the job: from "cancelled" a crew may
        # move nowhere, but the crew never saw it, so its update is judged from "scheduled"
        await engine.push(office.principal, doc_id, office.set_fields(doc_id, status="cancelled"))
        await engine.push(crew.principal, doc_id, offline)
        view = await engine.view(doc_id)
        assert view.record["status"] == "cancelled"  # owner-wins between the concurrent writes
        assert view.materials[mid].fields["purchased"] is True  # the crew's tick is kept
        # a crew that has seen the cancellation may not restart the job
        crew.apply(doc_id, (await engine.pull(crew.principal, doc_id, crew.doc(doc_id).get_state())).update)
        import pytest
        from syncd.errors import Forbidden
        with pytest.raises(Forbidden):
            await engine.push(crew.principal, doc_id, crew.set_fields(doc_id, status="in_progress"))
