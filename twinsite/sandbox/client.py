"""Start, find and stop a sandbox supervisor (the surface the CLI and the tests use)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from .. import procs
from ..lab import state
from ..topology import load_stack, project_root
from . import SandboxError, tools
from .apply import SiteApi

_spawned: dict[str, subprocess.Popen] = {}  # supervisors we started, to reap them (no zombies)


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("TWINSITE_SANDBOX_DIR")
    return Path(env).resolve() if env else project_root() / ".twinsite" / "sandbox"


def read(d: Path) -> dict | None:
    st = state.read_state(d)
    return st if st and state.same_process(st.get("supervisor")) else None


def up(stack: str, state_dir_: str | os.PathLike | None = None, *, timeout: float = 120.0,
       nodes_per_zone: int = 3, die_with_parent: bool = False) -> dict:
    """Start a sandbox (or find the running one for this stack); return its state when ready."""
    d = state_dir(state_dir_)
    load_stack(stack)  # a bad stack is the topology's one-line error, before anything starts
    if tools.locate() is None:
        raise SandboxError("sandbox tools are not built: run `make sandbox-tools`")
    if state.supervisor_alive(d):
        st = _wait_ready(d, None, timeout)
        if st["stack"] != stack:
            raise SandboxError(f"a sandbox for stack '{st['stack']}' is already running in {d}; "
                               f"`twinsite sandbox down --state-dir {d}` first")
        return st
    state.clean(d)
    d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "twinsite.sandbox.supervisor", "--stack", stack,
            "--state-dir", str(d), "--nodes-per-zone", str(nodes_per_zone),
            "--timeout", str(timeout)]
    proc = procs.spawn(argv, log=d / "supervisor.log", die_with_parent=die_with_parent,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _spawned[str(d)] = proc
    state.write_json(d / state.SPAWN_FILE, state.record(proc.pid))
    try:
        return _wait_ready(d, proc, timeout + 5)
    except BaseException:
        down(d)
        raise


def _wait_ready(d: Path, proc, timeout: float) -> dict:
    try:
        return state.wait_ready(d, proc, timeout, "sandbox", interval=0.05)
    except state.NotReady as e:
        raise SandboxError(str(e)) from None


def down(state_dir_: str | os.PathLike | None = None, timeout: float = 20.0) -> bool:
    """Stop the sandbox; idempotent; True when one was running. After a crashed supervisor the
    recorded children are SIGKILLed (pid and start time checked: never an unrelated process)."""
    d = state_dir(state_dir_)
    sup = state.supervisor_record(d)
    was = state.same_process(sup)
    if was:
        procs.kill_group(int(sup["pid"]), 15)  # SIGTERM: the supervisor reaps its children
        deadline = time.monotonic() + timeout
        while state.same_process(sup) and time.monotonic() < deadline:
            time.sleep(0.05)
    state.clean(d)
    proc = _spawned.pop(str(d), None)
    if proc is not None:
        procs.reap(proc, timeout=2.0)
    return was


def site_apis(st: dict) -> dict[str, SiteApi]:
    path = Path(st["kubeconfig"])
    return {s["site"]: SiteApi.from_kubeconfig(s["site"], path, s["context"]) for s in st["sites"]}


def status(d: Path) -> dict:
    """The recorded state plus what each site's API server answers now."""
    st = read(d)
    if st is None:
        return {"running": False, "state_dir": str(d)}
    apis = site_apis(st)
    for s in st["sites"]:
        api = apis[s["site"]]
        s["api_ready"] = api.ready()
        s["nodes_ready"] = s["api_ready"] and api.nodes_ready(s["nodes"])
        s["processes"] = {k.split("/", 1)[1]: state.same_process(r)
                          for k, r in st["children"].items() if k.startswith(s["site"] + "/")}
    return {"running": True, **st}


def passphrase(d: Path) -> str:
    f = d / "pulumi-passphrase"
    if not f.exists():
        d.mkdir(parents=True, exist_ok=True)
        f.write_text(secrets.token_urlsafe(24))
        f.chmod(0o600)
    return f.read_text().strip()


def env_lines(d: Path) -> list[str]:
    t = tools.locate()
    bin_dir = str(t.bin) if t else "<run `make sandbox-tools`>"
    (d / "pulumi").mkdir(parents=True, exist_ok=True)
    return [f"export KUBECONFIG={d / 'kubeconfig'}",
            f"export PATH={bin_dir}:$PATH",
            f"export PULUMI_BACKEND_URL=file://{d / 'pulumi'}",
            f"export PULUMI_CONFIG_PASSPHRASE={passphrase(d)}"]
