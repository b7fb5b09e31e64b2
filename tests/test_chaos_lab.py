"""End to end: chaostoolkit runs a real experiment against a real lab, and the extension's
actions/probes work on it (argument checks against the lab's names, fault markers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed

from twinsite import procs
from twinsite import lab as labapi
from twinsite.chaos import actions, probes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("chaos-lab")
    client = labapi.up(stack="lab", state_dir=str(d), timeout=90, die_with_parent=True)
    pids = [n["pid"] for n in client.status()["nodes"] if n.get("pid")]
    try:
        yield d
    finally:
        labapi.down(str(d))
        procs.wait_until(lambda: not any(procs.pid_alive(p) for p in pids), 10,
                         what="every lab process gone")


def test_actions_check_names_against_the_lab(lab_dir):
    c = {"state_dir": str(lab_dir)}
    with pytest.raises(ActivityFailed, match="unknown zone 'pangyo-z'"):
        actions.kill_zone("pangyo-z", configuration=c)
    with pytest.raises(ActivityFailed, match="unknown site 'busan'"):
        actions.cut_power("busan", configuration=c)
    with pytest.raises(ActivityFailed, match="unknown site or zone 'mars'"):
        actions.partition_link("pangyo", "mars", configuration=c)
    with pytest.raises(ActivityFailed, match="unknown site or zone 'nowhere'"):
        actions.restore("nowhere", configuration=c)
    with pytest.raises(ActivityFailed, match="unknown site 'busan'"):
        actions.move_stream_leader("busan", configuration=c)
    with pytest.raises(ActivityFailed, match="stream NOPE"):
        actions.kill_leader_zone(stream="NOPE", configuration=c)
    assert probes.lab_healthy(configuration=c) is True


def test_move_stream_leader_between_sites(lab_dir):
    from twinsite.chaos.drivers import get_driver
    c = {"state_dir": str(lab_dir)}
    # TALK-00 prefers pangyo: moved to ansan, the gateways' balancer brings it home
    moved = actions.move_stream_leader("ansan", "TALK-00", configuration=c)
    assert moved["leader"].startswith("ansan-")
    procs.wait_until(lambda: get_driver(c).stream_leader("TALK-00").startswith("pangyo-"), 30,
                     what="the balancer to return TALK-00 to pangyo")
    again = actions.move_stream_leader("pangyo", "TALK-00", configuration=c)  # already there
    assert again["leader"] == get_driver(c).stream_leader("TALK-00")


def test_balance_waits_for_the_move_back_and_then_for_settled_leadership(lab_dir):
    """A fault must not land inside a leader move (its 503s send clients to the other site):
    after a move away, balance_leaders(settle_s) returns only once the balancer brought the shard
    home AND the placement held that long."""
    from twinsite.chaos.drivers import get_driver
    c = {"state_dir": str(lab_dir)}
    actions.move_stream_leader("ansan", "TALK-00", configuration=c)
    done = actions.balance_leaders(timeout_s=30, settle_s=1.5, configuration=c)
    assert get_driver(c).stream_leader("TALK-00").startswith("pangyo-")
    assert done["settled_s"] >= 1.5 and done["waited_s"] >= done["settled_s"]
    assert sum(done["placement"].values()) == done["shards"]
    assert set(done["placement"]) == {"pangyo", "ansan"}


def test_chaos_run_zone_outage_passes_and_records_the_fault(lab_dir, tmp_path):
    env = {**os.environ, "TWINSITE_LAB_DIR": str(lab_dir)}
    env.pop("TWINSITE_RUN_DIR", None)  # the history must land next to the journal
    journal_path = tmp_path / "run" / "journal.json"
    journal_path.parent.mkdir()
    r = subprocess.run([sys.executable, "-m", "chaostoolkit", "--no-version-check", "--no-log-file",
                        "run", "--journal-path", str(journal_path),
                        str(ROOT / "experiments" / "zone-outage.yaml")],
                       capture_output=True, text=True, timeout=150, cwd=tmp_path, env=env)
    out = r.stdout + r.stderr
    journal = json.loads(journal_path.read_text())
    assert r.returncode == 0, out[-3000:]
    assert journal["status"] == "completed" and journal["deviated"] is False
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    verdict = journal["twinsite"]["verdict"]
    assert verdict["acked"] > 300 and verdict["lost"] == 0 and verdict["unread_rooms"] == 0
    assert verdict["latency_during"]["count"] > 0  # traffic flowed through the fault window
    history = journal_path.parent / "history.jsonl"
    faults = [json.loads(line) for line in history.read_text().splitlines() if '"fault"' in line]
    # the zone that died is the pangyo zone that led a shard; the restore ended its fault
    kill = next(r["output"] for r in journal["run"]
                if r["activity"]["name"] == "power-off-the-pangyo-zone-leading-the-stream")
    [leader] = kill["effect"]["zones"]
    assert leader.startswith("pangyo-") and kill["stream"].startswith("TALK-")
    assert [(f["f"], f["name"]) for f in faults] == [("start", f"zone-power:{leader}"),
                                                     ("stop", f"zone-power:{leader}")]
    # a shard leader died, so its rooms went through an election: they paused, then resumed; the
    # rooms other shards carried kept writing (sharding: the service as a whole barely paused)
    pangyo_rooms = verdict["by_leader_site"]["pangyo"]
    assert 1.0 < pangyo_rooms["room_unavailable_max_s"] <= 12.0, verdict["by_leader_site"]
    assert verdict["max_unavailable_s"] <= pangyo_rooms["room_unavailable_max_s"]
    assert json.loads((journal_path.parent / "verdict.json").read_text())["acked"] == \
        verdict["acked"]
    # the method's restore converged the lab; the rollback found nothing left to do
    assert probes.lab_healthy(configuration={"state_dir": str(lab_dir)}) is True


def test_drill_refuses_a_lab_running_another_stack(lab_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "drill", "zone-outage", "--stack",
                        "fragile", "--state-dir", str(lab_dir), "--reports", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert "the lab is up with stack 'lab', not 'fragile'" in r.stderr
    assert "Traceback" not in r.stderr
    assert labapi.is_running(str(lab_dir))  # not ours to tear down
    assert not list(tmp_path.iterdir())  # and no empty report folder
