"""Browser test of the PWA: crew phone and office desktop, offline edits, convergence, SQL projection.

Runs ``pwa_offline_flow.mjs`` (Node, playwright-core driving Debian's Chromium at
``/usr/bin/chromium`` or ``$CHROMIUM_PATH``) against ``syncd serve`` started on a free port over
a fresh database seeded with the demo company, once on SQLite (live sync over WebSocket when the
server offers ``/ws``, HTTP otherwise) and once on PostgreSQL (HTTP push/pull only, the fallback
transport). Then checks that the SQL projection equals what both browsers resolved. Screenshots go to
``tests/e2e/artifacts/<backend>/`` (gitignored).

Needs the PWA built (``cd pwa && npm ci && npm run build``; built here if ``pwa/dist`` is
missing but ``pwa/node_modules`` exists). Missing Chromium/Node/packages skip the test on a
developer machine and fail it under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from schema import tables as t
from schema.db import create_engine

ROOT = Path(__file__).resolve().parents[2]
PWA = ROOT / "pwa"
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "pwa_offline_flow.mjs"
ARTIFACTS = HERE / "artifacts"

pytestmark = pytest.mark.node


def _require(ok: object, why: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}, and CI=true forbids skipping", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    _require(Path(path).is_file(), f"Chromium not found at {path} (apt-get install -y chromium)")
    _require(shutil.which("node"), "node is not installed")
    _require((PWA / "node_modules" / "playwright-core").is_dir(), "pwa/node_modules is missing (cd pwa && npm ci)")
    if not (PWA / "dist" / "index.html").is_file():
        subprocess.run(["npm", "run", "build"], cwd=PWA, check=True, timeout=600)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _syncd() -> list[str]:
    # this checkout's code (PYTHONPATH below), whatever the venv's install points at
    return [sys.executable, "-c", "from syncd.cli import main; main()"]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"syncd serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"syncd serve did not become healthy:\n{log.read_text()[-3000:]}")


async def test_crew_offline_office_concurrent_converge(db_url: str, chromium: str, tmp_path: Path) -> None:
    backend = "postgres" if db_url.startswith("postgres") else "sqlite"
    artifacts = ARTIFACTS / backend
    if artifacts.exists():
        shutil.rmtree(artifacts)
    env = {**os.environ, "DATABASE_URL": db_url, "SYNCD_API_RATE_LIMIT": "100000", "SYNCD_LOGIN_RATE_LIMIT": "1000",
           "PYTHONDONTWRITEBYTECODE": "1", "SYNCD_PWA_DIST": str(PWA / "dist"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("REDIS_URL", None)
    subprocess.run([*_syncd(), "--database-url", db_url, "seed-demo"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=120)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([*_syncd(), "--database-url", db_url, "serve", "--host", "127.0.0.1",
                                   "--port", str(port), "--no-migrate"], cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        _wait_healthy(base, server, log)
        run = subprocess.run(["node", str(SCRIPT), base, str(artifacts)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "CHROMIUM_PATH": chromium,
                                               "E2E_NO_WS": "1" if backend == "postgres" else "0"})
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        detail = f"\n--- browser log ---\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}\n--- server log ---\n{log.read_text()[-3000:]}"
        assert lines, "the browser script printed no result" + detail
        result = json.loads(lines[-1][len("RESULT "):])
        assert run.returncode == 0 and result.get("ok"), result.get("error", "failed") + detail
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # The SQL projection equals what both browsers resolved.
    view, job_id = result["view"], result["job_id"]
    eng = create_engine(db_url)
    try:
        async with eng.connect() as conn:
            job = (await conn.execute(select(t.jobs).where(t.jobs.c.id == job_id))).one()
            mats = {r.id: r for r in (await conn.execute(select(t.materials).where(t.materials.c.job_id == job_id))).all()}
            notes = {r.id: r for r in (await conn.execute(select(t.notes).where(t.notes.c.job_id == job_id))).all()}
    finally:
        await eng.dispose()
    assert job.status == view["record"]["status"] == "on_hold"
    assert job.title == view["record"]["title"]
    live = {m["id"]: m["fields"] for m in view["materials"] if not m["removed"]}
    assert {i for i, r in mats.items() if not r.removed} == set(live)
    for mid, fields in live.items():
        row = mats[mid]
        assert (row.name, row.quantity, row.purchased, row.unit) == (
            fields["name"], fields["quantity"], fields["purchased"], fields.get("unit")), (mid, fields)
    by_name = {f["name"]: f for f in live.values()}
    assert by_name["2x4 studs"]["purchased"] is True
    assert by_name["tile adhesive"]["quantity"] == 5
    assert sum(1 for f in live.values() if f["name"] == "drywall screws") == 2  # both kept
    # the notes both browsers showed at convergence, plus the one the service worker pushed later
    projected = {i: r.body for i, r in notes.items()}
    assert {n["id"]: n["body"] for n in view["notes"]}.items() <= projected.items()
    assert sorted(set(projected.values()) - {n["body"] for n in view["notes"]}) == [
        "Written offline, sent by the service worker"]
    bodies = [n["body"] for n in view["notes"]]
    assert "Offline: studs bought, starting demo" in bodies and "Office: customer called, hold until Monday" in bodies
    assert (artifacts / "crew-offline-reload.png").is_file()
    # the job the office created in the browser is projected, with its customer, unassigned again
    eng = create_engine(db_url)
    try:
        async with eng.connect() as conn:
            new_job = (await conn.execute(select(t.jobs).where(t.jobs.c.id == result["new_job_id"]))).one()
            cust = (await conn.execute(select(t.customers).where(t.customers.c.id == new_job.customer_id))).one()
    finally:
        await eng.dispose()
    assert (new_job.title, new_job.status, cust.name, cust.phone) == ("E2E porch light", "lead", "E2E Customer", "+1 555 0177")
