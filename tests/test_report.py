"""The HTML drill report and the summary entries, on a synthetic history (no lab needed)."""

from __future__ import annotations

import base64
import re

from twinsite.checker import check
from twinsite.drill import results
from twinsite.report import data_uri, fault_windows, render_html, span_style, timeline_png


def synthetic_history(stall_from=8.0, stall_to=12.0, end=20.0, lose=()):
    """One writer at 20 writes/s; writes stall (fail) between stall_from and stall_to."""
    events, ids = [], []
    t, n = 0.0, 0
    while t < end:
        i = f"m{n}"
        events.append({"process": 0, "type": "invoke", "f": "send", "room": "r0", "id": i,
                       "time": round(t, 3), "site": "pangyo"})
        if stall_from <= t < stall_to:
            events.append({"process": 0, "type": "fail", "f": "send", "room": "r0", "id": i,
                           "time": round(t + 0.04, 3), "error": "timeout"})
        else:
            lat = 0.3 if stall_to <= t < stall_to + 1 else 0.005
            events.append({"process": 0, "type": "ok", "f": "send", "room": "r0", "id": i,
                           "time": round(t + lat, 3), "seq": n + 1})
            if i not in lose:
                ids.append(i)
        t += 0.05
        n += 1
    events.append({"type": "fault", "f": "start", "name": "site-power:pangyo", "time": 7.5})
    events.append({"type": "fault", "f": "stop", "name": "site-power:pangyo", "time": 12.5})
    events.append({"type": "ok", "f": "final-read", "room": "r0", "ids": ids, "time": end + 1})
    return sorted(events, key=lambda e: e["time"])


EXPERIMENT = {
    "title": "The Pangyo fire",
    "description": "All of pangyo loses power.",
    "steady-state-hypothesis": {"title": "t", "probes": [
        {"name": "lab-is-healthy", "type": "probe", "tolerance": True,
         "provider": {"type": "python", "module": "twinsite.chaos.probes", "func": "lab_healthy"}},
        {"name": "no-acknowledged-message-lost", "type": "probe", "tolerance": 0,
         "provider": {"type": "python", "module": "twinsite.chaos.probes",
                      "func": "verdict_metric", "arguments": {"metric": "lost"}}},
        {"name": "writes-unavailable-at-most-3s", "type": "probe",
         "tolerance": {"type": "range", "range": [0, 3.0]},
         "provider": {"type": "python", "module": "twinsite.chaos.probes",
                      "func": "verdict_metric", "arguments": {"metric": "max_unavailable_s"}}},
    ]},
}


def journal_for(verdict, deviated):
    probes = [{"activity": {"name": "lab-is-healthy"}, "status": "succeeded", "output": True,
               "tolerance_met": True}]
    return {"status": "completed", "deviated": deviated, "twinsite": {"verdict": verdict},
            "steady_states": {"before": {"steady_state_met": True, "probes": probes},
                              "after": {"steady_state_met": not deviated, "probes": probes}}}


def test_fault_windows_pair_start_and_stop():
    events = synthetic_history()
    assert fault_windows(events) == [("site-power:pangyo", 7.5, 12.5)]
    unfinished = [e for e in events if not (e.get("type") == "fault" and e["f"] == "stop")]
    assert fault_windows(unfinished) == [("site-power:pangyo", 7.5, None)]


def test_timeline_png_is_a_png():
    png = timeline_png(synthetic_history(), title="x")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2_000 < len(png) < 200_000
    assert data_uri(png).startswith("data:image/png;base64,")


def test_checks_name_the_failed_tolerance():
    events = synthetic_history()
    verdict = check(events)
    assert verdict["max_unavailable_s"] > 3.0 and verdict["lost"] == 0
    x = results.entry("site-power-cut", "experiments/site-power-cut.yaml", EXPERIMENT,
                      journal_for(verdict, deviated=True), 31.26)
    assert x["status"] == "deviated" and x["deviated"] is True
    assert x["failed_checks"] == ["writes-unavailable-at-most-3s"]
    by_name = {c["probe"]: c for c in x["checks"]}
    assert by_name["no-acknowledged-message-lost"]["ok"] is True
    assert by_name["lab-is-healthy"]["ok"] is True and by_name["lab-is-healthy"]["value"] is True
    assert by_name["writes-unavailable-at-most-3s"]["tolerance_text"] == "0 … 3"
    assert x["duration_s"] == 31.3


def test_lost_message_fails_the_lost_check():
    events = synthetic_history(stall_from=99, stall_to=99, lose=("m3",))
    verdict = check(events)
    assert verdict["lost"] == 1
    x = results.entry("zone-outage", "z.yaml", EXPERIMENT, journal_for(verdict, True), 1.0)
    assert x["failed_checks"] == ["no-acknowledged-message-lost"]


