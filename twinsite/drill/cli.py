"""`twinsite drill [EXPERIMENT ...]`: run chaos experiments against the lab and write a report.

Brings the lab up if it is not (and down at the end unless it was up before), runs each
experiment with chaostoolkit (`chaos run`, one process per experiment: a clean chaoslib state
and its own traffic), shows progress, and writes reports/<timestamp>/ and reports/latest/:
summary.json, report.html, and per experiment journal.json + history.jsonl. Exit 1 when any
experiment did not pass, 2 on bad usage, 130 when interrupted.

Faults of the drill itself: Ctrl-C/SIGTERM stops the running experiment at once (the lab is
restored, chaostoolkit rolls back, the entry is `interrupted`; a second signal is only
acknowledged); an experiment is cut off at --experiment-timeout even when it prints nothing; a
lab that dies mid-run is noticed within a second; a drill that was SIGKILLed is found by the
next one (drill.json in the lab's state folder) and its lab taken down or restored.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .. import procs
from ..topology import load_stack, project_root
from . import results, targets

# the canonical order: smallest fault first, so a broken lab shows up early and cheaply
ORDER = ("zone-outage", "site-power-cut", "link-throttle", "link-partition", "surge-zone-loss",
         "grid-power-loss")
EXPERIMENT_TIMEOUT_S = 240.0
MARKER = "drill.json"  # in the lab's state folder, while a drill uses the lab
ROLLBACK_WAIT_S = 90.0  # after a stop: how long chaostoolkit may take to roll back and exit
LAB_DIED_GRACE_S = 5.0  # ... when the lab died (nothing to roll back): time for its journal
LAB_CHECK_S = 1.0  # how often a running experiment checks that the lab is still alive
LAB_DIED = "the lab died during the experiment (its supervisor is gone)"
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
    """Bring the lab up for the drill, and down afterwards only if we brought it up.

    A drill records itself in the lab's state folder (drill.json: pid, start time, whether it
    brought the lab up). A drill that was SIGKILLed leaves that record behind, and the next one
    acts on it: a lab the dead drill started is taken down and started afresh (it may still carry
    the fault that was active), a lab that was up before it gets every fault restored.
    """

    def __init__(self, stack: str, state_dir: str | None):
        self.stack, self.state_dir = stack, state_dir
        self.started_here = False
        from ..lab import state
        self.marker = state.state_dir(state_dir) / MARKER

    def __enter__(self):
        from ..lab import LabClient, is_running, up
        stale = self._stale_drill()
        running = is_running(self.state_dir)
        if running and stale and stale.get("owns_lab"):
            say(f"lab: left up by a drill that was killed (pid {stale.get('pid')}): "
                "taking it down to start clean")
            self._down()
            running = False
        if running:
            running = LabClient(self.state_dir).status().get("stack")
            if running and running != self.stack:
                raise DrillError(f"the lab is up with stack {running!r}, not {self.stack!r}: "
                                 "run `twinsite lab down` first (or drill --stack "
                                 f"{running})")
            say(f"lab: already up (stack {running or self.stack}); it stays up afterwards")
            self._record(owns_lab=False)
            if stale:
                say(f"lab: a drill that was killed (pid {stale.get('pid')}) may have left a fault "
                    "active: restoring everything first")
                self.restore_all()
            return self
        t0 = time.monotonic()
        say(f"lab: starting stack {self.stack!r} ...")
        self.started_here = True
        self._record(owns_lab=True)  # before `up`: a kill during start-up is found next time
        from ..lab import LabError
        try:
            up(stack=self.stack, state_dir=self.state_dir, timeout=90)
        except LabError as e:
            self._forget()
            raise DrillError(f"the lab did not start: {e}") from None
        except BaseException:
            self._forget()
            raise
        say(f"lab: up in {time.monotonic() - t0:.1f}s")
        return self

    def __exit__(self, *exc):
        try:
            if self.started_here:
                t0 = time.monotonic()
                self._down()
                say(f"lab: down in {time.monotonic() - t0:.1f}s")
        finally:
            self._forget()

    def alive(self) -> bool:
        from ..lab import state
        return state.supervisor_alive(state.state_dir(self.state_dir))

    def _down(self) -> None:
        from ..lab import down
        down(self.state_dir)

    def _stale_drill(self) -> dict | None:
        """The record of a drill that is gone; DrillError if another drill is running now."""
        from ..lab import state
        rec = state.read_json(self.marker)
        if not rec:
            return None
        if rec.get("pid") != os.getpid() and state.same_process(rec):
            raise DrillError(f"another drill (pid {rec['pid']}) is using the lab in "
                             f"{self.marker.parent}")
        return rec

    def _record(self, owns_lab: bool) -> None:
        from ..lab import state
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        state.write_json(self.marker, {**state.record(os.getpid()), "owns_lab": owns_lab})

    def _forget(self) -> None:
        try:
            self.marker.unlink()
        except FileNotFoundError:
            pass

    def restore_all(self) -> None:
        """Whatever an experiment left broken comes back (between experiments, and at once when
        one is cut short)."""
        from ..faults import Restore
        from ..lab import LabClient
        try:
            LabClient(self.state_dir).apply(Restore("all"))
        except Exception as e:  # noqa: BLE001 - the next experiment's health probe will say more
            say(f"  (restoring the lab failed: {e})")


# --- one experiment -------------------------------------------------------------------------------


def chaos_command(experiment: Path, run_dir: Path) -> list[str]:
    # `always`: chaoslib's default plays no rollback on an interrupted run, and an interrupted
    # drill must leave the lab restored
    return [sys.executable, "-m", "chaostoolkit", "--no-version-check",
            "--log-file", str(run_dir / "chaostoolkit.log"),
            "run", "--rollback-strategy", "always",
            "--journal-path", str(run_dir / "journal.json"), str(experiment)]


def run_experiment(path: Path, run_dir: Path, stack: str, state_dir: str | None,
                   timeout_s: float = EXPERIMENT_TIMEOUT_S, on_stop=None, lab_alive=None,
                   env_extra: dict | None = None) -> dict:
    """Run one experiment; `on_stop()` is called the moment it is cut short (timeout, Ctrl-C);
    `lab_alive()`, polled every second, cuts it short when the lab has died."""
    experiment = load_experiment(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TWINSITE_RUN_DIR": str(run_dir), "TWINSITE_STACK": stack,
           "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    if state_dir:
        env["TWINSITE_LAB_DIR"] = str(state_dir)
    t0 = time.monotonic()
    proc = subprocess.Popen(chaos_command(path, run_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=str(project_root()), text=True, errors="replace",
                            preexec_fn=procs.tie_to_parent)  # dies with us, Ctrl-C is ours
    error, interrupted = watch(proc, t0, timeout_s, on_stop, lab_alive)
    journal, verdict, problem = read_outputs(run_dir, proc.returncode, error)
    x = results.entry(path.stem, str(path.relative_to(project_root()))
                      if path.is_relative_to(project_root()) else str(path),
                      experiment, journal, time.monotonic() - t0, verdict=verdict,
                      error=error or problem)
    if interrupted:
        x["status"] = "interrupted"
        raise Interrupted(x)
    return x


def watch(proc: subprocess.Popen, t0: float, timeout_s: float,
          on_stop=None, lab_alive=None) -> tuple[str | None, bool]:
    """Show chaostoolkit's progress until it exits; cut it short at the deadline, on Ctrl-C, or
    when the lab died. (error, interrupted). A reader thread feeds a queue, so the deadline holds
    even while chaostoolkit prints nothing. On a stop, chaostoolkit gets SIGINT (it rolls back),
    and `on_stop` runs at once: chaoslib first runs the controls' after-method hooks (the
    traffic's settle and final read, seconds with a zone dark) and only then the rollbacks."""
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    error, interrupted, wait_s = None, False, ROLLBACK_WAIT_S
    try:
        try:
            error = _follow(lines, t0, timeout_s, lab_alive)
        except KeyboardInterrupt:
            interrupted, error = True, "interrupted"
            say("  interrupted: chaostoolkit rolls back (restores the lab) ...")
        if error:
            procs.kill_group(proc, signal.SIGINT)  # chaoslib: interrupted, then rollbacks
            if error == LAB_DIED:  # nothing to restore: only a short grace for the journal
                wait_s = LAB_DIED_GRACE_S
            elif on_stop is not None:
                interrupted |= _restore_now(on_stop)
        interrupted |= _wait_exit(proc, lines, t0, wait_s)
        error = error or ("interrupted" if interrupted else None)
        if proc.poll() is None:
            error = error or "chaostoolkit did not exit"
            say(f"  chaostoolkit still running {wait_s:.0f}s after the stop: killed")
    finally:
        procs.reap(proc, timeout=2.0, sig=signal.SIGKILL if error else signal.SIGTERM)
        reader.join(timeout=2.0)
    _show_until(proc, lines, t0, 0.0)  # what it printed last
    return error, interrupted


