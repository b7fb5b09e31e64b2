"""The lazy store's cost: acknowledged JetStream publishes/s with the store_dir on the FUSE layer
(twinsite/lab/lazystore.py) vs on the plain directory, same machine, same moment.

Three stores side by side: `plain` (the directory itself), `fuse` (the lazy store passing every
fsync on to the backing disk) and `lab` (the lazy store as the lab mounts it: fsync is modelled
by the undo log and not passed on, since the backing directory is scratch).
R1: one single nats-server per store, all running at once; windows rotate between them so machine
noise hits all alike; 200-byte payloads; 1 publisher waiting for each ack (the latency of one
write) and 32 in flight, with `sync_interval: always` (the lab) and NATS's default (lazy-fsync).
R3: one copy of the lab stack's 7-server cluster (direct routes, `fsync: always`) per store;
32 in flight, the client on the stream leader's server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

SUBJECT, STREAM = "bench.lazy", "BENCHLAZY"


def _start_server(d: Path, store: Path, sync: str | None):
    from twinsite import procs

    port, http = procs.free_ports(2)
    d.mkdir(parents=True, exist_ok=True)
    line = f"  sync_interval: {sync}\n" if sync else ""
    (d / "nats.conf").write_text(f"host: 127.0.0.1\nport: {port}\nhttp_port: {http}\n"
                                 f"jetstream {{\n  store_dir: \"{store}\"\n{line}}}\n")
    p = procs.spawn([procs.nats_server_binary(), "-c", str(d / "nats.conf")], log=d / "nats.log")
    procs.wait_until(lambda: procs.http_status(f"http://127.0.0.1:{http}/healthz") == 200, 30,
                     what="nats-server /healthz")
    return p, f"nats://127.0.0.1:{port}"


async def _window(js, seconds: float, inflight: int, payload: bytes) -> float:
    acked, end = 0, time.monotonic() + seconds

    async def worker():
        nonlocal acked
        while time.monotonic() < end:
            await js.publish(SUBJECT, payload, stream=STREAM)
            acked += 1
    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return acked / (time.monotonic() - t0)


async def _paced(js, rate: float, seconds: float, payload: bytes) -> tuple[float, float, float]:
    """Publishes started at a fixed rate (open loop, as the drill's driver): achieved acked/s and
    p50/p99 ack latency in ms."""
    lat: list[float] = []

    async def one():
        t = time.monotonic()
        await js.publish(SUBJECT, payload, stream=STREAM)
        lat.append(time.monotonic() - t)
    tasks, t0, n = [], time.monotonic(), int(rate * seconds)
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    q = statistics.quantiles(lat, n=100)
    return len(lat) / (time.monotonic() - t0), q[49] * 1000, q[98] * 1000


async def _paced_rounds(urls, leader_url, rates, seconds: float, rounds: int) -> dict:
    """Paced windows, rotating over the modes round by round (noise hits all alike)."""
    import nats

    payload = os.urandom(100).hex().encode()
    conns, jss = {}, {}
    try:
        for mode, url in urls.items():
            nc = await nats.connect(url, connect_timeout=2)
            info = await _create_stream(nc, 3)
            await nc.close()
            conns[mode] = await nats.connect(leader_url(mode, info.cluster.leader),
                                             connect_timeout=2)
            jss[mode] = conns[mode].jetstream(timeout=10)
        out = {(m, r): [] for m in urls for r in rates}
        for i in range(rounds):
            for mode in (list(urls) if i % 2 == 0 else list(urls)[::-1]):
                for rate in rates:
                    out[(mode, rate)].append(await _paced(jss[mode], rate, seconds, payload))
        return out
    finally:
        for nc in conns.values():
            await nc.close()


async def _create_stream(nc, replicas: int):
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + 60
    while True:
        try:
            try:
                return await js.stream_info(STREAM)
            except Exception:  # noqa: BLE001 - not there yet
                return await js.add_stream(name=STREAM, subjects=[SUBJECT], num_replicas=replicas,
                                           max_bytes=256 << 20)
        except Exception:  # noqa: BLE001 - the cluster is still forming
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _rates(urls: dict[str, str], rounds: int, seconds: float, inflight: int,
                 replicas: int = 1, leader_url=None) -> dict[str, list[float]]:
    """Alternating windows over `urls` (mode -> url(s)); acked publishes/s per window."""
    import nats

    payload = os.urandom(100).hex().encode()
    conns, jss = {}, {}
    try:
        for mode, url in urls.items():
            nc = await nats.connect(url, connect_timeout=2)
            info = await _create_stream(nc, replicas)
            if leader_url is not None:  # publish to the leader's server, as production gateways do
                await nc.close()
                nc = await nats.connect(leader_url(mode, info.cluster.leader), connect_timeout=2)
            conns[mode], jss[mode] = nc, nc.jetstream(timeout=10)
            await _window(jss[mode], 1.0, inflight, payload)  # warm up
        rates = {m: [] for m in urls}
        for r in range(rounds):
            for mode in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
                rates[mode].append(await _window(jss[mode], seconds, inflight, payload))
        return rates
    finally:
        for nc in conns.values():
            await nc.close()


MODES = {"plain": None, "fuse": True, "lab": False}  # mode -> real_fsync of its lazy store


def _report(what: str, rates: dict[str, list[float]]) -> None:
    parts = [f"plain median {statistics.median(rates['plain']):.0f}/s"]
    for mode in rates:
        if mode == "plain":
            continue
        ratio = [f / p for f, p in zip(rates[mode], rates["plain"])]
        parts.append(f"{mode} median {statistics.median(rates[mode]):.0f}/s, {mode}/plain "
                     f"{statistics.median(ratio):.2f} (best {max(ratio):.2f}, worst "
                     f"{min(ratio):.2f})")
    print(f"{what}: " + "; ".join(parts), flush=True)


def r1(rounds: int = 5, seconds: float = 3.0) -> None:
    import uvloop

    from twinsite import procs
    from twinsite.lab.lazystore import LazyStores

    for sync, label in (("always", "sync_interval always"), (None, "default fsync (2 min)")):
        with tempfile.TemporaryDirectory(prefix="bench-lazy-") as tmp:
            t = Path(tmp)
            servers = {}
            stores = {m: LazyStores(real_fsync=rf) for m, rf in MODES.items() if rf is not None}
            try:
                for mode, st in stores.items():
                    st.mount(mode, t / mode / "store")
                for mode in MODES:
                    servers[mode] = _start_server(t / mode, t / mode / "store", sync)
                urls = {m: url for m, (_, url) in servers.items()}
                for inflight in (1, 32):
                    rates = uvloop.run(_rates(urls, rounds, seconds, inflight))
                    _report(f"R1 {label}, {inflight} in flight, 200 B", rates)
            finally:
                for p, _ in servers.values():
                    procs.reap(p, sig=signal.SIGTERM)
                for st in stores.values():
                    st.stop()


def r3(rounds: int = 5, seconds: float = 3.0) -> None:
    import uvloop

    from twinsite.lab.lazystore import mount_node_stores
    from twinsite.natscluster import LocalNatsCluster
    from twinsite.topology import load_stack

    topo = load_stack("lab")
    with tempfile.TemporaryDirectory(prefix="bench-lazy-") as tmp:
        clusters = {m: LocalNatsCluster(topo, Path(tmp) / m) for m in MODES}
        try:
            for mode, c in clusters.items():
                if MODES[mode] is not None:
                    c.stores = mount_node_stores(c.nodes.values(), real_fsync=MODES[mode])
                c.start(timeout=60)
            urls = {m: c.client_urls() for m, c in clusters.items()}
            rates = uvloop.run(_rates(urls, rounds, seconds, 32, replicas=3,
                                      leader_url=lambda m, z: clusters[m].nodes[z].client_url))
            _report("R3 lab cluster (7 servers, fsync always), 32 in flight, 200 B", rates)
            drill = topo.traffic.drill_rate_msgs_per_s
            paced = uvloop.run(_paced_rounds(urls, lambda m, z: clusters[m].nodes[z].client_url,
                                             (drill, 3 * drill), 4.0, 3))
            for (mode, rate), runs in paced.items():
                med = [statistics.median(x[i] for x in runs) for i in range(3)]
                print(f"R3 paced at {rate:.0f}/s (drill rate; x3 = surge), {mode}: achieved "
                      f"{med[0]:.0f}/s, ack p50 {med[1]:.1f} ms, p99 {med[2]:.1f} ms", flush=True)
        finally:
            for c in clusters.values():
                c.stop()


def main() -> None:
    r1()
    r3()


if __name__ == "__main__":
    main()
