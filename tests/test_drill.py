"""`twinsite drill` without a lab: usage errors, experiment resolution, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from twinsite.drill import cli

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "twinsite.cli", "drill", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def test_unknown_experiment_is_one_line_exit_2():
    r = run_cli("no-such-experiment")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "unknown experiment 'no-such-experiment'" in r.stderr
    assert "site-power-cut" in r.stderr  # names what exists
    assert "Traceback" not in r.stderr


def test_unknown_stack_is_one_line_exit_2(tmp_path):
    r = run_cli("zone-outage", "--stack", "nosuch", "--reports", str(tmp_path))
    assert r.returncode == 2
    assert "stack file not found" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_resolve_orders_all_and_accepts_names_and_files():
    paths = cli.resolve([])
    assert [p.stem for p in paths][:len(cli.ORDER)] == list(cli.ORDER)
    assert cli.resolve(["site-power-cut"]) == [ROOT / "experiments" / "site-power-cut.yaml"]
    f = ROOT / "experiments" / "link-throttle.yaml"
    assert cli.resolve([str(f)]) == [f]
    with pytest.raises(cli.DrillError, match="unknown experiment"):
        cli.resolve(["zone-outage", "nope"])


def test_terminal_table_and_latest(tmp_path):
    exps = [{"name": "zone-outage", "status": "passed", "duration_s": 28.4, "failed_checks": [],
             "verdict": {"acked": 3100, "lost": 0, "duplicates": 0, "max_unavailable_s": 2.25,
                         "p99_during_ms": 480.0}},
            {"name": "site-power-cut", "status": "deviated", "duration_s": 33.0,
             "failed_checks": ["writes-unavailable-at-most-12s"],
             "power_loss": {"faults": [], "unsynced_dropped": {"bytes": 4096, "files": 2}},
             "verdict": {"acked": 2000, "lost": 0, "duplicates": 0, "max_unavailable_s": 21.7,
                         "p99_during_ms": 9000.0}}]
    table = cli.terminal_table(exps)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["experiment", "status"]
    assert "PASSED" in lines[2] and "3100" in lines[2] and "2.2" in lines[2]
    assert "DEVIATED" in lines[3] and "writes-unavailable-at-most-12s" in lines[3]
    assert "4096 B/2 files" in lines[3] and "B/" not in lines[2]  # no power loss: no bytes
    out = tmp_path / "20260101-000000"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"experiments": exps}))
    latest = cli.point_latest(tmp_path, out)
    assert json.loads((latest / "summary.json").read_text())["experiments"][0]["name"] == \
        "zone-outage"
    newer = tmp_path / "20260101-000100"
    newer.mkdir()
    (newer / "summary.json").write_text("{}")
    assert json.loads((cli.point_latest(tmp_path, newer) / "summary.json").read_text()) == {}


def test_progress_lines_are_condensed(capsys):
    cli.show_progress("\x1b[32m[2026-11-27 21:26:02 INFO] Action: power-off-pangyo\x1b[0m\n", 3.21)
    cli.show_progress("[2026-11-27 21:26:02 DEBUG] noise\n", 1)
    cli.show_progress("plain text\n", 1)
    out = capsys.readouterr().out
    assert out == "     3.2s  Action: power-off-pangyo\n"
