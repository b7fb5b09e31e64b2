"""The chaostoolkit extension without a lab: discovery, the driver layer, argument checking."""

from __future__ import annotations

import inspect
from pathlib import Path
import json
import subprocess
import sys

import pytest
from chaoslib.exceptions import ActivityFailed

from twinsite.chaos import actions, probes
from twinsite.chaos.controls import traffic
from twinsite.chaos.drivers import get_driver

ACTIONS = {"kill_zone", "kill_leader_zone", "cut_power", "restore", "throttle_link",
           "partition_link", "heal_links", "move_stream_leader", "balance_leaders"}
PROBES = {"lab_healthy", "verdict", "verdict_metric"}


def test_activities_follow_chaostoolkit_conventions():
    assert set(actions.__all__) == ACTIONS and set(probes.__all__) == PROBES
    for mod in (actions, probes):
        for name in mod.__all__:
            params = list(inspect.signature(getattr(mod, name)).parameters.values())
            assert [p.name for p in params[-2:]] == ["configuration", "secrets"], name
            assert all(p.default is None for p in params[-2:])
            assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    sig = inspect.signature(actions.throttle_link)
    assert sig.parameters["bandwidth_kbit"].default is None
    assert sig.parameters["jitter_ms"].default == 0
    assert inspect.signature(actions.kill_zone).parameters["mode"].default == "power"


def test_discover_lists_actions_and_probes():
    import twinsite
    d = twinsite.discover(discover_system=False)
    found = {(a["type"], a["name"]) for a in d["activities"]}
    assert {("action", n) for n in ACTIONS} | {("probe", n) for n in PROBES} == found
    kill = next(a for a in d["activities"] if a["name"] == "kill_zone")
    assert kill["mod"] == "twinsite.chaos.actions"
    assert [a["name"] for a in kill["arguments"]][:2] == ["zone", "mode"]
    assert d["extension"]["name"] == "twinsite"


