"""`twinsite soak --runs N [EXPERIMENT ...]`: run `twinsite drill` N times, write a soak summary.

Each run is a separate `twinsite drill` process (lab up, the experiments, lab down — exactly
`make drill`), its output in reports/soak/<stamp>/run-NN/drill.log. After each run the drill's
report folder is moved into run-NN/ and trimmed: summary.json, and per experiment verdict.json,
journal.json and chaostoolkit.log are kept; the history (large) and report.html only when that
experiment did not pass, and then the lab's logs too (run-NN/lab-logs/). soak.json and soak.md (twinsite.drill.soak) are rewritten after every run,
so a soak that is killed keeps what it measured. Ctrl-C/SIGTERM: the running drill is interrupted
(it rolls back and takes its lab down, exit 130), the summary of the runs so far is written, exit
130. Exit 0 when every run passed every experiment, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import procs
from ..lab import state as labstate
from ..topology import project_root
from . import soak

LOAD_SAMPLE_S = 5.0  # the load average is sampled this often during a run
KEEP_ALWAYS = ("verdict.json", "journal.json", "chaostoolkit.log")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="twinsite soak", description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                   help="experiments to drill (default: all of experiments/)")
    p.add_argument("--runs", type=int, default=20, help="how many drills (default 20)")
    p.add_argument("--stack", default="lab")
    p.add_argument("--state-dir", default=None, help="the lab's state folder (as for drill)")
    p.add_argument("--reports", default=None, help="reports folder (default: <project>/reports); "
                   "the soak goes to <reports>/soak/<stamp>/")
    p.add_argument("--experiment-timeout", type=float, default=None, metavar="SECONDS")
    p.add_argument("--resummarize", default=None, metavar="SOAK_DIR",
                   help="only rebuild soak.json/soak.md of an earlier soak folder")
    return p.parse_args(argv)


def nats_servers() -> int:
    """nats-server processes on the machine (ours: 7 per lab): other labs explain load."""
    n = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            n += comm.read_text().strip() == "nats-server"
        except OSError:
            continue
    return n


def drill_command(args: argparse.Namespace, reports: Path) -> list[str]:
    cmd = [sys.executable, "-m", "twinsite.cli", "drill", "--stack", args.stack,
           "--reports", str(reports)]
    if args.state_dir:
        cmd += ["--state-dir", args.state_dir]
    if args.experiment_timeout:
        cmd += ["--experiment-timeout", str(args.experiment_timeout)]
    return cmd + list(args.experiments)


class Soak:
    """The runner's state: the current drill (to interrupt) and whether a stop was asked."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.samples: list[tuple] = []  # (s into the run, 1-min load average, nats-servers)

    def on_signal(self, signum, frame):
        # the drill runs in its own session (terminal Ctrl-C reaches only us): pass it on once
        if not self.stopping:
            print("soak: stopping — the running drill rolls back, then the summary is written",
                  flush=True)
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            try:
                os.kill(self.child.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def run_drill(self, cmd: list[str], log: Path) -> int | None:
        self.samples = []
        with open(log, "w") as out:
            self.child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=str(project_root()),
                                          preexec_fn=procs.tie_to_parent)
            t0 = time.monotonic()
            try:
                while True:
                    try:
                        return self.child.wait(timeout=LOAD_SAMPLE_S)
                    except subprocess.TimeoutExpired:
                        self.samples.append((round(time.monotonic() - t0, 1),
                                             round(os.getloadavg()[0], 2), nats_servers()))
                    except KeyboardInterrupt:  # the handler already passed it on
                        continue
            finally:
                procs.reap(self.child, timeout=10.0)
                self.child = None


