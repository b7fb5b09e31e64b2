"""The lazy store: a drop takes back exactly what was not synced — on files, on names, and on a
real nats-server's JetStream store (sync_interval always keeps every acked message, the default loses
some). Needs FUSE (/dev/fuse, fuse3, libfuse3): skipped without it locally, a failure on CI."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import sys

import nats
import pytest

from twinsite import procs
from twinsite.lab import lazystore
from twinsite.lab.lazyfs import cover, uncovered
from twinsite.lab.lazystore import DropReport, FuseUnavailable, LazyMount
from twinsite.natscluster import LocalNatsCluster

PROBLEM = lazystore.fuse_problem()


@pytest.fixture
def fuse_ok():
    if PROBLEM:
        if os.environ.get("CI") == "true":
            pytest.fail(f"FUSE is required: {PROBLEM}")
        pytest.skip(PROBLEM)


@pytest.fixture
def mnt(fuse_ok, tmp_path):
    with LazyMount(tmp_path / "backing", tmp_path / "mnt") as m:
        assert m.alive
        yield m
    assert not m.alive
    assert not os.path.ismount(tmp_path / "mnt")


def write(path, data: bytes, *, sync: bool, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def synced_file(dirpath, name: str, data: bytes):
    """A file whose content and name are both durable."""
    p = dirpath / name
    write(p, data, sync=True)
    fsync_dir(dirpath)
    return p


# --- pure helpers ------------------------------------------------------------------------------

def test_uncovered_and_cover_intervals():
    cov = cover(cover([], 10, 20), 30, 40)
    assert uncovered(cov, 0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert uncovered(cov, 12, 18) == []
    assert cover(cov, 15, 35) == [(10, 40)]


def test_missing_dev_fuse_is_one_clear_line(tmp_path):
    problem = lazystore.fuse_problem(dev=str(tmp_path / "no-fuse"))
    assert "is missing" in problem and "FUSE" in problem and "\n" not in problem
    with pytest.raises(FuseUnavailable, match="is missing"):
        lazystore.check_fuse(dev=str(tmp_path / "no-fuse"))


def test_daemon_that_cannot_mount_fails_fast_with_its_reason(fuse_ok, tmp_path, monkeypatch):
    fake = tmp_path / "fake_lazyfs.py"
    fake.write_text("import sys\nprint('fuse: device not found, try modprobe fuse')\nsys.exit(1)\n")
    monkeypatch.setattr(lazystore, "_DAEMON", fake)
    with pytest.raises(FuseUnavailable, match="device not found"):
        LazyMount(tmp_path / "b", tmp_path / "m").start(timeout=30)


# --- data --------------------------------------------------------------------------------------

def test_unsynced_write_dropped_synced_kept(mnt):
    root = mnt.mountpoint
    p = synced_file(root, "blk", b"A" * 100)
    with open(p, "r+b") as f:
        f.seek(40)
        f.write(b"B" * 20)      # overwrite inside the synced size
        f.seek(0, os.SEEK_END)
        f.write(b"C" * 4000)    # append
    assert mnt.pending() == DropReport(bytes=4020, files=1, entries=0)
    assert mnt.drop() == DropReport(bytes=4020, files=1, entries=0)
    assert p.read_bytes() == b"A" * 100
    assert mnt.pending() == DropReport(0, 0, 0)


def test_a_drop_leaves_nothing_of_the_kernels_cache_visible(fuse_ok, tmp_path):
    """The lab lets the kernel cache names and attributes (LAB_CACHE_S): a drop returns only once
    nothing cached before it shows through - neither an unsynced size nor an undone name."""
    with LazyMount(tmp_path / "b", tmp_path / "m", cache_s=lazystore.LAB_CACHE_S) as m:
        kept = synced_file(m.mountpoint, "kept", b"K" * 10)
        write(kept, b"more", sync=False, mode="ab")
        new = m.mountpoint / "new"
        write(new, b"N", sync=False)
        assert kept.stat().st_size == 14 and new.exists()  # both in the kernel's cache now
        assert m.drop() == DropReport(bytes=5, files=2, entries=1)
        assert kept.stat().st_size == 10 and kept.read_bytes() == b"K" * 10
        assert not new.exists()
        assert m.wait_fresh() == 0.0  # drop waited already


def test_fsync_and_fdatasync_keep_what_came_before(mnt):
    p = synced_file(mnt.mountpoint, "f", b"one")
    write(p, b"two", sync=True, mode="ab")
    with open(p, "ab") as f:
        f.write(b"three")
        f.flush()
        os.fdatasync(f.fileno())
    write(p, b"four", sync=False, mode="ab")
    mnt.drop()
    assert p.read_bytes() == b"onetwothree"


def test_truncate_taken_back(mnt):
    p = synced_file(mnt.mountpoint, "t", b"0123456789")
    os.truncate(p, 3)
    os.truncate(p, 20)
    write(p, b"x", sync=False, mode="r+b")
    assert p.stat().st_size == 20
    mnt.drop()
    assert p.read_bytes() == b"0123456789"


def test_o_trunc_open_taken_back(mnt):
    p = synced_file(mnt.mountpoint, "meta", b"synced meta")
    write(p, b"new", sync=False)  # "wb": O_TRUNC
    mnt.drop()
    assert p.read_bytes() == b"synced meta"


def test_stale_handle_is_fenced_after_drop(mnt):
    p = synced_file(mnt.mountpoint, "h", b"kept")
    f = open(p, "r+b", buffering=0)
    try:
        mnt.drop()
        with pytest.raises(OSError):
            f.write(b"late write of a dead process")
    finally:
        with contextlib.suppress(OSError):  # flush on close is fenced too
            f.close()
    assert p.read_bytes() == b"kept"


# --- names -------------------------------------------------------------------------------------

def test_unsynced_create_removed(mnt):
    root = mnt.mountpoint
    write(root / "new", b"data", sync=False)
    r = mnt.drop()
    assert (r.files, r.entries) == (1, 1)
    assert not (root / "new").exists()


def test_create_kept_by_dir_fsync_but_data_dropped(mnt):
    root = mnt.mountpoint
    write(root / "new", b"data", sync=False)
    fsync_dir(root)
    mnt.drop()
    assert (root / "new").read_bytes() == b""


def test_a_file_fsync_makes_earlier_name_changes_durable(mnt):
    """As in ext4's ordered journal (and as NATS, which never fsyncs a directory, relies on)."""
    root = mnt.mountpoint
    (root / "streams").mkdir()
    write(root / "streams" / "early", b"unsynced", sync=False)
    write(root / "streams" / "blk", b"msg", sync=True)
    write(root / "streams" / "later", b"x", sync=False)
    mnt.drop()
    assert (root / "streams" / "blk").read_bytes() == b"msg"
    assert (root / "streams" / "early").read_bytes() == b""  # its name is durable, its data not
    assert not (root / "streams" / "later").exists()