def test_chaos_discover_cli(tmp_path):
    out = tmp_path / "discovery.json"
    r = subprocess.run([sys.executable, "-m", "chaostoolkit", "--no-version-check", "--no-log-file",
                        "discover", "twinsite", "--no-install", "--no-system-info",
                        "--discovery-path", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {a["name"] for a in json.loads(out.read_text())["activities"]}
    assert ACTIONS | PROBES == names


def test_k8s_target_needs_a_stack_and_a_kube_context(monkeypatch, tmp_path):
    monkeypatch.delenv("TWINSITE_STACK", raising=False)
    with pytest.raises(ActivityFailed, match="target k8s needs a stack"):
        get_driver({"target": "k8s"})
    with pytest.raises(ActivityFailed, match="Pulumi.nope.yaml"):
        get_driver({"target": "k8s", "stack": "nope"})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n"
                          "clusters:\n- name: x\n  cluster: {server: 'https://127.0.0.1:1'}\n"
                          "contexts:\n- name: other\n  context: {cluster: x, user: y}\n"
                          "users:\n- name: y\n  user: {token: t}\ncurrent-context: other\n")
    with pytest.raises(ActivityFailed, match="site pangyo: kube context 'pangyo' is not in "
                                             ".*kubeconfig \\(contexts: other\\)"):
        actions.cut_power("pangyo", configuration={"target": "k8s", "stack": "lab",
                                                   "kubeconfig": str(kubeconfig)})
    with pytest.raises(ActivityFailed, match="unknown target 'mars'"):
        probes.lab_healthy(configuration={"target": "mars"})


def test_default_target_is_the_lab(monkeypatch):
    monkeypatch.delenv("TWINSITE_TARGET", raising=False)
    assert type(get_driver(None)).__name__ == "LabDriver"
    assert type(get_driver({"target": ""})).__name__ == "LabDriver"


@pytest.mark.parametrize("call, message", [
    (lambda c: actions.kill_zone("pangyo-a", mode="flood", configuration=c), "mode must be one of"),
    (lambda c: actions.throttle_link("pangyo", "ansan", -5, configuration=c), "latency_ms must be"),
    (lambda c: actions.throttle_link("pangyo", "ansan", "100", configuration=c),
     "latency_ms must be"),
    (lambda c: actions.throttle_link("pangyo", "ansan", 100, bandwidth_kbit=-1, configuration=c),
     "bandwidth_kbit must be"),
    (lambda c: actions.kill_leader_zone(mode="flood", configuration=c), "mode must be one of"),
    (lambda c: actions.restore("pangyo", timeout_s=0, configuration=c), "timeout_s must be"),
    (lambda c: actions.heal_links("pangyo", configuration=c), "name both ends"),
    (lambda c: actions.throttle_link("pangyo", "ansan", 100, jitter_ms=-1, configuration=c),
     "jitter_ms must be"),
])
def test_bad_arguments_fail_before_touching_the_lab(call, message, tmp_path):
    with pytest.raises(ActivityFailed, match=message):
        call({"state_dir": str(tmp_path / "no-lab")})


def test_actions_on_a_lab_that_is_not_running(tmp_path):
    c = {"state_dir": str(tmp_path / "no-lab")}
    with pytest.raises(ActivityFailed, match="the lab is not running"):
        actions.cut_power("pangyo", configuration=c)
    assert probes.lab_healthy(configuration=c) is False


def test_verdict_needs_the_traffic_control():
    with pytest.raises(ActivityFailed, match="declare the control"):
        probes.verdict()
    with pytest.raises(ActivityFailed, match="declare the control"):
        probes.verdict_metric("lost", configuration={"target": "lab"})


def test_run_dir_follows_the_journal(monkeypatch, tmp_path):
    monkeypatch.delenv("TWINSITE_RUN_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["chaos", "run", "--journal-path", str(tmp_path / "j.json"),
                                      "x.yaml"])
    assert traffic.run_dir_for({}) == tmp_path
    monkeypatch.setenv("TWINSITE_RUN_DIR", str(tmp_path / "env"))
    assert traffic.run_dir_for({}) == tmp_path / "env"
    assert traffic.run_dir_for({"run_dir": str(tmp_path / "cfg")}) == tmp_path / "cfg"