def collect(run_dir: Path, scratch: Path) -> dict | None:
    """Move the drill's report folder into run_dir, trimmed; its summary (None if none)."""
    made = sorted(p for p in scratch.iterdir() if p.is_dir() and not p.is_symlink()) \
        if scratch.is_dir() else []
    summary = None
    if made:
        src = made[-1]
        try:
            summary = json.loads((src / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        passed = {x.get("name") for x in (summary or {}).get("experiments") or []
                  if x.get("status") == "passed"}
        all_passed = bool(summary) and len(passed) == len(summary.get("experiments") or [])
        for item in src.iterdir():
            if item.is_dir():
                dest = run_dir / item.name
                dest.mkdir(exist_ok=True)
                for f in item.iterdir():
                    if item.name not in passed or f.name in KEEP_ALWAYS:
                        shutil.move(str(f), dest / f.name)
            elif item.name == "summary.json" or (item.name == "report.html" and not all_passed):
                shutil.move(str(item), run_dir / item.name)
    shutil.rmtree(scratch, ignore_errors=True)
    return summary


def keep_lab_logs(state_dir: Path, dest: Path) -> None:
    """The lab's logs (supervisor, NATS servers, gateways) of a run that did not pass: the next
    drill's `lab up` starts them afresh, and a failure's cause is often only in them."""
    for log in state_dir.rglob("*.log"):
        rel = log.relative_to(state_dir)
        if log.is_file() and not any(p.startswith("jetstream") for p in rel.parts[:-1]):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, target)


def journals(run_dir: Path, summary: dict | None) -> dict[str, dict]:
    out = {}
    for x in (summary or {}).get("experiments") or []:
        try:
            out[x["name"]] = json.loads((run_dir / x["name"] / "journal.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
    return out


def tail(path: Path, n: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def resummarize(folder: Path) -> dict:
    """Rebuild soak.json/soak.md of a soak folder from its run-NN/ folders and the run meta in its
    soak.json (e.g. after the summary's code changed)."""
    old = json.loads((folder / "soak.json").read_text())
    records = []
    for r in old["runs"]:
        rd = folder / f"run-{r['run']:02d}"
        try:
            summary = json.loads((rd / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        meta = soak.RunMeta(r["run"], r["started"], r["wall_s"], tuple(r["load_start"]),
                            tuple(r["load_end"]), r["exit_code"], r.get("log_tail", ""),
                            tuple(tuple(x) for x in r.get("load_samples") or []))
        records.append(soak.run_record(meta, summary, soak.experiment_windows(
            r["started"], journals(rd, summary))))
    args = argparse.Namespace(runs=old["runs_planned"], stack=old["stack"])
    return write_summary(folder, records, args, old["interrupted"])


def write_summary(out: Path, records: list[dict], args, interrupted: bool) -> dict:
    s = soak.summarize(records, args.runs, args.stack, interrupted)
    (out / "soak.json").write_text(json.dumps(s, indent=2) + "\n")
    (out / "soak.md").write_text(soak.markdown(s))
    return s


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.resummarize:
        try:
            s = resummarize(Path(args.resummarize))
        except (OSError, ValueError, KeyError) as e:
            print(f"twinsite soak: {args.resummarize}: not a soak folder ({e})", file=sys.stderr)
            return 2
        print(soak.markdown(s), end="")
        return 0
    if args.runs < 1:
        print("twinsite soak: --runs must be at least 1", file=sys.stderr)
        return 2
    reports = Path(args.reports) if args.reports else project_root() / "reports"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = reports / "soak" / stamp
    out.mkdir(parents=True, exist_ok=False)
    runner = Soak()
    previous = {sig: signal.signal(sig, runner.on_signal) for sig in (signal.SIGINT,
                                                                        signal.SIGTERM)}
    records: list[dict] = []
    print(f"soak: {args.runs} drill(s) -> {out}", flush=True)
    try:
        for n in range(1, args.runs + 1):
            if runner.stopping:
                break
            run_dir = out / f"run-{n:02d}"
            run_dir.mkdir()
            started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            load0, t0 = os.getloadavg(), time.monotonic()
            code = runner.run_drill(drill_command(args, run_dir / "drill"), run_dir / "drill.log")
            meta = soak.RunMeta(n, started, time.monotonic() - t0, load0, os.getloadavg(), code,
                                tail(run_dir / "drill.log"), tuple(runner.samples))
            summary = collect(run_dir, run_dir / "drill")
            records.append(soak.run_record(meta, summary, soak.experiment_windows(
                started, journals(run_dir, summary))))
            if code != 0:
                keep_lab_logs(labstate.state_dir(args.state_dir), run_dir / "lab-logs")
            s = write_summary(out, records, args, runner.stopping)
            bad = [k for k, x in records[-1]["experiments"].items() if x["status"] != "passed"]
            print(f"soak: run {n}/{args.runs} exit {code} in {meta.wall_s:.0f}s, load "
                  f"{load0[0]:.1f}->{meta.load_end[0]:.1f}"
                  f"{' — not passed: ' + ', '.join(bad) if bad else ''}", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s = write_summary(out, records, args, runner.stopping)
    print(soak.markdown(s), flush=True)
    print(f"soak: {out / 'soak.md'}", flush=True)
    if runner.stopping:
        return 130
    clean = s["runs_clean"] == s["runs_done"] == args.runs
    return 0 if clean else 1
