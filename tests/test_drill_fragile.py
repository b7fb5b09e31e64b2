"""A drill can fail: the Pangyo fire against the fragile stack (two sites, no tie-breaker).

Without a third site, losing pangyo (3 of the 5 servers) loses the Raft majority of every group
that has a majority of its replicas there, so writes stall until power returns. The fragile stack
keeps five replicas placed without regard to sites ("five copies in two data centers"), so every
group has three in pangyo: the failure is deterministic, not a matter of lucky placement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from twinsite import lab as labapi
from twinsite.topology import load_stack

ROOT = Path(__file__).resolve().parent.parent


def test_fragile_stack_puts_a_majority_of_every_group_in_pangyo():
    topo = load_stack("fragile", ROOT)
    pangyo = len(topo.site("pangyo").zones)
    assert len(topo.sites) == 2 and topo.messaging.unique_placement is None
    assert topo.messaging.stream_replicas == len(topo.zones) == 5
    assert pangyo > len(topo.zones) // 2


def test_site_power_cut_fails_on_the_fragile_stack(tmp_path):
    state, reports = tmp_path / "lab", tmp_path / "reports"
    try:
        r = subprocess.run([sys.executable, "-m", "twinsite.cli", "drill", "site-power-cut",
                            "--stack", "fragile", "--state-dir", str(state),
                            "--reports", str(reports)],
                           capture_output=True, text=True, timeout=170, cwd=ROOT)
    finally:
        labapi.down(str(state))  # the drill tears it down; this only guards a crashed drill
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    [x] = summary["experiments"]
    assert summary["stack"] == "fragile"
    assert x["name"] == "site-power-cut" and x["status"] == "deviated" and x["deviated"]
    # the right reason: writes stalled past the budget; nothing acknowledged was lost
    assert x["failed_checks"][0] == "writes-unavailable-at-most-12s", out[-3000:]
    # (writes that waited out the whole stall may also push the p99 over its budget)
    assert set(x["failed_checks"]) <= {"writes-unavailable-at-most-12s",
                                       "p99-during-fault-at-most-9000ms"}
    v = x["verdict"]
    assert v["max_unavailable_s"] > 12.0
    assert v["lost"] == 0 and v["duplicates"] == 0 and v["unread_rooms"] == 0
    # the terminal says so too, and the report and journal are there
    assert "DEVIATED" in r.stdout and "writes-unavailable-at-most-12s" in r.stdout
    run = reports / "latest" / "site-power-cut"
    assert json.loads((run / "journal.json").read_text())["deviated"] is True
    assert (run / "history.jsonl").stat().st_size > 0
    assert "data:image/png;base64," in (reports / "latest" / "report.html").read_text()
    assert not labapi.is_running(str(state))
