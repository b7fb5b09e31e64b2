"""Faults of twinsite itself, with real processes: a real `twinsite drill`, a real lab, real
chaostoolkit runs of the short experiments in tests/fixtures/experiments/.

- SIGTERM (then a second signal) during an experiment's pause: stopped at once, rolled back, the
  lab it started is down, the summary says `interrupted`, exit 130.
- Ctrl-C when the lab was up before: rolled back, the lab stays up.
- An experiment that hangs printing nothing is cut off at --experiment-timeout.
- chaostoolkit dying without a journal, a corrupt verdict.json: one line, no traceback.
- SIGKILL of the drill mid-fault, SIGKILL of the lab supervisor mid-fault: the next drill /
  `lab up` starts clean (no process of the old lab left) and no earlier report is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from twinsite import lab as labapi
from twinsite import procs
from twinsite.drill import cli
from twinsite.lab import state as labstate

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "experiments"


class Drill:
    """`twinsite drill` as a child process; its output collected line by line as it comes."""

    def __init__(self, experiment: str, state: Path, reports: Path, *args: str, pause_s=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if pause_s is not None:
            env["TWINSITE_TEST_PAUSE_S"] = str(pause_s)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twinsite.cli", "drill", str(FIXTURES / f"{experiment}.yaml"),
             "--state-dir", str(state), "--reports", str(reports), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=ROOT, env=env)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    @property
    def output(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(text in ln for ln in self.lines)
                                    or self.proc.poll() is not None, timeout)
        assert ok and text in self.output, f"no {text!r} in:\n{self.output[-4000:]}"

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def lab_records(state: Path) -> list[dict]:
    st = labstate.read_state(state) or {}
    recs = [st.get("supervisor")] + list((st.get("children") or {}).values())
    assert len([r for r in recs if r]) >= 8, st  # supervisor, 7 servers, fabric, gateways ...
    return [r for r in recs if r]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (our tmp folders are unique)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmd and (d / "stat").read_text().split(") ", 1)[1][0] != "Z":
                found.append(f"{d.name}: {cmd}")
        except OSError:
            continue
    return found


def assert_nothing_left(state: Path, recs: list[dict]) -> None:
    alive = [r for r in recs if labstate.same_process(r)]
    assert not alive, alive
    assert not processes_mentioning(str(state)), processes_mentioning(str(state))


def only_summary_entry(reports: Path) -> dict:
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    [x] = summary["experiments"]
    return x


# --- the drill starts the lab ---------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_sigterm_during_a_pause_rolls_back_and_takes_the_lab_down(tmp_path):
    state, reports = tmp_path / "lab", tmp_path / "reports"
    d = Drill("pause", state, reports, pause_s=120)
    try:
        d.wait_for("Pausing after activity", 180)
        recs = lab_records(state)
        signalled = time.time()
        d.proc.send_signal(signal.SIGTERM)
        d.wait_for("interrupted: chaostoolkit rolls back", 10)
        reacted = time.time() - signalled
        d.wait_for("lab restored", 30)
        restored = time.time() - signalled
        d.proc.send_signal(signal.SIGINT)  # a second, impatient Ctrl-C
        rc = d.wait(120)
        exited = time.time() - signalled
    finally:
        d.kill()
        labapi.down(str(state))
    out = d.output
    assert rc == 130, out[-4000:]
    assert "already stopping" in out and "Traceback" not in out
    x = only_summary_entry(reports)  # the second signal did not lose it
    assert x["name"] == "pause" and x["status"] == "interrupted" and x["error"] == "interrupted"
    journal = json.loads((reports / "latest" / "pause" / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    # cut during the pause: the fault was on, the step after the pause never ran
    assert [(r["activity"]["name"], r["status"]) for r in journal["run"]] == \
        [("power-off-pangyo-a", "succeeded")]
    [rollback] = journal["rollbacks"]
    assert rollback["activity"]["name"] == "restore-everything"
    assert rollback["status"] == "succeeded"
    rollback_after = datetime.fromisoformat(rollback["start"]).timestamp() - signalled
    # the 120 s pause was cut: the experiment ended long before it would have
    ended_after = datetime.fromisoformat(journal["end"]).timestamp() - signalled
    assert ended_after < 60, ended_after
    print(f"\nSIGTERM -> drill reacts {reacted:.2f}s, lab restored {restored:.1f}s, "
          f"chaostoolkit's rollback starts {rollback_after:.1f}s, "
          f"experiment ends {ended_after:.1f}s, drill exits {exited:.1f}s")
    assert not labapi.is_running(str(state))
    assert_nothing_left(state, recs)
    assert not (state / cli.MARKER).exists()


def test_ctrl_c_while_the_lab_starts_leaves_nothing(tmp_path):
    state, reports = tmp_path / "lab", tmp_path / "reports"
    d = Drill("pause", state, reports)
    try:
        d.wait_for("lab: starting", 60)
        procs.wait_until(lambda: (state / labstate.SPAWN_FILE).exists(), 30,
                         what="the lab supervisor spawned")
        d.proc.send_signal(signal.SIGINT)
        rc = d.wait(60)
    finally:
        d.kill()
        labapi.down(str(state))
    assert rc == 130, d.output
    assert "Traceback" not in d.output
    assert not processes_mentioning(str(state)), processes_mentioning(str(state))
    assert not (state / cli.MARKER).exists()
    assert not any(reports.iterdir())  # no experiment ran: no empty report folder either


@pytest.mark.timeout(400)
def test_sigkill_of_the_drill_mid_fault_next_drill_starts_clean(tmp_path):
    state, reports = tmp_path / "lab", tmp_path / "reports"
    first = Drill("pause", state, reports, pause_s=120)
    second = None
    try:
        first.wait_for("Pausing after activity", 180)
        recs = lab_records(state)
        [first_report] = [p for p in reports.iterdir() if p.is_dir()]
        first.proc.kill()
        first.wait(10)
        assert labapi.is_running(str(state))  # the lab outlives a SIGKILLed drill, zone dark
        second = Drill("pause", state, reports, pause_s=1)
        rc = second.wait(240)
    finally:
        first.kill()
        if second is not None:
            second.kill()
        labapi.down(str(state))
    out = second.output
    assert "left up by a drill that was killed" in out, out[-4000:]
    assert rc == 0, out[-4000:]  # a fresh lab: healthy before and after
    assert only_summary_entry(reports)["status"] == "passed"
    assert_nothing_left(state, recs)
    # the killed drill's folder is still there, and the new report is another folder
    assert (first_report / "pause" / "history.jsonl").is_file()
    assert (reports / "latest").resolve() != first_report.resolve()


@pytest.mark.timeout(300)
def test_sigkill_of_the_lab_supervisor_mid_fault_next_lab_up_starts_clean(tmp_path):
    state, reports = tmp_path / "lab", tmp_path / "reports"
    d = Drill("pause", state, reports, pause_s=120)
    try:
        d.wait_for("Pausing after activity", 180)
        recs = lab_records(state)
        os.kill(int(labstate.read_state(state)["supervisor"]["pid"]), signal.SIGKILL)
        killed = time.monotonic()
        rc = d.wait(200)
        took = time.monotonic() - killed
        out = d.output
        assert rc == 1, out[-4000:]  # the drill says the lab died, in one line, and carries on
        assert "Traceback" not in out and cli.LAB_DIED in out
        x = only_summary_entry(reports)  # the report of the run is there
        assert x["status"] == "error" and x["error"] == cli.LAB_DIED
        assert took < 100, took  # not the 120 s pause
        print(f"\nsupervisor SIGKILL -> drill exits {took:.1f}s")
        assert_nothing_left(state, recs)
        up = subprocess.run([sys.executable, "-m", "twinsite.cli", "lab", "up", "--state-dir",
                             str(state)], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert up.returncode == 0, up.stdout + up.stderr
        assert labapi.is_running(str(state))
        new = lab_records(state)
        assert not {r["pid"] for r in new} & {r["pid"] for r in recs if labstate.same_process(r)}
    finally:
        d.kill()
        labapi.down(str(state))
    assert not processes_mentioning(str(state))


# --- the lab was up before the drill -------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_up(tmp_path_factory):
    state = tmp_path_factory.mktemp("drill-faults") / "lab"
    try:
        labapi.up(state_dir=str(state), timeout=120, die_with_parent=True)
        yield state
    finally:
        labapi.down(str(state))


def test_silent_hang_is_cut_off_at_the_timeout(lab_up, tmp_path):
    t0 = time.monotonic()
    d = Drill("hang", lab_up, tmp_path, "--experiment-timeout", "4")
    try:
        rc = d.wait(120)
    finally:
        d.kill()
    took = time.monotonic() - t0
    out = d.output
    assert rc == 1, out
    assert "timed out after 4s" in out and "Traceback" not in out
    x = only_summary_entry(tmp_path)
    assert x["status"] == "error" and x["error"] == "timed out after 4s"
    assert took < 100, took  # not the action's 600 s
    assert not processes_mentioning(str(FIXTURES / "hang.yaml"))
    assert labapi.is_running(str(lab_up))  # it was up before: it stays up


@pytest.mark.parametrize("experiment, line", [
    ("no-journal", "chaostoolkit exited -9 without a journal (see chaostoolkit.log)"),
    ("bad-verdict", "verdict.json is not valid JSON"),
])
def test_missing_journal_or_corrupt_verdict_is_one_line(lab_up, tmp_path, experiment, line):
    d = Drill(experiment, lab_up, tmp_path)
    try:
        rc = d.wait(120)
    finally:
        d.kill()
    out = d.output
    assert rc == 1, out
    assert "Traceback" not in out
    assert f"{experiment}: ERROR" in out and line in out, out
    x = only_summary_entry(tmp_path)
    assert x["status"] == "error" and x["error"] == line


def test_sigkill_of_a_drill_on_a_lab_that_was_up_before(lab_up, tmp_path):
    first = Drill("pause", lab_up, tmp_path / "first", pause_s=120)
    try:
        first.wait_for("Pausing after activity", 120)
        # meanwhile a second drill on the same lab is refused in one line
        other = subprocess.run([sys.executable, "-m", "twinsite.cli", "drill",
                                str(FIXTURES / "hang.yaml"), "--state-dir", str(lab_up),
                                "--reports", str(tmp_path / "other")],
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert other.returncode == 2, other.stdout + other.stderr
        assert f"another drill (pid {first.proc.pid}) is using the lab" in other.stderr
        first.proc.kill()
        first.wait(10)
    finally:
        first.kill()
    # the next drill restores the fault the killed one left on (pangyo-a is dark) and keeps the lab
    second = Drill("bad-verdict", lab_up, tmp_path / "second")
    try:
        second.wait(120)
    finally:
        second.kill()
    assert "may have left a fault active: restoring everything first" in second.output
    assert "lab: starting" not in second.output and labapi.is_running(str(lab_up))
    assert not (lab_up / cli.MARKER).exists()


def test_ctrl_c_when_the_lab_was_up_before_rolls_back_and_keeps_it(lab_up, tmp_path):
    d = Drill("pause", lab_up, tmp_path, pause_s=120)
    try:
        d.wait_for("Pausing after activity", 120)
        d.proc.send_signal(signal.SIGINT)
        rc = d.wait(120)
    finally:
        d.kill()
    assert rc == 130, d.output[-4000:]
    assert only_summary_entry(tmp_path)["status"] == "interrupted"
    assert labapi.is_running(str(lab_up))
    assert "lab: down" not in d.output
    assert labapi.LabClient(str(lab_up)).status().get("stack") == "lab"  # it still answers
    assert not (lab_up / cli.MARKER).exists()


# --- pure-ish pieces: report folders, reading outputs -------------------------------------------


def test_report_folders_of_the_same_second_never_collide(tmp_path):
    when = datetime(2026, 12, 2, 13, 0, 0)
    a = cli.new_report_dir(tmp_path, when)
    (a / "summary.json").write_text("{}")
    b = cli.new_report_dir(tmp_path, when)
    c = cli.new_report_dir(tmp_path, when)
    assert [a.name, b.name, c.name] == ["20261202-130000", "20261202-130000-2",
                                        "20261202-130000-3"]
    assert (a / "summary.json").read_text() == "{}"


def test_unreadable_outputs_are_one_line(tmp_path):
    assert cli.read_outputs(tmp_path, 0, None)[2] == \
        "chaostoolkit exited 0 without a journal (see chaostoolkit.log)"
    assert cli.read_outputs(tmp_path, -2, "interrupted")[2] is None  # the error says it all
    (tmp_path / "journal.json").write_text('{"status": "compl')
    assert cli.read_outputs(tmp_path, 0, None)[2] == "journal.json is not valid JSON"
    (tmp_path / "journal.json").write_text("[1, 2]")
    assert cli.read_outputs(tmp_path, 0, None)[2] == "journal.json is not a JSON object"
    (tmp_path / "journal.json").write_text('{"status": "completed"}')
    (tmp_path / "verdict.json").write_text("\xff\xfe garbage")
    journal, verdict, problem = cli.read_outputs(tmp_path, 0, None)
    assert journal == {"status": "completed"} and verdict is None
    assert problem == "verdict.json is not valid JSON"
