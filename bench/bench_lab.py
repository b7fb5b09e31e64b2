"""Lab benchmarks: time for `lab up` to be ready (goals over 20 boots: median <= 3 s, worst <= 4 s,
no split first meta election; `python -m bench.bench_lab lab-up [N]` runs only this) and
link-fabric throughput vs direct (goal >= 0.8x), measured two ways.

Raw TCP: one bulk TCP stream from a sender to a sink (threads in this process, blocking sockets),
direct and through a relay running in its own process (`python -m twinsite.lab.fabric`), as the
supervisor runs it; trials alternate so machine noise hits both sides alike. Loopback moves GB/s,
so this measures the relay's per-byte cost at a rate the lab never carries.

JetStream (what the lab carries): acknowledged publishes/s with nats-py (32 in flight, 200-byte
payloads, fixed windows) into an R3 stream, one replica per site, leader in pangyo, the client
connected to the leader's server. Three copies of the lab stack's 7-server cluster run at once,
each hosted by a child process (`python -m bench.bench_lab --host MODE DIR`):
  direct  - `LocalNatsCluster(topo, dir)`, routes straight between servers;
  fabric  - the supervisor's own wiring (`Supervisor.build_fabric`, `boot_nats`: a relay per
            directed route, advertised-route relays that resolve their dialler), every link shaped
            to zero (`LinkSpec()`): the fabric's overhead only; no gateways are started;
  shaped  - the same with the lab stack's shaping (0.5 ms intra-site, 2-5 ms inter-site).
Windows alternate between the three so machine noise hits all alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
BULK = 256 << 20
CHUNK = 1 << 18


def _sink() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return

            def drain(c=c):
                buf, n = bytearray(1 << 20), 0
                while k := c.recv_into(buf):
                    n += k
                c.sendall(str(n).encode())
                c.close()
            threading.Thread(target=drain, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _push(port: int, total: int = BULK) -> float:
    """MB/s of one bulk stream, counted when the sink confirms it received everything."""
    chunk = b"x" * CHUNK
    with socket.create_connection((HOST, port)) as s:
        t0 = time.monotonic()
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += CHUNK
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
        dt = time.monotonic() - t0
    assert got == total, (got, total)
    return total / dt / 1e6


def _relay(target: int, *shape: str) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "twinsite.lab.fabric", str(target), *shape],
                         stdout=subprocess.PIPE)
    return p, int(p.stdout.readline())


def fabric_throughput(trials: int = 5) -> None:
    srv, port = _sink()
    for label, shape in (("no shaping", ()), ("intra-site shape, 0.5 ms", ("0.5",))):
        relay, rport = _relay(port, *shape)
        try:
            _push(port, 32 << 20), _push(rport, 32 << 20)  # warm up
            direct, via = [], []
            for _ in range(trials):
                direct.append(_push(port))
                via.append(_push(rport))
        finally:
            relay.kill()
            relay.wait()
        ratios = [v / d for v, d in zip(via, direct)]
        print(f"fabric throughput ({label}): direct median {statistics.median(direct):.0f} MB/s, "
              f"relay median {statistics.median(via):.0f} MB/s, ratio median "
              f"{statistics.median(ratios):.2f} (best {max(ratios):.2f}, worst {min(ratios):.2f}; "
              f"goal >= 0.8)")
    srv.close()


def lab_up_time(runs: int = 20) -> None:
    """`runs` boots one after another: median and worst wall time of `lab.up` and how many first
    meta elections split (the supervisor logs each one; see Supervisor.boot_nats)."""
    from twinsite import lab

    times, splits, lines, loads = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            d = f"{tmp}/lab{i}"
            loads.append(os.getloadavg()[0])
            t0 = time.monotonic()
            try:
                lab.up(state_dir=d, timeout=90, die_with_parent=True)
                times.append(time.monotonic() - t0)
            finally:
                lab.down(d)
            log = open(f"{d}/supervisor.log").read().strip().splitlines()
            splits.append(sum("first meta election split" in ln for ln in log))
            lines.append(next((ln.split("lab ready in ", 1)[1] for ln in log[::-1]
                               if "lab ready in" in ln), "?"))
    for t, ln in zip(times, lines):
        print(f"  lab up: {t:.2f}s (supervisor: {ln})")
    print(f"lab up (lab stack, {runs} boots, load average {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} CPUs): median {statistics.median(times):.2f}s (goal <= 3 s), worst "
          f"{max(times):.2f}s (goal <= 4 s), best {min(times):.2f}s; split first meta elections "
          f"{sum(splits)} in {sum(1 for n in splits if n)} of {runs} boots (goal 0)")


# --- JetStream publishes through the fabric --------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
STREAM, SUBJECT, SITE = "BENCH", "bench.pub", "pangyo"
MODES = ("direct", "fabric", "shaped")


def _unshaped(topo):
    from twinsite.topology import LinkSpec

    return dataclasses.replace(topo, intra_site=LinkSpec(), inter_site=tuple(
        dataclasses.replace(link, spec=LinkSpec()) for link in topo.inter_site))


def _host(mode: str, d: Path) -> None:
    """Child process: run one cluster (and for fabric/shaped its relays) until SIGTERM; write the
    nodes' addresses to d/nodes.json once the meta leader exists."""
    import uvloop

    from twinsite.natscluster import LocalNatsCluster
    from twinsite.topology import load_stack

    topo = load_stack("lab")

    def publish(cluster) -> None:
        doc = {z: {"site": n.site, "client_url": n.client_url, "monitor_url": n.monitor_url,
                   "pid": n.proc.pid} for z, n in cluster.nodes.items()}
        (d / "nodes.tmp").write_text(json.dumps(doc))
        os.replace(d / "nodes.tmp", d / "nodes.json")

    if mode == "direct":
        cluster = LocalNatsCluster(topo, d / "nats")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            cluster.start()
            publish(cluster)
            while True:
                signal.pause()
        finally:
            cluster.stop()

    from twinsite.lab.supervisor import Supervisor

    async def run() -> None:
        sup = Supervisor(topo if mode == "shaped" else _unshaped(topo), d)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await sup.build_fabric()  # as Supervisor.start, minus the gateways and the control API
            sup.set_dial_grace(5.0)
            sup.cluster.write_configs()
            sup.start_servers_together()
            await sup.boot_nats()
            await asyncio.to_thread(sup.cluster.wait_ready, 30.0)
            sup.set_dial_grace(0.0)
            publish(sup.cluster)
            await stop.wait()
        finally:
            await sup.shutdown()

    uvloop.run(run())


