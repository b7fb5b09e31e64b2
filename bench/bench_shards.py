"""One shard's sustained acknowledged msgs/s: the number behind `messaging.streamCapacityMsgsPerS`.

One R3 stream, one replica per site, `fsync: always`, leader in pangyo, through the supervisor's
fabric with the lab stack's modelled distances (0.5 ms intra-site, 2-5 ms inter-site) — the same
cluster host as bench_lab's "shaped" mode. nats-py publishers, each waiting for its ack, at
several in-flight levels, fixed windows; the sustained number is the median window at the best
level. An ack waits for fsync on the leader and a round trip to another site, so concurrency, not
the link, sets the rate until the machine's CPU (2 cores, shared) stops it.

The stack's capacity is this number derated by the gateway's rule (the HPA's 70 % target), on
*this* machine; replace it with the same bench on your own hardware.
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


def main() -> None:
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