def _follow(lines: queue.Queue, t0: float, timeout_s: float, lab_alive) -> str | None:
    """Show lines until the output ends (None) or the run must be cut short (the reason)."""
    next_check = time.monotonic() + LAB_CHECK_S
    while True:
        left = t0 + timeout_s - time.monotonic()
        if left <= 0:
            error = f"timed out after {timeout_s:.0f}s"
            say(f"  {error}: stopping chaostoolkit (it rolls back) ...")
            return error
        if lab_alive is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + LAB_CHECK_S
            if not lab_alive():
                say(f"  {LAB_DIED}: stopping chaostoolkit ...")
                return LAB_DIED
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line is None:
            return None
        show_progress(line, time.monotonic() - t0)


def _restore_now(on_stop) -> bool:
    """Run on_stop; True if a (first) Ctrl-C came meanwhile (the stop goes on regardless)."""
    stopped = time.monotonic()
    try:
        on_stop()
    except KeyboardInterrupt:
        return True
    say(f"  lab restored {time.monotonic() - stopped:.1f}s after the stop; chaostoolkit "
        "finishes its rollback ...")
    return False


def _wait_exit(proc: subprocess.Popen, lines: queue.Queue, t0: float, wait_s: float) -> bool:
    """Show lines until chaostoolkit exits or wait_s passes; True if a Ctrl-C came meanwhile."""
    interrupted = False
    deadline = time.monotonic() + wait_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            _show_until(proc, lines, t0, deadline)
        except KeyboardInterrupt:  # the first Ctrl-C came while it was already stopping
            interrupted = True
            procs.kill_group(proc, signal.SIGINT)
    return interrupted


