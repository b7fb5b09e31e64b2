"""One shard's sustained acknowledged msgs/s: the number behind `messaging.streamCapacityMsgsPerS`.

One R3 stream, one replica per site, `fsync: always`, leader in pangyo, through the supervisor's
fabric with the lab stack's modelled distances (0.5 ms intra-site, 2-5 ms inter-site) — the same
cluster host as bench_lab's "shaped" mode. nats-py publishers, each waiting for its ack, at
several in-flight levels, fixed windows; the sustained number is the median window at the best
level. An ack waits for fsync on the leader and a round trip to another site, so concurrency, not
the link, sets the rate until the machine's CPU (2 cores, shared) stops it.

The stack's capacity is this number derated by the gateway's rule (the HPA's 70 % target), on
*this* machine; replace it with the same bench on your own hardware.

Scaling (issue 13 item 6): acked msgs/s through one gateway and direct JetStream for 1, 2, 4 and 8
shards (64 rooms, C=64, direct routes as bench_gateway): where the curve flattens is where this
2-core machine (7 servers, the gateway and the load generator on it), not the design, stops it.
"""

from __future__ import annotations

import statistics
import tempfile

from . import bench_lab

LEVELS = (32, 128, 256)
HEADROOM = 0.7  # the gateway's HPA target: size for 70 % of what was measured


def measure(rounds: int = 3, seconds: float = 5.0, size: int = 200) -> dict[int, list[float]]:
    import uvloop

    out: dict[int, list[float]] = {}
    saved = bench_lab.MODES
    bench_lab.MODES = ("shaped",)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            hosts = {}
            try:
                hosts = bench_lab._start_hosts(tmp)
                for level in LEVELS:
                    out[level] = uvloop.run(bench_lab._publish_rounds(
                        hosts, rounds, seconds, level, size))["shaped"]
            finally:
                bench_lab._stop_hosts(hosts)
    finally:
        bench_lab.MODES = saved
    return out


def scaling(levels=(1, 2, 4, 8), seconds: float = 5.0, concurrency: int = 64) -> dict:
    import dataclasses
    import os
    import sys
    import time
    from pathlib import Path

    import uvloop

    from twinsite import procs, topology
    from twinsite.k8s.stackconf import PROJECT_FILE, stack_file
    from twinsite.natscluster import LocalNatsCluster
    from twinsite.talk import auth
    from twinsite.talk.backend import Settings

    from . import bench_gateway as bg

    bg.SECONDS, bg.CONCURRENCY, bg.ROOMS = seconds, concurrency, 64
    topo = topology.load_stack("lab")
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as d:
        cluster = LocalNatsCluster(topo, Path(d) / "nats")
        try:
            cluster.start(timeout=60)
            urls = cluster.client_urls("pangyo") + [u for u in cluster.client_urls()
                                                    if u not in cluster.client_urls("pangyo")]
            token_file = auth.write(Path(d) / "talk-token")
            token = auth.read_token(token_file)
            for n in levels:
                t = dataclasses.replace(topo, stack=f"bench{n}", messaging=dataclasses.replace(
                    topo.messaging, stream_shards=n))
                sd = Path(d) / f"stack{n}"
                sd.mkdir()
                (sd / "Pulumi.yaml").write_text(PROJECT_FILE)
                (sd / f"Pulumi.bench{n}.yaml").write_text(stack_file(t))
                port = procs.free_port()
                base = f"http://127.0.0.1:{port}"
                gw = procs.spawn([sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site",
                                  "pangyo", "--nats", ",".join(urls), "--listen",
                                  f"127.0.0.1:{port}", "--stack", f"bench{n}",
                                  "--token-file", str(token_file)],
                                 log=sd / "gateway.log", cwd=sd,
                                 env={**os.environ, "PYTHONPATH": str(bench_lab.ROOT)})
                try:
                    procs.wait_until(lambda: bg._ready(base), 60, what="gateway ready")
                    bg.SETTINGS = Settings.from_topology(t, "pangyo", ())
                    tag = f"s{n}-{int(time.time())}"
                    direct = uvloop.run(bg.bench_direct(urls, tag + "d"))[0] / seconds
                    gateway = uvloop.run(bg.bench_gateway(base, tag + "g", token))[0]
                    gateway /= seconds
                finally:
                    procs.reap(gw)
                out[n] = (gateway, direct)
                print(f"  {n} shard(s): gateway {gateway:.0f}, direct {direct:.0f} acked msgs/s, "
                      f"gateway/direct {gateway / direct if direct else float('nan'):.2f}",
                      flush=True)
        finally:
            cluster.stop()
    return out


def main() -> None:
    print("scaling over shards (C=64, 64 rooms, 200 B, direct routes, one gateway):")
    scaling()
    rates = measure()
    for level, r in rates.items():
        print(f"  {level:4d} in flight: {', '.join(f'{x:.0f}' for x in r)} msgs/s "
              f"(median {statistics.median(r):.0f})")
    best = max(rates, key=lambda k: statistics.median(rates[k]))
    sustained = statistics.median(rates[best])
    print(f"one shard sustained (R3, fsync always, lab distances, best at {best} in flight): "
          f"{sustained:.0f} acked msgs/s; x{HEADROOM} headroom -> streamCapacityMsgsPerS "
          f"{int(sustained * HEADROOM // 100 * 100)}")


if __name__ == "__main__":
    main()