def _start_hosts(tmp: str) -> dict[str, tuple[subprocess.Popen, Path]]:
    from twinsite import procs

    hosts = {}
    for mode in MODES:
        d = Path(tmp) / mode
        d.mkdir()
        hosts[mode] = (procs.spawn([sys.executable, "-m", "bench.bench_lab", "--host", mode, str(d)],
                                   log=d / "host.log", cwd=ROOT), d)
    for mode, (p, d) in hosts.items():
        def ready(p=p, d=d, mode=mode) -> bool:
            if p.poll() is not None:
                raise procs.ChildExited(f"{mode} cluster host exited ({p.returncode}); see "
                                        f"{d / 'host.log'}")
            return (d / "nodes.json").exists()
        procs.wait_until(ready, 90.0, what=f"the {mode} cluster")
    return hosts


def _stop_hosts(hosts: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    from twinsite import procs

    for p, _ in hosts.values():
        procs.reap(p, timeout=10.0, sig=signal.SIGTERM)
    for _, d in hosts.values():  # a host killed before it stopped its servers: they die with it
        try:
            pids = [n["pid"] for n in json.loads((d / "nodes.json").read_text()).values()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            if procs.pid_alive(pid):
                procs.kill_group(pid)


async def _leader_in_site(nc, nodes: dict) -> str:
    """Create the stream and move its leader to the replica in SITE; its zone."""
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + 30
    while True:
        try:
            try:
                info = await js.stream_info(STREAM)
            except Exception:  # noqa: BLE001 - not there yet
                info = await js.add_stream(name=STREAM, subjects=[SUBJECT], num_replicas=3,
                                           max_bytes=256 << 20)
            cl = info.cluster
            names = [cl.leader] + [r.name for r in cl.replicas or []]
            want = next(z for z in names if nodes.get(z, {}).get("site") == SITE)
            if cl.leader == want and all(r.current for r in cl.replicas or []):
                return want
            if cl.leader != want:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}",
                                 json.dumps({"placement": {"preferred": want}}).encode(), timeout=5)
        except Exception as e:  # noqa: BLE001 - elections in progress: retry until the deadline
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {STREAM} leader not in {SITE}: {e!r}") from None
        await asyncio.sleep(0.2)


