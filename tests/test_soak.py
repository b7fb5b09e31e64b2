"""The soak: its pure summary over real drill summaries, and the runner end to end.

The summary.json fixtures in tests/fixtures/soak/ were written by real `twinsite drill` runs on
the lab (link-throttle on a machine at load 11-30: one run over the p99 budget, one over the
unavailability budget; six experiments, site-power-cut over its unavailability budget). The end-to-end test runs `twinsite soak` for real:
two drills of a short fixture experiment, each with its own lab, a Ctrl-C during the second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinsite import procs
from twinsite.drill import soak, soakrun

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "soak"
BRIEF = ROOT / "tests" / "fixtures" / "experiments" / "brief.yaml"


def load(name: str) -> dict:
    return json.loads((FIX / f"{name}.summary.json").read_text())


def meta(n: int, code: int | None = 1, samples=()) -> soak.RunMeta:
    return soak.RunMeta(n, f"2026-12-02T16:{n:02d}:00+00:00", 60.0 + n, (1.0 * n, 2.0, 3.0),
                        (4.0, 5.0, 6.0), code, "lab: starting\nthe lab did not start: boom",
                        samples)


def test_run_record_names_the_failed_tolerance_and_its_value():
    summary = load("throttle-p99-failed")
    r = soak.run_record(meta(1, samples=((5.0, 9.5), (10.0, 3.0))), summary)
    x = r["experiments"]["link-throttle"]
    v = summary["experiments"][0]["verdict"]
    assert x["status"] == "deviated"
    assert x["max_unavailable_s"] == v["max_unavailable_s"] == 0.175
    assert x["p99_during_ms"] == v["p99_during_ms"] == 1152.148
    assert x["p99_before_ms"] == v["latency_before"]["p99_ms"]
    assert x["failure"]["checks"] == [{"probe": "p99-during-fault-at-most-1000ms",
                                       "metric": "p99_during_ms", "value": 1152.148,
                                       "tolerance": "0 … 1000"}]
    assert r["load_max"] == 9.5 and r["load_start"] == [1.0, 2.0, 3.0]
    assert r["drill_duration_s"] == summary["duration_s"] and r["summary"] is True


def test_summary_counts_passes_and_spreads_over_real_runs():
    passing = load("six-site-power-cut-failed")
    runs = [soak.run_record(meta(1), passing),
            soak.run_record(meta(2), load("throttle-p99-failed")),
            soak.run_record(meta(3), load("throttle-unavailable-failed"))]
    s = soak.summarize(runs, planned=3)
    t = s["experiments"]["link-throttle"]
    assert (t["passes"], t["runs"]) == (1, 3)
    values = sorted([next(x for x in passing["experiments"] if x["name"] == "link-throttle")
                     ["verdict"]["max_unavailable_s"], 0.175, 24.935])
    assert t["max_unavailable_s"] == {"min": values[0], "median": values[1],
                                      "max": values[2], "n": 3}
    assert t["failed_tolerances"] == {"p99-during-fault-at-most-1000ms": 1,
                                      "writes-unavailable-at-most-3s": 1}
    assert [f["run"] for f in t["failures"]] == [2, 3]
    fire = s["experiments"]["site-power-cut"]
    assert (fire["passes"], fire["runs"]) == (0, 1)
    assert fire["failed_tolerances"] == {"writes-unavailable-at-most-12s": 1}
    assert fire["failures"][0]["checks"][0]["value"] == 24.499
    others = {n: e for n, e in s["experiments"].items()
              if n not in ("link-throttle", "site-power-cut")}
    assert len(others) == 4 and all((e["passes"], e["runs"]) == (1, 1) for e in others.values())
    assert s["runs_clean"] == 0 and s["drill_errors"] == []
    md = soak.markdown(s)
    assert "| link-throttle | 1/3 |" in md
    assert "run 03 link-throttle deviated: writes-unavailable-at-most-3s: measured 24.935" in md


def test_a_drill_without_summary_is_an_error_unless_interrupted():
    s = soak.summarize([soak.run_record(meta(1, 2), None), soak.run_record(meta(2, 130), None)],
                       planned=5, interrupted=True)
    assert [d["run"] for d in s["drill_errors"]] == [1]
    assert s["runs_done"] == 2 and s["runs_clean"] == 0 and s["experiments"] == {}
    assert "run 01: the drill wrote no summary (exit 2): the lab did not start: boom" in \
        soak.markdown(s)


def test_an_interrupted_experiment_is_not_a_run():
    summary = load("throttle-p99-failed")
    cut = json.loads(json.dumps(summary))
    cut["experiments"][0]["status"] = "interrupted"
    s = soak.summarize([soak.run_record(meta(1), summary), soak.run_record(meta(2, 130), cut)], 2)
    t = s["experiments"]["link-throttle"]
    assert (t["passes"], t["runs"], t["max_unavailable_s"]["n"]) == (0, 1, 1)


def test_soak_runs_drills_and_stops_cleanly_on_ctrl_c(tmp_path):
    """Two real drills of a short experiment; Ctrl-C once the first is summarized: the second
    drill is interrupted, soak.json/soak.md cover the runs so far, exit 130, no lab left."""
    state, reports = tmp_path / "lab", tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "twinsite.cli", "soak", "--runs", "2", "--state-dir", str(state),
         "--reports", str(reports), str(BRIEF)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        cwd=ROOT, start_new_session=True)
    try:
        def first_done() -> bool:
            found = list(reports.glob("soak/*/soak.json"))
            return bool(found) and json.loads(found[0].read_text())["runs_done"] == 1
        procs.wait_until(lambda: first_done() or proc.poll() is not None, timeout=150,
                         interval=0.2)
        assert proc.poll() is None, proc.stdout.read()
        log2 = next(reports.glob("soak/*")) / "run-02" / "drill.log"
        # the second drill has its signal handlers (it prints "drill:" after installing them)
        procs.wait_until(lambda: log2.is_file() and "drill:" in log2.read_text(), timeout=30)
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        procs.reap(proc)
    assert proc.returncode == 130, out
    folder = next(reports.glob("soak/*"))
    s = json.loads((folder / "soak.json").read_text())
    assert s["interrupted"] is True and s["runs_done"] == 2 and s["drill_errors"] == []
    e = s["experiments"]["brief"]
    assert e["runs"] == 1 and e["passes"] == 1, s
    run1 = json.loads((folder / "run-01" / "summary.json").read_text())
    assert e["max_unavailable_s"]["max"] == run1["experiments"][0]["verdict"]["max_unavailable_s"]
    kept = sorted(p.name for p in (folder / "run-01" / "brief").iterdir())
    assert kept == ["chaostoolkit.log", "journal.json", "verdict.json"]  # no history: it passed
    assert not (folder / "run-01" / "drill").exists()
    assert s["runs"][1]["exit_code"] == 130
    assert "| brief | 1/1 |" in (folder / "soak.md").read_text()
    from twinsite.lab import is_running
    assert not is_running(str(state))


def test_load_during_each_experiment_comes_from_its_journal_window():
    journals = {"a": {"start": "2026-12-02T16:00:10+00:00", "end": "2026-12-02T16:00:20+00:00"},
                "b": {"start": "2026-12-02T16:00:20+00:00", "end": "2026-12-02T16:00:40+00:00"},
                "c": {"start": "garbage"}}
    w = soak.experiment_windows("2026-12-02T16:00:00.000+00:00", journals)
    assert w == {"a": (10.0, 20.0), "b": (20.0, 40.0)}
    summary = {"experiments": [{"name": n, "status": "passed", "verdict": {}} for n in "abc"]}
    r = soak.run_record(meta(1, 0, samples=((5.0, 30.0), (15.0, 7.0), (25.0, 9.0), (35.0, 4.0))),
                        summary, w)
    assert [r["experiments"][n]["load_max"] for n in "abc"] == [7.0, 9.0, None]


def test_bad_run_count_is_one_line(capsys):
    assert soakrun.main(["--runs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "twinsite soak: --runs must be at least 1"
