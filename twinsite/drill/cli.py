"""`twinsite drill [EXPERIMENT ...]`: run chaos experiments against the lab and write a report.

Brings the lab up if it is not (and down at the end unless it was up before), runs each
experiment with chaostoolkit (`chaos run`, one process per experiment: a clean chaoslib state
and its own traffic), shows progress, and writes reports/<timestamp>/ and reports/latest/:
summary.json, report.html, and per experiment journal.json + history.jsonl. Exit 1 when any
experiment did not pass, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .. import procs
from ..topology import load_stack, project_root
from . import results

# the canonical order: smallest fault first, so a broken lab shows up early and cheaply
ORDER = ("zone-outage", "site-power-cut", "link-throttle", "link-partition", "surge-zone-loss")
EXPERIMENT_TIMEOUT_S = 240.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_LINE = re.compile(r"^\[[^\]]*\s(INFO|WARNING|ERROR|CRITICAL)\]\s*(.*)$")


class DrillError(Exception):
    """Bad usage or a lab that cannot be used: one line for the user."""


def experiments_dir() -> Path:
    return project_root() / "experiments"


def resolve(names: list[str]) -> list[Path]:
    folder = experiments_dir()
    if not names:
        found = {p.stem: p for p in folder.glob("*.yaml")}
        if not found:
            raise DrillError(f"no experiments in {folder}")
        ordered = [found.pop(n) for n in ORDER if n in found]
        return ordered + [found[n] for n in sorted(found)]
    out = []
    for n in names:
        p = Path(n)
        if not p.is_file():
            p = folder / (n if n.endswith((".yaml", ".yml")) else f"{n}.yaml")
        if not p.is_file():
            known = ", ".join(sorted(x.stem for x in folder.glob("*.yaml")))
            raise DrillError(f"unknown experiment {n!r} (known: {known})")
        out.append(p)
    return out


def load_experiment(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DrillError(f"{path}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(doc, dict):
        raise DrillError(f"{path}: not a chaostoolkit experiment")
    return doc


# --- the lab ------------------------------------------------------------------------------------


class Lab:
    """Bring the lab up for the drill, and down afterwards only if we brought it up."""

    def __init__(self, stack: str, state_dir: str | None):
        self.stack, self.state_dir = stack, state_dir
        self.started_here = False

    def __enter__(self):
        from ..lab import LabClient, is_running, up
        if is_running(self.state_dir):
            running = LabClient(self.state_dir).status().get("stack")
            if running and running != self.stack:
                raise DrillError(f"the lab is up with stack {running!r}, not {self.stack!r}: "
                                 "run `twinsite lab down` first (or drill --stack "
                                 f"{running})")
            say(f"lab: already up (stack {running or self.stack}); it stays up afterwards")
            return self
        t0 = time.monotonic()
        say(f"lab: starting stack {self.stack!r} ...")
        self.started_here = True
        up(stack=self.stack, state_dir=self.state_dir, timeout=90)
        say(f"lab: up in {time.monotonic() - t0:.1f}s")
        return self

    def __exit__(self, *exc):
        if self.started_here:
            from ..lab import down
            t0 = time.monotonic()
            down(self.state_dir)
            say(f"lab: down in {time.monotonic() - t0:.1f}s")

    def restore_all(self) -> None:
        """Between experiments: whatever the last one left broken comes back first."""
        from ..faults import Restore
        from ..lab import LabClient
        try:
            LabClient(self.state_dir).apply(Restore("all"))
        except Exception as e:  # noqa: BLE001 - the next experiment's health probe will say more
            say(f"  (restore before the next experiment failed: {e})")


# --- one experiment -------------------------------------------------------------------------------


def chaos_command(experiment: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "chaostoolkit", "--no-version-check",
            "--log-file", str(run_dir / "chaostoolkit.log"),
            "run", "--journal-path", str(run_dir / "journal.json"), str(experiment)]


def run_experiment(path: Path, run_dir: Path, stack: str, state_dir: str | None) -> dict:
    experiment = load_experiment(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TWINSITE_RUN_DIR": str(run_dir), "TWINSITE_STACK": stack,
           "PYTHONUNBUFFERED": "1"}
    if state_dir:
        env["TWINSITE_LAB_DIR"] = str(state_dir)
    t0 = time.monotonic()
    error = None
    interrupted = False
    proc = subprocess.Popen(chaos_command(path, run_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=str(project_root()), text=True, errors="replace",
                            preexec_fn=procs.tie_to_parent)  # dies with us, Ctrl-C is ours
    try:
        try:
            for line in proc.stdout:
                show_progress(line, time.monotonic() - t0)
                if time.monotonic() - t0 > EXPERIMENT_TIMEOUT_S:
                    error = f"timed out after {EXPERIMENT_TIMEOUT_S:.0f}s"
                    break
        except KeyboardInterrupt:
            interrupted = True
            error = "interrupted"
            say("  interrupted: chaostoolkit rolls back (restores the lab) ...")
        if error:
            procs.kill_group(proc, signal.SIGINT)  # chaostoolkit still rolls back on SIGINT
        rest, _ = proc.communicate(timeout=90)  # keeps draining: a full pipe must not block it
        for line in (rest or "").splitlines():
            show_progress(line, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        error = error or "chaostoolkit did not exit"
    finally:
        procs.reap(proc)
    duration = time.monotonic() - t0
    journal = None
    journal_path = run_dir / "journal.json"
    if journal_path.is_file():
        try:
            journal = json.loads(journal_path.read_text())
        except ValueError:
            error = error or "journal.json is not valid JSON"
    elif not error:
        error = f"chaostoolkit exited {proc.returncode} without a journal (see chaostoolkit.log)"
    verdict = None
    verdict_path = run_dir / "verdict.json"
    if verdict_path.is_file():
        verdict = json.loads(verdict_path.read_text())
    x = results.entry(path.stem, str(path.relative_to(project_root()))
                      if path.is_relative_to(project_root()) else str(path),
                      experiment, journal, duration, verdict=verdict, error=error)
    if interrupted:
        x["status"] = "interrupted"
        raise Interrupted(x)
    return x


class Interrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM during an experiment, after chaostoolkit rolled back; carries its entry."""

    def __init__(self, entry: dict):
        super().__init__()
        self.entry = entry