async def _window(js, seconds: float, inflight: int, payload: bytes) -> float:
    """Acknowledged publishes/s: `inflight` publishers, each waiting for its ack, for `seconds`."""
    acked = 0
    end = time.monotonic() + seconds

    async def worker():
        nonlocal acked
        while time.monotonic() < end:
            await js.publish(SUBJECT, payload, stream=STREAM)
            acked += 1
    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return acked / (time.monotonic() - t0)


async def _publish_rounds(tmp_hosts, rounds: int, seconds: float, inflight: int,
                          size: int) -> dict[str, list[float]]:
    import nats

    payload = os.urandom(size // 2).hex().encode()[:size]
    conns, jss = {}, {}
    try:
        for mode, (_, d) in tmp_hosts.items():
            nodes = json.loads((d / "nodes.json").read_text())
            admin = await nats.connect([n["client_url"] for n in nodes.values()], connect_timeout=2)
            try:
                zone = await _leader_in_site(admin, nodes)
            finally:
                await admin.close()
            conns[mode] = await nats.connect(nodes[zone]["client_url"], connect_timeout=2)
            jss[mode] = conns[mode].jetstream(timeout=10)
            await _window(jss[mode], 1.0, inflight, payload)  # warm up
        rates = {m: [] for m in tmp_hosts}
        for r in range(rounds):
            order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                rates[mode].append(await _window(jss[mode], seconds, inflight, payload))
        return rates
    finally:
        for nc in conns.values():
            await nc.close()


def jetstream_publish(rounds: int = 5, seconds: float = 5.0, inflight: int = 32,
                      size: int = 200) -> None:
    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        hosts = {}
        try:
            hosts = _start_hosts(tmp)
            rates = uvloop.run(_publish_rounds(hosts, rounds, seconds, inflight, size))
        finally:
            _stop_hosts(hosts)
    med = {m: statistics.median(v) for m, v in rates.items()}
    for r in range(rounds):
        print(f"  round {r + 1}: direct {rates['direct'][r]:.0f}, fabric {rates['fabric'][r]:.0f}, "
              f"shaped {rates['shaped'][r]:.0f} msgs/s")
    fab = [f / d for f, d in zip(rates["fabric"], rates["direct"])]
    shp = [s / d for s, d in zip(rates["shaped"], rates["direct"])]
    print(f"jetstream acked publishes ({inflight} in flight, {size} B, R3 one replica per site, "
          f"leader in {SITE}, {rounds} x {seconds:.0f}s windows): direct routes median "
          f"{med['direct']:.0f}/s; fabric unshaped median {med['fabric']:.0f}/s; fabric with lab "
          f"shaping median {med['shaped']:.0f}/s")
    print(f"jetstream fabric overhead: unshaped fabric / direct ratio median "
          f"{statistics.median(fab):.2f} (best {max(fab):.2f}, worst {min(fab):.2f}; goal >= 0.8)")
    print(f"jetstream modelled distance: lab-shaped fabric / direct ratio median "
          f"{statistics.median(shp):.2f} (best {max(shp):.2f}, worst {min(shp):.2f}; latency by "
          f"design, not overhead)")


def main() -> None:
    fabric_throughput()
    jetstream_publish()
    lab_up_time()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--host"]:
        _host(sys.argv[2], Path(sys.argv[3]))
    elif sys.argv[1:2] == ["lab-up"]:
        lab_up_time(int(sys.argv[2]) if len(sys.argv) > 2 else 20)
    else:
        main()
