"""Smoke test of the PWA bench (``bench/engine_pwa.py``, ``bench/pwa/pwa_bench.mjs``).

Runs ``python -m bench --only 'pwa.*' --quick`` (a real server, Chromium, ~30-60 s) and checks
that every measurement ran and produced its rows. It never checks a speed: the numbers depend
on the machine and its load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_pwa_browser_e2e import PWA, ROOT, _require  # type: ignore[import-not-found]  # CI=true: fail, never skip

pytestmark = pytest.mark.node


def test_pwa_bench_quick(tmp_path: Path) -> None:
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    _require(Path(chromium).is_file(), f"Chromium not found at {chromium} (apt-get install -y chromium)")
    _require(shutil.which("node"), "node is not installed")
    _require((PWA / "node_modules" / "playwright-core").is_dir(), "pwa/node_modules is missing (cd pwa && npm ci)")
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("BENCH_PWA_SAMPLES", None)
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "pwa.*", "--json", str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    result = json.loads(out.read_text())
    by_name = {m["name"]: m for m in result["results"]}
    expected = {"pwa.bundle", "pwa.edit_latency", "pwa.cold_start_offline", "pwa.first_load_slow3g"}
    assert expected <= set(by_name), sorted(by_name)
    for name in expected:
        m = by_name[name]
        assert m["status"] == "ok", (name, m)
        values = [r["value"] for r in m["rows"]]
        assert values and values[0] is not None, (name, m["rows"])
        notes = m["rows"][0]["notes"]
        assert notes.startswith(("MET", "NOT met")), (name, m["rows"][0])  # a verdict, whichever it is
    # on Slow 3G the sign-in went through (index.html's form hands over to the app)
    slow = {r["metric"].strip(): r for r in by_name["pwa.first_load_slow3g"]["rows"]}
    assert slow["first load -> signed in (app screen), median"]["value"], slow
    # the offline start really was offline and served by the service worker
    offline = {r["metric"].strip(): r for r in by_name["pwa.cold_start_offline"]["rows"]}
    assert offline["offline and served by the service worker"]["value"] == "yes", offline