def test_unlink_after_dir_fsync_kept_without_it_undone(mnt):
    root = mnt.mountpoint
    a = synced_file(root, "a", b"AAA")
    b = synced_file(root, "b", b"BBB")
    a.unlink()
    fsync_dir(root)
    b.unlink()
    r = mnt.drop()
    assert r.entries == 1
    assert not a.exists()
    assert b.read_bytes() == b"BBB"


def test_rename_over_undone_unless_dir_synced(mnt):
    root = mnt.mountpoint
    synced_file(root, "meta.inf", b"old")
    write(root / "meta.tmp", b"new", sync=True)
    os.rename(root / "meta.tmp", root / "meta.inf")
    mnt.drop()
    assert (root / "meta.inf").read_bytes() == b"old"  # the replaced file is back
    assert (root / "meta.tmp").read_bytes() == b"new"  # durable by its fsync, under its old name


def test_rename_undo_returns_file_to_old_name(mnt):
    root = mnt.mountpoint
    synced_file(root, "x", b"xx")
    os.rename(root / "x", root / "y")
    mnt.drop()
    assert (root / "x").read_bytes() == b"xx" and not (root / "y").exists()
    os.rename(root / "x", root / "y")
    fsync_dir(root)
    mnt.drop()
    assert (root / "y").read_bytes() == b"xx" and not (root / "x").exists()


