"""The FUSE filesystem behind `lazystore`: a pass-through that can forget what was never synced.

Runs as its own process (`python twinsite/lab/lazyfs.py --backing B --mount M --control S ...`), one
per NATS store directory; `lazystore.LazyMount` starts it and talks to its control socket.

Why hand-written: the tool made for this, lazyfs (used by Jepsen), is C++ built from source with
its own libfuse build, not a package any registry ships. What we need is small: pass every call
through to a backing directory and remember just enough to take back what was not synced.

Model (write-through + undo, so reads and synced data cost nothing extra):
- data: the first change since a file's last fsync/fdatasync records the file's size then
  (`synced_size`); an overwrite or shrink inside that size first saves the old bytes it covers
  (pre-images, each byte at most once). `drop` truncates to `synced_size` and writes the
  pre-images back: the file holds its last synced content again.
- names: create, mkdir, symlink, link, unlink, rmdir and rename are journalled; removed or
  replaced entries are parked in a trash directory (same filesystem) instead of deleted. Name
  changes become durable in order, as in ext4's journal: an fsync of any file or directory of the
  store makes every name change made before it durable (NATS never fsyncs a directory and relies
  on exactly this). `drop` undoes the rest, newest first.
- fencing: `drop` advances an epoch; a handle opened before it gets EIO for every later call, so
  a write still in flight from a killed process cannot land in the restored store.
Metadata (chmod, chown, times) is passed through and never taken back.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_ST_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
            "st_atime_ns", "st_mtime_ns", "st_ctime_ns")


def uncovered(covered: list[tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    """The parts of [a, b) outside the sorted, disjoint intervals `covered`."""
    out, pos = [], a
    for s, e in covered:
        if e <= pos:
            continue
        if s >= b:
            break
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < b:
        out.append((pos, b))
    return out


def cover(covered: list[tuple[int, int]], a: int, b: int) -> list[tuple[int, int]]:
    """`covered` with [a, b) added, merged (sorted, disjoint)."""
    out = []
    for s, e in sorted(covered + [(a, b)]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


@dataclass
class FileUndo:
    """What it takes to put one file back to its last synced content."""
    fd: int  # our own descriptor (read/write), independent of names and of the writer's handles
    synced_size: int
    covered: list[tuple[int, int]] = field(default_factory=list)
    preimages: list[tuple[int, bytes]] = field(default_factory=list)
    written: int = 0  # bytes written or cut since the last sync

    def save(self, a: int, b: int) -> None:
        """Keep the synced bytes of [a, b) (clipped to the synced size) before they change."""
        b = min(b, self.synced_size)
        if a >= b:
            return
        for s, e in uncovered(self.covered, a, b):
            self.preimages.append((s, os.pread(self.fd, e - s, s)))
            self.covered = cover(self.covered, s, e)

    def restore(self) -> None:
        os.ftruncate(self.fd, self.synced_size)
        for off, data in self.preimages:
            os.pwrite(self.fd, data, off)
        os.close(self.fd)


@dataclass(frozen=True)
class Entry:
    """One journalled change of a name. `trash` holds what it removed or replaced."""
    kind: str  # create | mkdir | remove | rename
    path: str  # for rename: the old name
    ino: int
    new: str = ""
    trash: str = ""


@dataclass
class Handle:
    fd: int
    ino: int
    epoch: int


class LazyFS:
    """The mfusepy operations (raw_fi=True). Paths are the mount's ("/a/b")."""

    use_ns = True
    # Calls on an open file get path None and our handle (libfuse's nullpath_ok): an unlinked
    # file that is still open keeps working, as on a real filesystem.
    flag_nopath = flag_nullpath_ok = True

    def __init__(self, backing: str, trash: str, real_fsync: bool = True):
        self.root, self.trash_dir, self.real_fsync = backing, trash, real_fsync
        self._mu = threading.RLock()
        self.epoch, self.next_fh, self.next_trash = 0, 1, 0
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, int] = {}  # opendir handle -> directory fd
        self.files: dict[int, FileUndo] = {}
        self.journal: list[Entry] = []
        self.direct_io = False

    # --- helpers ---------------------------------------------------------------------------------

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _handle(self, fh) -> Handle:
        h = self.handles.get(fh.fh)
        if h is None or h.epoch != self.epoch:
            raise OSError(errno.EIO, "stale handle (the store was dropped)")
        return h

    def _dirty(self, ino: int, fd: int) -> FileUndo:
        u = self.files.get(ino)
        if u is None:
            u = self.files[ino] = FileUndo(os.dup(fd), os.fstat(fd).st_size)
        return u

    def _park(self, real: str) -> str:
        self.next_trash += 1
        t = os.path.join(self.trash_dir, str(self.next_trash))
        os.rename(real, t)
        return t

    def _log(self, kind: str, path: str, ino: int, new: str = "", trash: str = ""):
        self.journal.append(Entry(kind, path, ino, new, trash))

    def _commit_names(self) -> None:
        """Every name change so far is durable: what they removed is gone for good."""
        for e in self.journal:
            if e.trash:
                _remove(e.trash)
        self.journal = []

    # --- control (called from the control socket) -------------------------------------------------

    def pending(self) -> dict:
        with self._mu:
            names = {e.ino for e in self.journal}
            return {"bytes": sum(u.written for u in self.files.values()),
                    "files": len(names | set(self.files)), "entries": len(self.journal)}

    def detail(self) -> dict:
        """The uncommitted name changes and the inodes with unsynced data (for debugging)."""
        with self._mu:
            return {"entries": [[e.kind, e.path, e.new] for e in self.journal],
                    "dirty_inodes": sorted(self.files)}

    def drop(self) -> dict:
        with self._mu:
            report = self.pending()
            self.epoch += 1
            for e in reversed(self.journal):
                _undo(e, self.real)
            self.journal = []
            for u in self.files.values():
                u.restore()
            self.files = {}
            return report

    def commit(self) -> dict:
        """Everything counts as synced (e.g. after the lab wiped a store on purpose)."""
        with self._mu:
            report = self.pending()
            self._commit_names()
            for u in self.files.values():
                os.close(u.fd)
            self.files = {}
            return report

    # --- reading ---------------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        st = os.fstat(self._handle(fh).fd) if path is None else os.lstat(self.real(path))
        d = {k: getattr(st, k) for k in _ST_KEYS}
        d.update(st_atime=d.pop("st_atime_ns"), st_mtime=d.pop("st_mtime_ns"),
                 st_ctime=d.pop("st_ctime_ns"))
        return d

    def opendir(self, path):
        with self._mu:
            fd = os.open(self.real(path), os.O_RDONLY | os.O_DIRECTORY)
            fh, self.next_fh = self.next_fh, self.next_fh + 1
            self.dirs[fh] = fd
            return fh

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.dirs[fh])

    def releasedir(self, path, fh):
        with self._mu:
            fd = self.dirs.pop(fh, None)
        if fd is not None:
            os.close(fd)

    def readlink(self, path):
        return os.readlink(self.real(path))

    def statfs(self, path):
        sv = os.statvfs(self.real(path))
        return {k: getattr(sv, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                            "f_favail", "f_ffree", "f_files", "f_flag",
                                            "f_frsize", "f_namemax")}

    def access(self, path, amode):
        if not os.access(self.real(path), amode):
            raise OSError(errno.EACCES, "")

    def read(self, path, size, offset, fh):
        return os.pread(self._handle(fh).fd, size, offset)

    # --- files -----------------------------------------------------------------------------------

    def _open(self, real: str, flags: int, mode: int, fi) -> int:
        acc = flags & os.O_ACCMODE
        flags = (flags & ~(os.O_APPEND | os.O_ACCMODE | os.O_TRUNC)) | (
            os.O_RDWR if acc != os.O_RDONLY else os.O_RDONLY)
        fd = os.open(real, flags, mode)
        h = Handle(fd, os.fstat(fd).st_ino, self.epoch)
        fi.fh, self.next_fh = self.next_fh, self.next_fh + 1
        fi.direct_io = self.direct_io
        fi.keep_cache = False  # the kernel drops its cached pages of the file at every open
        self.handles[fi.fh] = h
        return h.fd

    def open(self, path, fi):
        with self._mu:
            fd = self._open(self.real(path), fi.flags, 0, fi)
            if fi.flags & os.O_TRUNC:
                self._truncate_fd(fd, 0)
            return 0

    def create(self, path, mode, fi):
        with self._mu:
            real = self.real(path)
            existed = os.path.lexists(real)
            fd = self._open(real, fi.flags | os.O_CREAT, mode, fi)
            if existed and fi.flags & os.O_TRUNC:
                self._truncate_fd(fd, 0)
            if not existed:
                self._log("create", path, os.fstat(fd).st_ino)
            return 0

    def write(self, path, data, offset, fh):
        with self._mu:
            h = self._handle(fh)
            u = self._dirty(h.ino, h.fd)
            u.save(offset, offset + len(data))
            u.written += len(data)
            return os.pwrite(h.fd, data, offset)

    def _truncate_fd(self, fd: int, length: int) -> None:
        st = os.fstat(fd)
        if length == st.st_size:
            return
        u = self._dirty(st.st_ino, fd)
        u.save(length, st.st_size)
        u.written += abs(st.st_size - length)
        os.ftruncate(fd, length)

    def truncate(self, path, length, fh=None):
        with self._mu:
            if fh is not None:
                return self._truncate_fd(self._handle(fh).fd, length)
            fd = os.open(self.real(path), os.O_RDWR)
            try:
                self._truncate_fd(fd, length)
            finally:
                os.close(fd)

    def fsync(self, path, datasync, fh):
        with self._mu:
            h = self._handle(fh)
            u = self.files.pop(h.ino, None)
            if u is not None:
                os.close(u.fd)
            self._commit_names()
        if self.real_fsync:
            (os.fdatasync if datasync else os.fsync)(h.fd)

    def fsyncdir(self, path, datasync, fh):
        with self._mu:
            self._commit_names()
            fd = self.dirs[fh]
        if self.real_fsync:
            os.fsync(fd)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        with self._mu:
            h = self.handles.pop(fh.fh, None)
        if h is not None:
            os.close(h.fd)

    # --- names -----------------------------------------------------------------------------------

    def mkdir(self, path, mode):
        with self._mu:
            os.mkdir(self.real(path), mode)
            self._log("mkdir", path, os.lstat(self.real(path)).st_ino)

    def symlink(self, target, source):
        with self._mu:
            os.symlink(source, self.real(target))
            self._log("create", target, os.lstat(self.real(target)).st_ino)

    def link(self, target, source):
        with self._mu:
            os.link(self.real(source), self.real(target))
            self._log("create", target, os.lstat(self.real(target)).st_ino)

    def unlink(self, path):
        with self._mu:
            real = self.real(path)
            ino = os.lstat(real).st_ino
            self._log("remove", path, ino, trash=self._park(real))

    def rmdir(self, path):
        with self._mu:
            real = self.real(path)
            if os.listdir(real):
                raise OSError(errno.ENOTEMPTY, path)
            ino = os.lstat(real).st_ino
            self._log("remove", path, ino, trash=self._park(real))

    def rename(self, old, new):
        with self._mu:
            ro, rn = self.real(old), self.real(new)
            ino = os.lstat(ro).st_ino
            trash = self._park(rn) if os.path.lexists(rn) else ""
            try:
                os.rename(ro, rn)
            except OSError:
                if trash:
                    os.rename(trash, rn)
                raise
            self._log("rename", old, ino, new=new, trash=trash)

    def chmod(self, path, mode):
        os.chmod(self.real(_named(path)), mode)

    def chown(self, path, uid, gid):
        os.lchown(self.real(_named(path)), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self.real(_named(path)), ns=times, follow_symlinks=False)


