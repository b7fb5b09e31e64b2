"""The lab's state directory: where a running supervisor says where it is and which pids it owns.

`state.json` (written atomically by the supervisor) records the control API address and every
child's pid and start time, so `lab down` can clean up even after the supervisor itself crashed,
without ever killing an unrelated process that reused a pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from .. import procs
from ..talk.auth import LAB_TOKEN_FILE
from ..topology import project_root

STATE_FILE = "state.json"
SPAWN_FILE = "supervisor.json"  # written by `up` the moment it spawns the supervisor
TOKEN_FILE = LAB_TOKEN_FILE  # the lab's API token


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("TWINSITE_LAB_DIR")
    if env:
        return Path(env).resolve()
    return project_root() / ".twinsite" / "lab"


def start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot): with the pid, an identity."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def record(pid: int) -> dict:
    return {"pid": pid, "start": start_time(pid)}


def same_process(rec: dict | None) -> bool:
    """Is the recorded process still the one running under that pid (and not a zombie)?"""
    if not rec or not rec.get("pid"):
        return False
    pid = int(rec["pid"])
    if not procs.pid_alive(pid):
        return False
    return rec.get("start") is None or start_time(pid) == rec.get("start")


def kill_recorded(rec: dict | None) -> None:
    """SIGKILL a recorded child and its process group, if it is still that process."""
    if same_process(rec):
        procs.kill_group(int(rec["pid"]), signal.SIGKILL)


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_state(d: Path) -> dict | None:
    return read_json(d / STATE_FILE)


def supervisor_record(d: Path) -> dict | None:
    st = read_state(d)
    if st and st.get("supervisor"):
        return st["supervisor"]
    return read_json(d / SPAWN_FILE)


def supervisor_alive(d: Path) -> bool:
    return same_process(supervisor_record(d))


def clean(d: Path, *, wipe: bool = False, wait: float = 5.0) -> None:
    """Kill whatever a (crashed) supervisor left behind and forget it. `wipe` also drops the data."""
    st = read_state(d) or {}
    recs = [supervisor_record(d)] + list((st.get("children") or {}).values())
    for rec in recs:
        kill_recorded(rec)
    deadline = time.monotonic() + wait
    while any(same_process(r) for r in recs) and time.monotonic() < deadline:
        time.sleep(0.02)
    for name in (STATE_FILE, SPAWN_FILE, TOKEN_FILE):  # a dead lab's token goes too
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass
    if wipe:
        for sub in ("nats", "gateways"):
            shutil.rmtree(d / sub, ignore_errors=True)


class NotReady(RuntimeError):
    """A supervisor that died or did not get ready in time; one line with its log's last line."""


def log_tail(path: Path, missing: str = "no log", prefer: str | None = None) -> str:
    """What a one-line error quotes: the last line starting with `prefer` (the supervisor's own
    verdict, e.g. "lab: start failed: ..."; library noise logged while it shut down may follow
    it), else the last non-empty line."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return missing
    if not lines:
        return f"empty {missing.removeprefix('no ')}"
    own = [ln for ln in lines if prefer and ln.startswith(prefer)]
    return (own or lines)[-1][:300]


def wait_ready(d: Path, proc, timeout: float, what: str, interval: float = 0.02) -> dict:
    """Poll a supervisor's state file until it says ready (the lab's and the sandbox's); the state
    document, else NotReady naming `what` and quoting the supervisor's log."""
    deadline = time.monotonic() + timeout

    def tail() -> str:
        return log_tail(d / "supervisor.log", "no supervisor log", prefer=f"{what}: ")
    while True:
        if proc is not None and proc.poll() is not None:
            raise NotReady(f"{what} supervisor exited ({proc.returncode}): {tail()}")
        if proc is None and not supervisor_alive(d):
            raise NotReady(f"{what} supervisor died while starting: {tail()}")
        st = read_state(d)
        if st and st.get("ready"):
            return st
        if time.monotonic() > deadline:
            raise NotReady(f"{what} not ready after {timeout:.0f}s: {tail()}")
        time.sleep(interval)

