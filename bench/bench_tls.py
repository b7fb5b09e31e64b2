"""What authentication and TLS on the NATS hops cost: acked msgs/s through one gateway, per mode.

Three real 7-server clusters of the lab topology run side by side: `open` (no users, plain TCP:
only the test suite runs this), `auth` (the lab's users and permissions, route credentials, plain
TCP) and `auth+tls` (what the lab runs: the same plus TLS on client and route connections). One
gateway per cluster; rounds alternate between the modes so machine load drifts hit all alike;
the median round per mode is reported, and the ratios to `open`. On a shared machine the rates
swing with the load of others; the CPU time the gateway and the 7 servers spend per acked message
(from /proc) is the steadier measure of what TLS costs.
Run: `python -m bench tls` (BENCH_SECONDS, BENCH_CONCURRENCY, BENCH_ROUNDS).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from twinsite import capacity, procs, shards, topology
from twinsite.lab import credentials
from twinsite.natscluster import LocalNatsCluster
from twinsite.talk import auth

from . import bench_gateway as bg

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
MODES = ("open", "auth", "auth+tls")


def _gateway(cluster: LocalNatsCluster, creds, mode: str, d: Path, token_file: Path):
    own = cluster.client_urls("pangyo")
    urls = own + [u for u in cluster.client_urls() if u not in own]
    port = procs.free_port()
    extra = [] if mode == "open" else [
        "--nats-user", "gateway", "--nats-password-file", str(creds.password_file("gateway"))]
    if mode == "auth+tls":
        extra += ["--nats-ca", creds.pki.ca_file]
    proc = procs.spawn([sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site", "pangyo",
                        "--nats", ",".join(urls), "--listen", f"127.0.0.1:{port}",
                        "--shards", str(capacity.lab_shard_count(cluster.topo)),
                        "--token-file", str(token_file), *extra],
                       log=d / f"gateway-{mode}.log")
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    topo = topology.load_stack("lab")
    bg.SETTINGS = __import__("twinsite.talk.backend", fromlist=["Settings"]).Settings \
        .from_topology(topo, "pangyo", (), shards=capacity.lab_shard_count(topo))
    streams = [shards.stream_name(i) for i in range(capacity.lab_shard_count(topo))]
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        d = Path(tmp)
        creds = credentials.create(d, [z.name for z in topo.zones])
        token_file = auth.write(d / "talk-token")
        token = auth.read_token(token_file)
        security = {"open": None, "auth": creds.security(streams, tls=False),
                    "auth+tls": creds.security(streams)}
        clusters = {m: LocalNatsCluster(topo, d / m.replace("+", "-"), security=security[m])
                    for m in MODES}
        gws = {}
        try:
            for m in MODES:
                clusters[m].start(timeout=90)
                gws[m] = _gateway(clusters[m], creds, m, d, token_file)
            for m, (proc, base) in gws.items():
                procs.wait_until(lambda b=base: bg._ready(b), 90, what=f"gateway {m} ready")
            rates = {m: [] for m in MODES}
            cpu = {m: [] for m in MODES}  # (gateway, servers) CPU ms per acked message
            tag = str(int(time.time()))
            for r in range(ROUNDS):
                for m in MODES if r % 2 == 0 else reversed(MODES):
                    pids = [n.proc.pid for n in clusters[m].nodes.values()]
                    g0, s0 = bg._cpu_seconds(gws[m][0].pid), sum(map(bg._cpu_seconds, pids))
                    ok, failed, lat = uvloop.run(bg.bench_gateway(gws[m][1], f"{tag}{m}{r}", token))
                    per = 1000 / max(ok, 1)
                    cpu[m].append(((bg._cpu_seconds(gws[m][0].pid) - g0) * per,
                                   (sum(map(bg._cpu_seconds, pids)) - s0) * per))
                    rates[m].append(ok / bg.SECONDS)
                    print(f"round {r + 1} {m:9s} {ok / bg.SECONDS:7.0f} acked msgs/s (failed "
                          f"{failed}, p50 {bg._pct(lat, .5):.1f} ms, "
                          f"p99 {bg._pct(lat, .99):.1f} ms, "
                          f"CPU/msg gateway {cpu[m][-1][0]:.3f} ms, servers {cpu[m][-1][1]:.3f} ms)",
                          flush=True)
            med = {m: statistics.median(v) for m, v in rates.items()}
            gcpu = {m: statistics.median(c[0] for c in v) for m, v in cpu.items()}
            scpu = {m: statistics.median(c[1] for c in v) for m, v in cpu.items()}
            for m in MODES:
                print(f"{m:9s} median {med[m]:7.0f} acked msgs/s  ratio to open "
                      f"{med[m] / med['open']:.2f}  CPU/msg gateway {gcpu[m]:.3f} ms "
                      f"({gcpu[m] / gcpu['open']:.2f}x), servers {scpu[m]:.3f} ms "
                      f"({scpu[m] / scpu['open']:.2f}x)  (C={bg.CONCURRENCY}, {bg.SECONDS:.0f}s x "
                      f"{ROUNDS} rounds, {len(bg.BODY)} B body)")
        finally:
            for proc, _ in gws.values():
                procs.reap(proc)
            for c in clusters.values():
                c.stop()


if __name__ == "__main__":
    main()