def test_unsynced_mkdir_removed_with_contents(mnt):
    root = mnt.mountpoint
    (root / "streams" / "T").mkdir(parents=True)
    write(root / "streams" / "T" / "1.blk", b"m", sync=False)
    mnt.drop()
    assert not (root / "streams").exists()


def test_rmdir_undone_unless_parent_synced(mnt):
    root = mnt.mountpoint
    (root / "d").mkdir()
    fsync_dir(root)
    (root / "d").rmdir()
    mnt.drop()
    assert (root / "d").is_dir()


def test_unlinked_open_file_still_written_and_brought_back(mnt):
    root = mnt.mountpoint
    p = synced_file(root, "blk", b"synced")
    with open(p, "r+b", buffering=0) as f:
        p.unlink()
        f.seek(0, os.SEEK_END)
        f.write(b"+late")  # (fstat here gets ESTALE: libfuse's hard_remove; see docs/lazystore.md)
        f.seek(0)
        assert f.read() == b"synced+late"
        mnt.drop()
    assert p.read_bytes() == b"synced"


def test_commit_counts_everything_as_synced(mnt):
    root = mnt.mountpoint
    write(root / "f", b"wiped on purpose", sync=False)
    assert mnt.commit().entries == 1
    assert mnt.drop() == DropReport(0, 0, 0)
    assert (root / "f").read_bytes() == b"wiped on purpose"


def test_backing_holds_the_bytes_and_survives_remount(fuse_ok, tmp_path):
    with LazyMount(tmp_path / "b", tmp_path / "m") as m:
        synced_file(m.mountpoint, "f", b"durable")
    assert (tmp_path / "b" / "f").read_bytes() == b"durable"
    with LazyMount(tmp_path / "b", tmp_path / "m") as m:
        assert (m.mountpoint / "f").read_bytes() == b"durable"
        assert m.drop() == DropReport(0, 0, 0)


def test_wiped_store_stays_empty_after_a_drop(fuse_ok, tmp_path):
    """The supervisor's boot retry wipes stores on purpose: a later power loss must not bring the
    old files back (LocalNatsCluster.wipe_store = rmtree through the mount + commit)."""
    stores = lazystore.LazyStores()
    try:
        m = stores.mount("z", tmp_path / "jetstream")
        (m.mountpoint / "streams").mkdir()
        synced_file(m.mountpoint / "streams", "1.blk", b"old election")
        shutil.rmtree(m.mountpoint, ignore_errors=True)  # the mountpoint itself stays (EBUSY)
        assert stores.commit("z").entries == 2
        assert stores.drop("z") == DropReport(0, 0, 0)
        assert os.listdir(m.mountpoint) == []
    finally:
        stores.stop()


def test_mount_goes_away_when_its_owner_is_killed(fuse_ok, tmp_path):
    """Nothing outlives the supervisor: its SIGKILL leaves no mount and no daemon behind."""
    code = ("import sys, time; from twinsite.lab.lazystore import LazyMount; "
            f"m = LazyMount({str(tmp_path / 'b')!r}, {str(tmp_path / 'm')!r}).start(); "
            "print(m.proc.pid, flush=True); time.sleep(600)")
    owner = procs.spawn([sys.executable, "-c", code], log=tmp_path / "owner.log")
    try:
        procs.wait_until(lambda: (tmp_path / "owner.log").read_text().strip().isdigit(), 30,
                         what="the owner's mount")
        daemon = int((tmp_path / "owner.log").read_text())
        assert os.path.ismount(tmp_path / "m")
    finally:
        procs.reap(owner, sig=signal.SIGKILL)
    procs.wait_until(lambda: not procs.pid_alive(daemon), 10, what="the lazy store daemon to exit")
    assert not os.path.ismount(tmp_path / "m")