def _show_until(proc: subprocess.Popen, lines: queue.Queue, t0: float, deadline: float) -> None:
    """Show queued lines while chaostoolkit runs and the deadline is ahead; then what is left."""
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is not None:
            show_progress(line, time.monotonic() - t0)
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        if line is not None:
            show_progress(line, time.monotonic() - t0)


def _pump(stream, lines: queue.Queue) -> None:
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def read_outputs(run_dir: Path, returncode: int | None,
                 error: str | None) -> tuple[dict | None, dict | None, str | None]:
    """(journal, verdict, problem): a missing or unreadable file is one line, never a traceback."""
    journal, problem = _read_doc(run_dir / "journal.json")
    if problem == "missing":
        problem = None if error else (f"chaostoolkit exited {returncode} without a journal "
                                      "(see chaostoolkit.log)")
    elif problem:
        problem = f"journal.json {problem}"
    verdict, vproblem = _read_doc(run_dir / "verdict.json")
    if vproblem and vproblem != "missing":
        problem = problem or f"verdict.json {vproblem}"
    return journal, verdict, problem


def _read_doc(path: Path) -> tuple[dict | None, str | None]:
    try:
        doc = json.loads(path.read_text(errors="replace"))
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(doc, dict):
        return None, "is not a JSON object"
    return doc, None


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
            "p99 fault ms", "unsynced dropped", "failed check")
    rows = [head]
    for x in exps:
        v = x.get("verdict") or {}
        rows.append((x["name"], x["status"].upper(), f"{x['duration_s']:.0f}",
                     str(v.get("acked", "–")), str(v.get("failed", "–")), str(v.get("lost", "–")),
                     str(v.get("duplicates", "–")), _num(v.get("max_unavailable_s")),
                     _num(v.get("p99_during_ms")), _dropped(x.get("power_loss")),
                     "; ".join(x.get("failed_checks") or []) or (x.get("error") or "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _dropped(power: dict | None) -> str:
    """Compact: – (no power loss), ? (the target cannot drop page caches), else bytes/files."""
    total = (power or {}).get("unsynced_dropped")
    if not power:
        return "–"
    return "?" if total is None else f"{total['bytes']} B/{total['files']} files"


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
    p.add_argument("--target", choices=("lab", "k8s"), default="lab",
                   help="the local lab (default) or the stack's clusters (kubeContext per site)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what each fault would touch (pods, nodes, objects); touch nothing")
    p.add_argument("--state-dir", default=None, help="the lab's state folder "
                   "(default: $TWINSITE_LAB_DIR or .twinsite/lab)")
    p.add_argument("--reports", default=None, help="reports folder (default: <project>/reports)")
    p.add_argument("--experiment-timeout", type=float, default=EXPERIMENT_TIMEOUT_S,
                   metavar="SECONDS", help="cut an experiment off after this long, rolled back "
                   f"(default {EXPERIMENT_TIMEOUT_S:.0f})")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM (CI cancelling a job, `kill`) takes the Ctrl-C path: roll back, tear the lab down.
    # Only the first signal interrupts: a second one while we roll back and write the summary
    # would lose both, so it is only acknowledged.
    stop = Stopper()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Stopper:
    """Signal handler: the first SIGINT/SIGTERM raises KeyboardInterrupt, later ones only say so."""

    def __init__(self):
        self.signalled = 0

    def __call__(self, signum, frame):
        self.signalled += 1
        if self.signalled == 1:
            raise KeyboardInterrupt
        print("twinsite drill: already stopping (rolling back, writing the summary)",
              file=sys.stderr, flush=True)


def drill(args: argparse.Namespace) -> int:
    paths = resolve(args.experiments)
    for p in paths:
        load_experiment(p)
    load_stack(args.stack)  # a bad stack fails here, in one line, before anything starts
    if args.experiment_timeout <= 0:
        raise DrillError("--experiment-timeout: must be > 0")
    state_dir = args.state_dir or os.environ.get("TWINSITE_LAB_DIR") or None
    if args.dry_run:
        if args.target != "k8s":
            raise DrillError("--dry-run plans faults on clusters: use it with --target k8s")
        return targets.dry_run(paths, args.stack, args.target, say)
    reports = Path(args.reports) if args.reports else project_root() / "reports"
    started = datetime.now(timezone.utc)
    out = new_report_dir(reports, started)
    t0 = time.monotonic()
    say(f"drill: {len(paths)} experiment(s) against stack {args.stack!r} -> {out}")
    entries: list[dict] = []
    summary = {"stack": args.stack, "target": args.target,
               "started": started.isoformat(timespec="seconds"),
               "duration_s": None, "experiments": entries}
    target = Lab(args.stack, state_dir) if args.target == "lab" else \
        targets.Clusters(args.stack, say)
    try:
        with target as lab:
            for i, path in enumerate(paths, 1):
                if i > 1:
                    lab.restore_all()
                say(f"[{i}/{len(paths)}] {path.stem}")
                try:
                    extra = lab.env(f"drill-{started:%Y%m%d%H%M%S}-{path.stem}") \
                        if args.target == "k8s" else None
                    x = run_experiment(path, out / path.stem, args.stack, state_dir,
                                       timeout_s=args.experiment_timeout,
                                       on_stop=lab.restore_all, lab_alive=lab.alive,
                                       env_extra=extra)
                except Interrupted as stop:
                    entries.append(stop.entry)
                    raise
                entries.append(x)
                say(f"[{i}/{len(paths)}] {path.stem}: {x['status'].upper()} in "
                    f"{x['duration_s']:.0f}s"
                    + (f" — failed: {'; '.join(x['failed_checks'])}" if x["failed_checks"] else
                       f" — {x['error']}" if x.get("error") else ""))
    finally:
        summary["duration_s"] = round(time.monotonic() - t0, 1)
        if entries:
            write_outputs(out, summary)
            point_latest(reports, out)
        else:
            _remove_if_empty(out)
    say("")
    say(terminal_table(entries))
    ok = all(x["status"] == "passed" for x in entries) and len(entries) == len(paths)
    passed = sum(x["status"] == "passed" for x in entries)
    say(f"\ndrill: {'PASSED' if ok else 'FAILED'} — {passed}"
        f"/{len(paths)} passed in {summary['duration_s']:.0f}s; report: {out / 'report.html'}")
    return 0 if ok else 1


def new_report_dir(reports: Path, started: datetime) -> Path:
    """reports/<UTC time to the second>, with -2, -3 ... when a drill of the same second has one:
    an earlier report is never written over."""
    reports.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        out = reports / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue
    raise DrillError(f"{reports}: 999 reports named {stamp}")


def _remove_if_empty(out: Path) -> None:
    try:
        out.rmdir()
    except OSError:
        pass