def test_status_of_journals():
    assert results.status_of(None) == "error"
    assert results.status_of({"status": "completed", "deviated": False}) == "passed"
    assert results.status_of({"status": "completed", "deviated": True}) == "deviated"
    assert results.status_of({"status": "failed", "deviated": False}) == "failed"
    assert results.status_of({"status": "interrupted"}) == "interrupted"
    # chaoslib says "completed" when the check before the method failed, or an action failed
    unmet = {"status": "completed", "deviated": False,
             "steady_states": {"before": {"steady_state_met": False, "probes": []}}}
    assert results.status_of(unmet) == "failed"
    broken = {"status": "completed", "deviated": False, "run": [{"status": "failed"}],
              "steady_states": {"before": {"steady_state_met": True}}}
    assert results.status_of(broken) == "failed"


def test_report_html_is_self_contained_with_plots_and_verdict_table():
    good = synthetic_history(stall_from=99, stall_to=99)
    bad = synthetic_history()
    vg, vb = check(good), check(bad)
    summary = {"stack": "lab", "started": "2026-11-27T21:00:00+00:00", "duration_s": 62.0,
               "experiments": [
                   results.entry("zone-outage", "experiments/zone-outage.yaml", EXPERIMENT,
                                 journal_for(vg, False), 30.0),
                   results.entry("site-power-cut", "experiments/site-power-cut.yaml", EXPERIMENT,
                                 journal_for(vb, True), 32.0)]}
    page = render_html(summary, {"zone-outage": good, "site-power-cut": bad})
    # self-contained: nothing to fetch (no src/href to another host, no CSS imports)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "<script" not in page
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 2
    assert all(base64.b64decode(b)[:4] == b"\x89PNG" for b in imgs)
    # the verdict table and the summary say what happened, with numbers
    assert "1/2 experiments" in page
    assert "writes-unavailable-at-most-3s" in page and "NOT MET" in page
    assert f"<td class=num>{vb['acked']}</td>" in page
    assert "longest write outage (s)" in page
    assert page.count("<table>") >= 5  # summary + per experiment checks and verdict


def power_journal(dropped):
    """A journal of a grid power loss whose lab answer reports `dropped` (None: not reported)."""
    done = {"ok": True, "killed": ["nats:pangyo-a"]}
    if dropped is not None:
        done["unsynced_dropped"] = dropped
    cut = {"activity": {"name": "grid-loses-power"}, "status": "succeeded",
           "start": "2026-12-02T10:00:05", "output": {
               "fault": {"kind": "site-power-loss", "site": "all"},
               "effect": {"action": "down", "zones": ["pangyo-a", "ansan-a"], "mode": "power",
                          "drops_unsynced": True, "marker": "grid-power"},
               "done": done, "faults_ended": []}}
    restore = {"activity": {"name": "restore"}, "status": "succeeded", "output": {
        "effect": {"action": "restore", "zones": ["pangyo-a", "ansan-a"]}, "done": {"ok": True}}}
    j = journal_for({"lost": 3, "max_unavailable_s": 9.0}, deviated=True)
    j["run"] = [cut, restore]
    return j


def test_power_losses_sum_what_the_lab_dropped_and_tell_unreported_apart():
    got = results.power_losses(power_journal({"bytes": 5000, "files": 3}))
    assert got["unsynced_dropped"] == {"bytes": 5000, "files": 3}
    assert [f["marker"] for f in got["faults"]] == ["grid-power"]
    assert got["faults"][0]["zones"] == ["pangyo-a", "ansan-a"]
    assert results.power_losses(power_journal(None))["unsynced_dropped"] is None
    assert results.power_losses(journal_for({"lost": 0}, deviated=False)) is None
    crash = power_journal({"bytes": 1, "files": 1})
    crash["run"][0]["output"]["effect"]["drops_unsynced"] = False  # a crash keeps the page cache
    assert results.power_losses(crash) is None


def test_report_marks_power_loss_and_shows_dropped_bytes_per_experiment():
    events = synthetic_history()
    lossy = results.entry("grid", "experiments/grid.yaml", EXPERIMENT,
                          power_journal({"bytes": 2_500_000, "files": 7}), 30.0)
    unreported = results.entry("k8s-grid", "experiments/grid.yaml", EXPERIMENT,
                               power_journal(None), 30.0)
    calm = results.entry("calm", "experiments/calm.yaml", EXPERIMENT,
                         journal_for({"lost": 0, "max_unavailable_s": 0.0}, False), 30.0)
    page = render_html({"stack": "lazy-fsync", "experiments": [lossy, unreported, calm]},
                       {"grid": events})
    assert "2.4 MiB in 7 files" in page and "2500000 bytes" in page
    assert "not simulated by the target" in page
    assert "no power loss" in page
    assert page.count("Power was cut") == 2  # the two power-loss experiments, not the calm one


def test_power_loss_windows_are_hatched_and_link_faults_are_not():
    for marker in ("grid-power", "site-power:pangyo", "zone-power:ansan-b"):
        assert span_style(marker).get("hatch"), marker
    for marker in ("zone-crash:ansan-b", "throttle:ansan<->pangyo", "partition:ansan<->pangyo"):
        assert not span_style(marker).get("hatch"), marker
    assert timeline_png(synthetic_history())[:8] == b"\x89PNG\r\n\x1a\n"