# --- a real nats-server on the lazy store --------------------------------------------------------

class Server:
    """One JetStream nats-server whose store_dir is a lazy store."""

    def __init__(self, d, store_dir, sync_interval: str | None):
        self.dir, self.store_dir = d, store_dir
        self.port, self.http = procs.free_ports(2)
        sync = f"  sync_interval: {sync_interval}\n" if sync_interval else ""
        self.conf = d / "nats.conf"
        self.conf.write_text(f"host: 127.0.0.1\nport: {self.port}\nhttp_port: {self.http}\n"
                             f"jetstream {{\n  store_dir: \"{store_dir}\"\n{sync}}}\n")
        self.proc = None

    def start(self):
        self.proc = procs.spawn([procs.nats_server_binary(), "-c", str(self.conf)],
                                log=self.dir / "nats.log")
        procs.wait_until(lambda: procs.http_status(f"http://127.0.0.1:{self.http}/healthz") == 200,
                         30, what="nats-server /healthz")

    def kill(self):
        procs.reap(self.proc, sig=signal.SIGKILL)


N_MESSAGES = 200


async def publish_acked(url: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"], num_replicas=1)
        acked = 0
        for i in range(N_MESSAGES):
            ack = await js.publish(f"t.{i % 7}", f"message {i}".encode() * 8)
            acked += ack.seq == i + 1
        return acked
    finally:
        await nc.close()


async def stored_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        try:
            return (await nc.jetstream().stream_info("T")).state.messages
        except nats.js.errors.NotFoundError:
            return 0  # the stream itself was never synced
    finally:
        await nc.close()


async def power_loss_run(tmp_path, sync_interval: str | None,
                         drop: bool) -> tuple[int, int, DropReport]:
    store = tmp_path / "jetstream"
    with LazyMount(lazystore.backing_for(store), store) as m:
        s = Server(tmp_path, store, sync_interval)
        s.start()
        try:
            url = f"nats://127.0.0.1:{s.port}"
            acked = await publish_acked(url)
            s.kill()
            report = m.drop() if drop else m.pending()
            s.start()
            return acked, await stored_messages(url), report
        finally:
            s.kill()


async def test_sync_always_keeps_every_acked_message_through_power_loss(fuse_ok, tmp_path):
    acked, stored, report = await power_loss_run(tmp_path, "always", drop=True)
    assert acked == N_MESSAGES
    assert stored == N_MESSAGES


async def test_default_fsync_loses_acked_messages_on_power_loss(fuse_ok, tmp_path):
    acked, stored, report = await power_loss_run(tmp_path, None, drop=True)
    assert acked == N_MESSAGES
    assert report.bytes > 0 and report.files > 0
    assert stored < acked


async def test_crash_without_drop_keeps_unsynced_messages(fuse_ok, tmp_path):
    """kill -9 alone: the page cache survives, so even the default fsync loses nothing."""
    acked, stored, report = await power_loss_run(tmp_path, None, drop=False)
    assert report.bytes > 0  # there was unsynced data that a power loss would have dropped
    assert stored == acked == N_MESSAGES


# --- the lab's cluster on lazy stores ------------------------------------------------------------

async def grid_power_loss(topo, d, n: int = 50) -> tuple[int, int | None, dict]:
    """The lab topology's cluster on lazy stores: n acked R3 publishes, every server loses power
    at once, black start. (acked, messages in the stream afterwards or None if it is gone,
    DropReport per zone)."""
    cluster = LocalNatsCluster(topo, d, lazy_stores=True)
    cluster.start(timeout=60)
    try:
        nc = await nats.connect(cluster.client_urls())
        try:
            js = nc.jetstream()

            async def create() -> bool:  # until every site's server has joined the meta group
                await js.add_stream(name="G", subjects=["g.>"], num_replicas=3)
                return True

            async def has_leader() -> bool:
                return bool((await js.stream_info("G")).cluster.leader)

            await wait_async(create, want=True, timeout=30)
            await wait_async(has_leader, want=True, timeout=30)
            acked = sum([(await js.publish("g.x", f"m{i}".encode())).seq > 0 for i in range(n)])
        finally:
            await nc.close()
        reports = {z: cluster.power_loss(z) for z in cluster.nodes}
        for z in cluster.nodes:
            cluster.start_node(z)
        cluster.wait_ready(60)

        async def stream_messages():
            """The stream's count once it answers (None: the stream is gone); elections in
            progress answer with timeouts, which `wait_async` retries. A leader answers at once,
            so a short timeout asks again soon after one is elected (nats-py's 5 s default made
            every unanswered ask cost 5 s)."""
            nc = await nats.connect(cluster.client_urls())
            try:
                info = await nc.jetstream(timeout=1.0).stream_info("G")
                if not info.cluster.leader:
                    raise RuntimeError("no stream leader yet")
                return info.state.messages
            except nats.js.errors.NotFoundError:
                return None
            finally:
                await nc.close()

        if topo.messaging.fsync == "always":
            await wait_async(stream_messages, want=acked, timeout=60)
        return acked, await settled(stream_messages, timeout=60), reports
    finally:
        cluster.stop()
        assert cluster.stores is None
        assert not any(os.path.ismount(n.store_dir) for n in cluster.nodes.values())


async def test_lab_cluster_grid_power_loss_keeps_acked_r3_messages(fuse_ok, lab_topology,
                                                                   tmp_path):
    """fsync always: after the black start every acked R3 message is there, and the drops did
    take unsynced data back (even `always` leaves some Raft state unsynced)."""
    acked, stored, reports = await grid_power_loss(lab_topology, tmp_path / "nats")
    assert acked == 50 and stored == 50
    assert all(isinstance(r, DropReport) for r in reports.values())
    assert sum(r.bytes for r in reports.values()) > 0


async def test_lab_cluster_with_default_fsync_loses_acked_messages(fuse_ok, lab_topology,
                                                                   tmp_path):
    """The lazy-fsync stack's setting (NATS's default, fsync every 2 min): the same grid power
    loss costs acknowledged messages — Jepsen's finding, reproduced."""
    lazy = dataclasses.replace(lab_topology,
                               messaging=dataclasses.replace(lab_topology.messaging, fsync="2m"))
    acked, stored, reports = await grid_power_loss(lazy, tmp_path / "nats")
    assert acked == 50
    assert (stored or 0) < acked, f"{stored} of {acked} acked messages survived"


async def settled(probe, timeout: float):
    """The first answer of `await probe()` that is not an error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await probe()
        except Exception:  # noqa: BLE001 - not settled yet
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def wait_async(probe, want, timeout: float) -> None:
    """Until `await probe()` == want (errors count as not yet); fails with the last answer."""
    loop = asyncio.get_running_loop()
    deadline, last = loop.time() + timeout, None
    while loop.time() < deadline:
        try:
            last = await probe()
        except Exception as e:  # noqa: BLE001 - a cluster electing leaders answers errors
            last = repr(e)
        if last == want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"wanted {want!r}, last answer {last!r}")


def test_ftruncate_through_a_handle_taken_back(mnt):
    p = synced_file(mnt.mountpoint, "idx", b"0123456789")
    with open(p, "r+b", buffering=0) as f:
        os.ftruncate(f.fileno(), 4)
        assert os.fstat(f.fileno()).st_size == 4
    mnt.drop()
    assert p.read_bytes() == b"0123456789"
