"""A store that forgets what was not synced: the lab's power loss for NATS store directories.

In the lab a power loss is SIGKILL plus silent links; the kernel's page cache survives a SIGKILL,
so a server restarted after it finds every byte it wrote, synced or not. Here each store directory
is a FUSE mount of ours (`lazyfs`, one process per mount) over a backing directory: `drop()`
puts every file back to its last fsync'd content and undoes names never made durable, as lazyfs's
`clear-cache` does. A crash (kill -9 alone) must not call `drop()`.

Why hand-written and not lazyfs: lazyfs is C++ built from source against its own libfuse, not a
package any registry ships; the few hundred lines of `lazyfs.py` over mfusepy + Debian's libfuse3
do the one thing the lab needs.

    with LazyMount(backing, store_dir) as m:   # FuseUnavailable names the cause when it can't
        ... nats-server writes under store_dir ...
        report = m.drop()                     # after SIGKILL of that server: DropReport
    stores = LazyStores(); stores.mount("pangyo-a", store_dir)   # one per server, by zone
    stores.drop("pangyo-a"); stores.stop()
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import procs

_DAEMON = Path(__file__).with_name("lazyfs.py")  # run as a script: no twinsite imports to pay for
# Measured: a name cached just before a drop was still served from the cache 0.55 s later with a
# 0.5 s timeout (the deadline is counted in jiffies, from the kernel's reply, rounded up).
KERNEL_TICK_SLACK_S = 0.1


class FuseUnavailable(RuntimeError):
    """This machine cannot mount the lazy store; the message names the cause and the fix."""


@dataclass(frozen=True)
class DropReport:
    bytes: int    # bytes written (or cut) since the files' last sync, taken back
    files: int    # files whose content or name was taken back
    entries: int  # name changes (create, unlink, rename, ...) taken back


def fuse_problem(dev: str = "/dev/fuse") -> str | None:
    """Why FUSE cannot work here (one line with the fix), or None."""
    if not os.path.exists(dev):
        return (f"{dev} is missing: the lab's power-loss store needs FUSE (for a container: "
                "--device /dev/fuse --cap-add SYS_ADMIN)")
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not readable and writable by this user: the lab's store needs FUSE"
    if shutil.which("fusermount3") is None:
        return "fusermount3 not found: install Debian's fuse3 (apt-get install fuse3 libfuse3-3)"
    if libfuse3() is None:
        return "libfuse3 not found: install Debian's libfuse3-3 (apt-get install libfuse3-3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed: run make setup (pip install mfusepy)"
    return None


@functools.cache
def libfuse3() -> str | None:
    """libfuse3's soname, handed to each daemon: mfusepy would otherwise look for libfuse 2 first
    (and ask ldconfig, ~50 ms, in every daemon)."""
    return ctypes.util.find_library("fuse3")


def check_fuse(dev: str = "/dev/fuse") -> None:
    problem = fuse_problem(dev)
    if problem:
        raise FuseUnavailable(problem)


def _is_mount(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:  # a dead daemon's mount: ENOTCONN
        return True


def force_unmount(path: Path) -> None:
    """Detach whatever is mounted at path (a dead daemon's mount included)."""
    if _is_mount(path):
        subprocess.run(["fusermount3", "-u", "-z", "-q", str(path)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class LazyMount:
    """One lazy store: `mountpoint` shows `backing`; `drop()` forgets what was not synced."""

    def __init__(self, backing: str | Path, mountpoint: str | Path, *, real_fsync: bool = True,
                 log: str | Path | None = None, cache_s: float = 0.0):
        self.backing, self.mountpoint = Path(backing).absolute(), Path(mountpoint).absolute()
        self.trash = self.backing.with_name(self.backing.name + ".trash")
        # an abstract Unix socket named after the backing dir: a deep state dir (pytest's tmp
        # folders) would exceed AF_UNIX's 108-byte path limit
        digest = hashlib.sha1(str(self.backing).encode()).hexdigest()[:20]
        self.control = f"@twinsite-lazystore-{digest}"
        self.log = Path(log) if log else self.backing.with_name(self.backing.name + ".log")
        self.real_fsync = real_fsync
        # the kernel may cache names and attributes this long (see lazyfs.serve): after a drop,
        # nothing may open the store before that cache expired (`wait_fresh`)
        self.cache_s = cache_s
        self._stale_until = 0.0
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        """Start the daemon without waiting (see `wait_mounted`): lets many mounts start at once."""
        check_fuse()
        force_unmount(self.mountpoint)
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(_DAEMON), "--backing", str(self.backing),
                "--mount", str(self.mountpoint), "--control", str(self.control),
                "--trash", str(self.trash), "--parent", str(os.getpid())]
        argv += [] if self.real_fsync else ["--no-real-fsync"]
        argv += ["--cache-s", str(self.cache_s)] if self.cache_s else []
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "FUSE_LIBRARY_PATH": libfuse3()},
                                         stdin=subprocess.DEVNULL, close_fds=True,
                                         start_new_session=True)  # it unmounts when we die
        finally:
            out.close()

    def wait_mounted(self, timeout: float = 15.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise procs.ChildExited(f"lazy store at {self.mountpoint} exited "
                                        f"({self.proc.returncode}): "
                                        f"{' | '.join(tail) or 'no log'}")
            return _is_mount(self.mountpoint) and self._ask("ping")["ok"]
        try:
            procs.wait_until(up, timeout, what=f"lazy store mounted at {self.mountpoint}")
        except procs.ChildExited as e:
            self.stop()
            raise FuseUnavailable(str(e)) from None
        except BaseException:
            self.stop()
            raise

    @property
    def alive(self) -> bool:
        """The daemon runs (if it died, the mount answers ENOTCONN: the lab should fail loudly)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> "LazyMount":
        self.spawn()
        self.wait_mounted(timeout)
        return self

    def _ask(self, cmd: str, timeout: float = 30.0) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect("\0" + self.control[1:])
            s.sendall(cmd.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"lazy store {self.mountpoint}: no answer to {cmd}")
                buf += chunk
        return json.loads(buf)

    def _report(self, cmd: str) -> DropReport:
        r = self._ask(cmd)
        if not r.get("ok"):
            raise RuntimeError(f"lazy store {self.mountpoint}: {cmd} failed: {r.get('error')}")
        return DropReport(bytes=r["bytes"], files=r["files"], entries=r["entries"])

    def drop(self, wait: bool = True) -> DropReport:
        """Power loss: every unsynced write and name change is taken back. Call only once the
        store's users are dead (SIGKILL): their open handles are fenced (EIO from now on).
        Returns once the mount shows the synced state; with `wait=False` at once, and then
        whoever opens the store next calls `wait_fresh()` first (NatsCluster.start_node does)."""
        report = self._report("drop")
        if self.cache_s:  # the kernel rounds its timeouts up to whole jiffies (HZ 100-1000)
            self._stale_until = time.monotonic() + self.cache_s + KERNEL_TICK_SLACK_S
        if wait:
            self.wait_fresh()
        return report

    def wait_fresh(self) -> float:
        """Wait until the kernel's cache of names and attributes from before the last drop has
        expired (at most `cache_s`; a restart seconds after a power loss never waits). Returns
        the seconds waited."""
        wait = max(0.0, self._stale_until - time.monotonic())
        if wait:
            time.sleep(wait)  # a deadline, not a condition: the kernel offers nothing to ask
        return wait

    def pending(self) -> DropReport:
        """What a drop would take back now."""
        return self._report("pending")

    def commit(self) -> DropReport:
        """Count everything as synced (after the lab wiped or reset a store on purpose)."""
        return self._report("commit")

    def stop(self, timeout: float = 5.0) -> None:
        """Unmount (lazily: a straggler's open file cannot block it), then reap the daemon, whose
        loop ends as soon as the kernel lets go of the mount."""
        force_unmount(self.mountpoint)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    procs.kill_group(self.proc, signal.SIGKILL)
                    self.proc.wait(timeout)
        self.proc = None

    def __enter__(self) -> "LazyMount":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def backing_for(store_dir: str | Path) -> Path:
    """Where a store directory's bytes really live: a sibling `<name>.backing`."""
    p = Path(store_dir)
    return p.with_name(p.name + ".backing")


class LazyStores:
    """One LazyMount per NATS server store directory, by name (the zone).

    `real_fsync=False` (the lab's choice): an fsync is modelled by the undo log alone and not
    passed on to the backing disk, whose durability nothing in the lab needs (it is scratch)."""

    def __init__(self, real_fsync: bool = False, cache_s: float = 0.0):
        self.real_fsync, self.cache_s = real_fsync, cache_s
        self.mounts: dict[str, LazyMount] = {}

    def mount_all(self, stores: Iterable[tuple[str, str | Path]], timeout: float = 15.0) -> None:
        """Mount every (name, store_dir) at once; on failure nothing stays mounted."""
        try:
            started = []
            for name, store_dir in stores:
                m = self.mounts[name] = LazyMount(backing_for(store_dir), store_dir,
                                                  real_fsync=self.real_fsync, cache_s=self.cache_s)
                m.spawn()
                started.append(m)
            deadline = time.monotonic() + timeout
            for m in started:
                m.wait_mounted(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def mount(self, name: str, store_dir: str | Path, timeout: float = 15.0) -> LazyMount:
        self.mount_all([(name, store_dir)], timeout)
        return self.mounts[name]

    def drop(self, name: str, wait: bool = True) -> DropReport:
        return self.mounts[name].drop(wait)

    def commit(self, name: str) -> DropReport:
        return self.mounts[name].commit()

    def wait_fresh(self, name: str) -> float:
        return self.mounts[name].wait_fresh()

    def pending(self, name: str) -> DropReport:
        return self.mounts[name].pending()

    def stop(self) -> None:
        for m in self.mounts.values():
            m.stop()
        self.mounts = {}


# How long the lab's kernel may cache a store's names and attributes: long enough to spare the
# daemon the repeated lookups of a burst (stream creation, recovery), short against any power
# loss (>= 5 s in every experiment), which a restart must outwait (`wait_fresh`).
LAB_CACHE_S = 0.5


def mount_node_stores(nodes: Iterable, timeout: float = 15.0,
                      real_fsync: bool = False, cache_s: float = LAB_CACHE_S) -> LazyStores:
    """The supervisor's hook: a lazy store under every `NatsNode.store_dir` (before the servers
    start). Raises FuseUnavailable naming the cause; never falls back to a plain directory."""
    stores = LazyStores(real_fsync=real_fsync, cache_s=cache_s)
    stores.mount_all([(n.zone, n.store_dir) for n in nodes], timeout)
    return stores