def _named(path):
    """mfusepy does not hand us the file of fchmod/fchown/futimens: by name only."""
    if path is None:
        raise OSError(errno.ENOTSUP, "metadata change through an open handle")
    return path


def _remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _undo(e: Entry, real) -> None:
    """Take back one journal entry; a name a later (durable) change moved away is skipped."""
    try:
        if e.kind in ("create", "mkdir"):
            _remove(real(e.path))
        elif e.kind == "remove":
            os.rename(e.trash, real(e.path))
        elif e.kind == "rename":
            os.rename(real(e.new), real(e.path))
            if e.trash:
                os.rename(e.trash, real(e.new))
    except FileNotFoundError:
        pass


# --- the process ---------------------------------------------------------------------------------

class _Control(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            cmd = line.decode().strip()
            fs: LazyFS = self.server.fs  # type: ignore[attr-defined]
            try:
                if cmd == "ping":
                    out = {"ok": True, "pid": os.getpid()}
                elif cmd in ("drop", "pending", "commit", "detail"):
                    out = {"ok": True, **getattr(fs, cmd)()}
                else:
                    out = {"ok": False, "error": f"unknown command {cmd!r}"}
            except OSError as e:
                out = {"ok": False, "error": str(e)}
            self.wfile.write((json.dumps(out) + "\n").encode())


def _unmount_when_orphaned(parent: int, mount: str) -> None:
    """Our parent died (even by SIGKILL): detach the mount, which ends libfuse's loop. Polling,
    not PR_SET_PDEATHSIG, which fires when the *thread* that started us ends."""
    while os.getppid() == parent:
        time.sleep(0.5)
    subprocess.run(["fusermount3", "-u", "-z", "-q", mount], check=False)


def serve(backing: str, mount: str, control: str, trash: str, real_fsync: bool = True,
          direct_io: bool = False, debug: bool = False, parent: int | None = None,
          cache_s: float = 0.0) -> None:
    import mfusepy  # here: loading libfuse3 is this process's business only

    class FUSE(mfusepy.FUSE):
        def truncate_fuse_3(self, path, length, fip):  # mfusepy drops ftruncate's handle
            return self.operations.truncate(None if path is None else path.decode(),
                                            length, fip.contents if fip else None)

    Path(backing).mkdir(parents=True, exist_ok=True)
    Path(mount).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(trash, ignore_errors=True)  # leftovers of a previous mount were durable deletes
    Path(trash).mkdir(parents=True)
    abstract = control.startswith("@")  # Linux's abstract namespace: no path, no length limit
    address = "\0" + control[1:] if abstract else control
    if not abstract and os.path.exists(control):
        os.unlink(control)
    fs = LazyFS(os.path.abspath(backing), os.path.abspath(trash), real_fsync)
    fs.direct_io = direct_io
    server = socketserver.ThreadingUnixStreamServer(address, _Control)
    server.daemon_threads = True
    server.fs = fs  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if parent is not None:
        threading.Thread(target=_unmount_when_orphaned, args=(parent, mount), daemon=True).start()
    # One thread serves the mount (the control socket has its own): every call is a quick syscall
    # on the backing directory, and libfuse's thread pool cost 3x the CPU per request (measured
    # 45-68 us vs 15-17 us: thread hand-offs and the GIL).
    # Attributes and names may be cached by the kernel for `cache_s`: without it every path
    # component of every open and stat is a request to this process (creating 8 R3 streams
    # measured 2.3x slower). Only this mount changes the store, except `drop`, whose caller
    # waits `cache_s` before anything opens the store again (LazyMount.wait_fresh). Negative
    # entries are never cached: a drop that brings back an unlinked name must be seen at once.
    try:
        FUSE(fs, mount, raw_fi=True, foreground=True, debug=debug, nothreads=True,
             hard_remove=True, attr_timeout=cache_s, entry_timeout=cache_s, negative_timeout=0,
             fsname="twinsite-lazystore", subtype="lazystore")
    except RuntimeError as e:  # libfuse's loop ends with 8 when a signal stopped it
        if str(e) != "8":
            raise
    finally:
        server.server_close()  # its thread is a daemon: no shutdown() (that polls every 0.5 s)
        if not abstract:
            os.unlink(control)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lazyfs.py")
    p.add_argument("--backing", required=True)
    p.add_argument("--mount", required=True)
    p.add_argument("--control", required=True, help="Unix socket: drop | pending | commit | ping")
    p.add_argument("--trash", required=True, help="on the backing directory's filesystem")
    p.add_argument("--no-real-fsync", action="store_true",
                   help="do not pass fsync on to the backing files (the lab's data is scratch)")
    p.add_argument("--direct-io", action="store_true")
    p.add_argument("--debug", action="store_true", help="libfuse prints every request")
    p.add_argument("--parent", type=int, help="unmount and exit when this process is gone")
    p.add_argument("--cache-s", type=float, default=0.0,
                   help="seconds the kernel may cache attributes and names (0: ask every time)")
    a = p.parse_args(argv)
    serve(a.backing, a.mount, a.control, a.trash, not a.no_real_fsync, a.direct_io, a.debug,
          a.parent, a.cache_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