def show_progress(line: str, elapsed: float) -> None:
    m = LOG_LINE.match(ANSI.sub("", line.rstrip()))
    if not m:
        return
    level, msg = m.groups()
    if msg.startswith(("Steady state", "Probe:", "Action:", "Pausing", "Let's rollback",
                       "Rollback:", "Experiment ended", "Running experiment", "twinsite",
                       "Playing your", "The steady-state", "Steady-state")) or level != "INFO":
        say(f"  {elapsed:6.1f}s  {msg}")


def say(msg: str) -> None:
    print(msg, flush=True)


# --- the drill ----------------------------------------------------------------------------------


def terminal_table(exps: list[dict]) -> str:
    head = ("experiment", "status", "time s", "acked", "failed", "lost", "dup", "unavail s",
            "p99 fault ms", "failed check")
    rows = [head]
    for x in exps:
        v = x.get("verdict") or {}
        rows.append((x["name"], x["status"].upper(), f"{x['duration_s']:.0f}",
                     str(v.get("acked", "–")), str(v.get("failed", "–")), str(v.get("lost", "–")),
                     str(v.get("duplicates", "–")), _num(v.get("max_unavailable_s")),
                     _num(v.get("p99_during_ms")),
                     "; ".join(x.get("failed_checks") or []) or (x.get("error") or "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def write_outputs(out: Path, summary: dict) -> None:
    from ..history import HistoryError, read_history
    from ..report import write_report
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    histories = {}
    for x in summary["experiments"]:
        try:
            histories[x["name"]] = read_history(out / x["name"] / "history.jsonl")
        except HistoryError:
            histories[x["name"]] = []
    write_report(out / "report.html", summary, histories)


def point_latest(reports: Path, out: Path) -> Path:
    latest = reports / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.is_dir():
        shutil.rmtree(latest)
    try:
        latest.symlink_to(out.name, target_is_directory=True)
    except OSError:  # a filesystem without symlinks: a copy then
        shutil.copytree(out, latest)
    return latest


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="twinsite drill", description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                   help="experiment names (e.g. site-power-cut) or files; default: all of "
                        "experiments/")
    p.add_argument("--stack", default="lab", help="the stack the lab runs (default: lab)")
    p.add_argument("--state-dir", default=None, help="the lab's state folder "
                   "(default: $TWINSITE_LAB_DIR or .twinsite/lab)")
    p.add_argument("--reports", default=None, help="reports folder (default: <project>/reports)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM (CI cancelling a job, `kill`) takes the Ctrl-C path: roll back, tear the lab down
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return drill(args)
    except DrillError as e:
        print(f"twinsite drill: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twinsite drill: interrupted (rolled back; the lab is down unless it was up before)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def drill(args: argparse.Namespace) -> int:
    paths = resolve(args.experiments)
    for p in paths:
        load_experiment(p)
    load_stack(args.stack)  # a bad stack fails here, in one line, before anything starts
    state_dir = args.state_dir or os.environ.get("TWINSITE_LAB_DIR") or None
    reports = Path(args.reports) if args.reports else project_root() / "reports"
    started = datetime.now(timezone.utc)
    out = reports / started.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    say(f"drill: {len(paths)} experiment(s) against stack {args.stack!r} -> {out}")
    entries: list[dict] = []
    summary = {"stack": args.stack, "started": started.isoformat(timespec="seconds"),
               "duration_s": None, "experiments": entries}
    try:
        with Lab(args.stack, state_dir) as lab:
            out.mkdir(parents=True, exist_ok=True)
            for i, path in enumerate(paths, 1):
                if i > 1:
                    lab.restore_all()
                say(f"[{i}/{len(paths)}] {path.stem}")
                try:
                    x = run_experiment(path, out / path.stem, args.stack, state_dir)
                except Interrupted as stop:
                    entries.append(stop.entry)
                    raise
                entries.append(x)
                say(f"[{i}/{len(paths)}] {path.stem}: {x['status'].upper()} in "
                    f"{x['duration_s']:.0f}s"
                    + (f" — failed: {'; '.join(x['failed_checks'])}" if x["failed_checks"] else ""))
    finally:
        summary["duration_s"] = round(time.monotonic() - t0, 1)
        if entries:
            write_outputs(out, summary)
            point_latest(reports, out)
    say("")
    say(terminal_table(entries))
    ok = all(x["status"] == "passed" for x in entries) and len(entries) == len(paths)
    say(f"\ndrill: {'PASSED' if ok else 'FAILED'} — {sum(x['status'] == 'passed' for x in entries)}"
        f"/{len(paths)} passed in {summary['duration_s']:.0f}s; report: {out / 'report.html'}")
    return 0 if ok else 1
