"""The Python client of the lab: start/stop a supervisor and call its control API.

This is the surface the chaos extension uses (`twinsite.lab.up/down/LabClient`). Every failure is
a `LabError` with a one-line message.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .. import faults, procs
from ..topology import load_stack
from . import state
from .model import LabError

_spawned: dict[str, subprocess.Popen] = {}  # supervisors we started, to reap them (no zombies)


def _call(api: str, method: str, path: str, args: dict | None = None,
          timeout: float = 10.0) -> dict:
    u = urlsplit(api)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        body = json.dumps(args or {}).encode() if method == "POST" else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        doc = json.loads(r.read() or b"{}")
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise LabError(f"lab supervisor at {api} did not answer {path}: {e}") from None
    finally:
        conn.close()
    if r.status != 200:
        raise LabError(doc.get("error") or f"{path}: HTTP {r.status}")
    return doc


class LabClient:
    """A handle on a running lab (found through its state dir)."""

    def __init__(self, state_dir: str | None = None):
        self.dir = state.state_dir(state_dir)
        st = state.read_state(self.dir)
        if not st or not st.get("api") or not state.same_process(st.get("supervisor")):
            raise LabError(f"no lab is running (state dir {self.dir}); start one with "
                           f"`twinsite lab up`")
        self.api = st["api"]

    def _op(self, op: str, timeout: float = 30.0, **args) -> dict:
        return _call(self.api, "POST", f"/op/{op}", args, timeout=timeout)

    def status(self, shards: bool = False) -> dict:
        """The lab's status; with `shards`, also each shard stream's leader and its site."""
        return _call(self.api, "GET", "/status?shards=1" if shards else "/status")

    def api_token(self) -> str:
        """The bearer token of this lab's gateways (a 0600 file in the state dir, per lab)."""
        from ..talk import auth
        try:
            return auth.read_token(self.dir / auth.LAB_TOKEN_FILE)
        except auth.TokenError as e:
            raise LabError(f"the lab's API token: {e}") from None

    def is_up(self) -> bool:
        try:
            return bool(self.status().get("ready"))
        except LabError:
            return False

    def apply(self, fault: "faults.Fault") -> dict:
        """Inject or end a fault (`twinsite.faults`); the answer says what the lab did. A restore
        returns once the cluster converged, so its timeout bounds the call."""
        timeout = float(getattr(fault, "timeout_s", 20.0)) + 10.0
        return _call(self.api, "POST", "/op/apply", {"fault": faults.to_dict(fault)},
                     timeout=timeout)


def is_running(state_dir: str | None = None) -> bool:
    try:
        return LabClient(state_dir).is_up()
    except LabError:
        return False


def up(stack: str = "lab", state_dir: str | None = None, timeout: float = 60,
       *, die_with_parent: bool = False) -> LabClient:
    """Start a lab (or find the running one) and return when it is ready.

    `die_with_parent=True` ties the supervisor to the calling thread (tests): if the caller dies,
    the kernel kills the supervisor, and with it every child.
    """
    d = state.state_dir(state_dir)
    load_stack(stack)  # a bad stack is the topology's one-line error, before anything starts
    if state.supervisor_alive(d):
        client = _wait_ready(d, None, timeout)
        running = client.status().get("stack")
        if running != stack:
            raise LabError(f"a lab for stack '{running}' is already running in {d}; "
                           f"`twinsite lab down` first")
        return client
    state.clean(d, wipe=True)  # a stale state dir from a crashed supervisor
    d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "twinsite.lab", "--stack", stack,
            "--state-dir", str(d)]
    proc = procs.spawn(argv, log=d / "supervisor.log", die_with_parent=die_with_parent,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _spawned[str(d)] = proc
    state.write_json(d / state.SPAWN_FILE, state.record(proc.pid))
    try:
        return _wait_ready(d, proc, timeout)
    except BaseException:
        down(str(d))
        raise


def _wait_ready(d: Path, proc: subprocess.Popen | None, timeout: float) -> LabClient:
    try:
        state.wait_ready(d, proc, timeout, "lab")
    except state.NotReady as e:
        raise LabError(str(e)) from None
    return LabClient(str(d))


def down(state_dir: str | None = None, timeout: float = 10.0) -> None:
    """Stop the lab; idempotent. Works after a crashed supervisor too (recorded pids)."""
    d = state.state_dir(state_dir)
    st = state.read_state(d)
    sup = state.supervisor_record(d)
    if st and st.get("api") and state.same_process(sup):
        try:
            _call(st["api"], "POST", "/shutdown", timeout=2.0)
            deadline = time.monotonic() + timeout
            while state.same_process(sup) and time.monotonic() < deadline:
                time.sleep(0.02)
        except LabError:
            pass
    elif state.same_process(sup):
        procs.kill_group(int(sup["pid"]), 15)  # still starting: SIGTERM makes it clean up
        deadline = time.monotonic() + timeout
        while state.same_process(sup) and time.monotonic() < deadline:
            time.sleep(0.02)
    state.clean(d)  # whatever is left (a crashed or hung supervisor's children): SIGKILL
    proc = _spawned.pop(str(d), None)
    if proc is not None:
        procs.reap(proc, timeout=2.0)