def chaos_run_zone_outage(tmp_path, **env) -> tuple[subprocess.CompletedProcess, str]:
    """`chaos run experiments/zone-outage.yaml` with no lab running, and its output."""
    env = {**__import__("os").environ, "TWINSITE_LAB_DIR": str(tmp_path / "no-lab"), **env}
    r = subprocess.run([sys.executable, "-m", "chaostoolkit", "--no-version-check", "--no-log-file",
                        "run", "--journal-path", str(tmp_path / "journal.json"),
                        str(Path(__file__).resolve().parent.parent / "experiments" /
                            "zone-outage.yaml")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    return r, r.stdout + r.stderr


def test_chaos_run_without_a_lab_stops_with_one_clear_line(tmp_path):
    r, out = chaos_run_zone_outage(tmp_path)
    assert r.returncode != 0
    assert "twinsite traffic cannot start: the lab is not running" in out
    assert "Traceback" not in out
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "interrupted" and journal["run"] == []  # no fault was injected


def test_a_mistyped_stack_stops_the_run_instead_of_falling_back(tmp_path):
    r, out = chaos_run_zone_outage(tmp_path, TWINSITE_STACK="lba")
    assert r.returncode != 0 and "Traceback" not in out
    assert "twinsite traffic cannot start: " in out and "Pulumi.lba.yaml" in out, out[-1500:]


def test_actions_record_markers_through_the_run_context(tmp_path):
    """A fake driver (the only double here: it stands for a target, the run context is real):
    the fault starts a marker, the restore that covers it stops it, the journal gets both."""
    from twinsite import faults
    from twinsite.chaos.run import RUN_KEY, Run
    from twinsite.topology import load_stack

    class Traffic:
        marks = []

        def mark_fault(self, name, phase):
            self.marks.append((name, phase))

    class Driver:
        applied = []

        def topology(self):
            return load_stack("lab")

        def apply(self, effect):
            self.applied.append(effect)
            return {"killed": list(effect.zones)}

    run = Run(run_dir=tmp_path, traffic=Traffic())
    driver = Driver()
    c = {RUN_KEY: run}
    first = actions._apply(faults.SitePowerLoss("pangyo"), c, None, driver)
    assert first["done"] == {"killed": ["pangyo-a", "pangyo-b", "pangyo-c"]}
    assert first["effect"]["marker"] == "site-power:pangyo" and first["faults_ended"] == []
    back = actions._apply(faults.Restore("pangyo"), dict(c), None, driver)  # activities: a copy
    assert back["faults_ended"] == ["site-power:pangyo"]
    assert Traffic.marks == [("site-power:pangyo", "start"), ("site-power:pangyo", "stop")]
    assert run.active == ()


def test_fault_start_records_which_site_led_each_room(tmp_path):
    """The leaders marker precedes the fault's start marker and maps every room of the traffic to
    the site leading its shard *before* the fault was applied."""
    from types import SimpleNamespace

    from twinsite import capacity, faults, shards
    from twinsite.chaos.run import RUN_KEY, Run
    from twinsite.topology import load_stack

    topo = load_stack("lab")
    n = capacity.shard_count(topo)
    rooms = ["a-r0", "a-r1", "a-r2"]
    marks = []

    class Traffic:
        driver = SimpleNamespace(rooms=rooms)

        def mark_fault(self, name, phase):
            marks.append(("fault", name, phase))

        def mark_leaders(self, by_room):
            marks.append(("leaders", by_room))

    class Driver:
        powered = True

        def topology(self):
            return topo

        def shard_leaders(self):  # pangyo's shards lose their leader once the power is cut
            return {shards.stream_name(i): shards.preferred_site(i, topo)
                    if self.powered or shards.preferred_site(i, topo) != "pangyo" else None
                    for i in range(n)}

        def apply(self, effect):
            self.powered = False
            return {}

    run = Run(run_dir=tmp_path, traffic=Traffic())
    actions._apply(faults.SitePowerLoss("pangyo"), {RUN_KEY: run}, None, Driver())
    want = {r: shards.preferred_site(shards.shard_of(r, n), topo) for r in rooms}
    assert marks == [("leaders", want), ("fault", "site-power:pangyo", "start")]
    assert None not in want.values()


def _info(leader, replicas, num_replicas=3):
    return {"config": {"num_replicas": num_replicas},
            "cluster": {"leader": leader, "replicas": [{"name": r} for r in replicas]}}


@pytest.mark.parametrize("doc, leader, servers, consistent", [
    # a settled R3 stream: leader + two other peers
    (_info("pangyo-a", ["ansan-b", "witness-a"]), "pangyo-a",
     ["pangyo-a", "ansan-b", "witness-a"], True),
    # the baseline flake: mid leader change the leader is also listed as a replica, so the
    # ansan replica is missing from the view - it must not conclude "no replica on ansan"
    (_info("pangyo-c", ["pangyo-c", "witness-a"]), "pangyo-c", ["pangyo-c", "witness-a"], False),
    # fewer distinct servers than the stream's replica count
    (_info("pangyo-c", ["witness-a"]), "pangyo-c", ["pangyo-c", "witness-a"], False),
    # no leader (an election) but every peer listed: consistent, no leader yet
    (_info(None, ["pangyo-a", "ansan-b", "witness-a"]), None,
     ["pangyo-a", "ansan-b", "witness-a"], True),
    (_info(None, ["pangyo-a"]), None, ["pangyo-a"], False),
    # an R1 stream has no other peers
    (_info("ansan-a", [], num_replicas=1), "ansan-a", ["ansan-a"], True),
])
def test_placement_view_judges_mid_transition_views_inconsistent(doc, leader, servers,
                                                                  consistent):
    from twinsite.chaos.drivers.jetstream import placement_view
    assert placement_view(doc) == (leader, servers, consistent)
