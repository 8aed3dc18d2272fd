"""The ``syncd`` CLI: documented, scriptable (--json), and clear on bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_command_is_documented_in_the_readme():
    for name, cmd in cli.commands.items():
        assert f"syncd {name}" in README, f"`syncd {name}` is not in the README"
        if hasattr(cmd, "commands"):
            for sub in cmd.commands:
                assert f"syncd {name} {sub}" in README, f"`syncd {name} {sub}` is not in the README"


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.sqlite3"
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["migrate"], ["seed-demo", "--json"]):
        r = runner.invoke(cli, ["--database-url", url, *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    return runner, url


def test_verify_status_explain_and_compact_speak_json(seeded):
    runner, url = seeded
    r = runner.invoke(cli, ["--database-url", url, "verify", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    r = runner.invoke(cli, ["--database-url", url, "status", "--json"])
    st = json.loads(r.output)
    assert st["documents"] == 7 and st["projection_lag"] == 0 and st["devices"]
    from sqlalchemy import create_engine, text
    eng = create_engine(url.replace("+aiosqlite", ""))
    with eng.connect() as c:
        job_id = c.execute(text("select id from jobs where title = 'Kitchen remodel'")).scalar_one()
    eng.dispose()
    r = runner.invoke(cli, ["--database-url", url, "explain", f"job:{job_id}", "status", "--json"])
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["value"] == "scheduled" and out["rule"] == "owner_wins"
    r = runner.invoke(cli, ["--database-url", url, "explain", f"job:{job_id}", "status"])
    assert r.exit_code == 0 and "owner_wins" in r.output and "scheduled" in r.output
    r = runner.invoke(cli, ["--database-url", url, "compact", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 7
    r = runner.invoke(cli, ["--database-url", url, "verify"])
    assert r.exit_code == 0 and "OK" in r.output


def test_verify_exits_non_zero_on_a_difference(seeded):
    runner, url = seeded
    from sqlalchemy import create_engine, text
    eng = create_engine(url.replace("+aiosqlite", ""))
    with eng.begin() as c:
        c.execute(text("update customers set name = 'Tampered'"))
    eng.dispose()
    r = runner.invoke(cli, ["--database-url", url, "verify", "--json"])
    assert r.exit_code == 1, (r.output, r.exception)
    assert json.loads(r.output)["ok"] is False


@pytest.mark.parametrize("args", [["explain", "job:not-a-uuid", "status"],
                                  ["explain", "job:6f1c2d3e-0000-4000-8000-000000000000", "status"],
                                  ["explain", "bogus", "status", "--json"]])
def test_explain_bad_input_is_a_clear_error(seeded, args):
    runner, url = seeded
    r = runner.invoke(cli, ["--database-url", url, *args])
    assert r.exit_code != 0
    assert re.search(r"error|invalid|no document", r.output + (r.stderr if r.stderr_bytes else ""), re.I)


def test_serve_refuses_a_bad_gc_threshold_before_touching_the_database(tmp_path, monkeypatch):
    db = tmp_path / "never.sqlite3"
    monkeypatch.setenv("SYNCD_GC_THRESHOLD", "700,ten,10000")
    r = CliRunner().invoke(cli, ["--database-url", f"sqlite+aiosqlite:///{db}", "serve"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "SYNCD_GC_THRESHOLD must be three positive integers" in r.output
    assert not db.exists()
