"""Gateways forked from a process that has already imported them (the stdlib forkserver).

Why: a gateway's imports (FastAPI, pydantic, nats-py, uvicorn) cost ~0.75 s of CPU. Four of them
starting at once on a 2-core machine took ~2 s of the lab's 3 s start budget, and again on every
`restore`. `multiprocessing`'s forkserver imports them once, while the NATS servers boot; each
gateway is then a fork that only builds its app and connects.

Process hygiene stays what `procs.spawn` gives:
- the forkserver dies with the supervisor (PR_SET_PDEATHSIG, set by importing this module in the
  forkserver, see `_forkserver_dies_with_supervisor`);
- each gateway gets its own process group and dies with the forkserver, hence with the supervisor;
- `ForkedChild` has the part of `subprocess.Popen` that `procs.reap` and the supervisor use.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from multiprocessing import forkserver
from pathlib import Path
from typing import Sequence

from .. import procs

_PARENT_ENV = "TWINSITE_FORKSERVER_PARENT"
PRELOAD = [
    __name__,  # first: the forkserver must be bound to the supervisor before the slow imports
    "twinsite.talk.cli", "twinsite.talk.app", "twinsite.talk.backend", "uvicorn", "uvloop",
    "httptools", "uvicorn.loops.uvloop", "uvicorn.protocols.http.httptools_impl",
    "uvicorn.lifespan.on", "pydantic.v1",  # FastAPI imports it lazily while building routes
]


def _forkserver_dies_with_supervisor() -> None:
    """Run at import in the forkserver only (the supervisor names itself in the environment)."""
    parent = os.environ.pop(_PARENT_ENV, None)
    if parent is None or int(parent) == os.getpid():
        return
    procs.tie_to_parent(own_group=False)
    if os.getppid() != int(parent):  # the supervisor died before the line above
        os._exit(1)


_forkserver_dies_with_supervisor()


class ForkedChild:
    """The subset of `subprocess.Popen` the supervisor and `procs.reap` use."""

    def __init__(self, process: multiprocessing.Process, argv: Sequence[str]):
        self._p, self.args = process, list(argv)

    @property
    def pid(self) -> int:
        return self._p.pid

    @property
    def returncode(self) -> int | None:
        return self._p.exitcode

    def poll(self) -> int | None:
        return self._p.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._p.exitcode


def _serve(argv: list[str], log: str) -> None:
    """The child: own group, dies with the forkserver, output to its log, then the gateway."""
    procs.tie_to_parent()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from ..talk import cli  # preloaded: already in sys.modules

    sys.exit(cli.main(argv))


def _noop() -> None:
    """A fork that exits at once: `GatewayForker.wait_preloaded`."""


class GatewayForker:
    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("forkserver")

    def warm_up(self) -> None:
        """Start the forkserver (it imports in the background). Call from the main thread: the
        forkserver's death signal is tied to the thread that starts it."""
        self.ctx.set_forkserver_preload(PRELOAD)
        os.environ[_PARENT_ENV] = str(os.getpid())
        try:
            forkserver.ensure_running()
        finally:
            os.environ.pop(_PARENT_ENV, None)

    def wait_preloaded(self) -> None:
        """Block until the forkserver has done its imports (it answers a fork only then): one
        child that exits at once. Any thread."""
        p = self.ctx.Process(target=_noop, daemon=True)
        p.start()
        p.join()

    def spawn(self, argv: Sequence[str], *, log: str | Path) -> ForkedChild:
        """`argv` are the arguments of `twinsite talk` (e.g. ["serve", "--site", ...]).
        Blocks until the forkserver has forked, i.e. up to its preload time on the first call."""
        p = self.ctx.Process(target=_serve, args=(list(argv), str(log)), daemon=True)
        p.start()
        return ForkedChild(p, argv)

    def stop(self) -> None:
        """Stop the forkserver and multiprocessing's resource tracker (which the forkserver
        starts; gateways use no shared memory or semaphores for it to clean up). Call once the
        gateways are reaped: both would otherwise linger until every fork has exited."""
        from multiprocessing import resource_tracker

        fs = forkserver._forkserver  # noqa: SLF001 - the stdlib has no public stop for either
        rt = resource_tracker._resource_tracker  # noqa: SLF001
        for pid, fd in ((fs._forkserver_pid, fs._forkserver_alive_fd), (rt._pid, rt._fd)):
            if pid is None:
                continue
            procs.kill_group(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            if fd is not None:
                os.close(fd)
        if fs._forkserver_address:
            try:
                os.unlink(fs._forkserver_address)
            except OSError:
                pass
        fs._forkserver_pid = fs._forkserver_alive_fd = fs._forkserver_address = None
        rt._pid = rt._fd = None

    @staticmethod
    def server_pid() -> int | None:
        return forkserver._forkserver._forkserver_pid  # noqa: SLF001 - no public accessor
