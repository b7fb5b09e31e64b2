"""Sandbox benchmarks: `twinsite sandbox up` time for the lab stack (goal <= 20 s, tools built)
and the resident memory of its three control planes (goal <= 3 GiB RSS in all).

Each run starts a fresh sandbox (new etcd data, new certificates), times `up` until every API
server answers and every node is Ready, then sums VmRSS of every recorded child (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok per site) after a settle wait, and
stops it. Skipped (one line) when the tools are not built: `make sandbox-tools`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

RUNS = 3
SETTLE_S = 10.0  # RSS once the controllers' first sync is over


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def one_run(stack: str) -> tuple[float, dict[str, int], dict]:
    from twinsite.sandbox import client

    d = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    t0 = time.monotonic()
    st = client.up(stack, d, die_with_parent=True)
    took = time.monotonic() - t0
    try:
        time.sleep(SETTLE_S)  # a measurement window, not a wait for a condition
        by_component: dict[str, int] = {}
        for key, rec in st["children"].items():
            comp = key.split("/", 1)[1]
            by_component[comp] = by_component.get(comp, 0) + rss_kib(rec["pid"])
        return took, by_component, st.get("phases") or {}
    finally:
        client.down(d)


def main() -> None:
    from twinsite.sandbox import tools

    if tools.locate() is None:
        print("sandbox: skipped (tools not built: `make sandbox-tools`)")
        return
    times, totals = [], []
    for i in range(RUNS):
        took, comp, phases = one_run("lab")
        total = sum(comp.values())
        times.append(took)
        totals.append(total)
        parts = ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(comp.items()))
        steps = ", ".join(f"{k} at {v}s" for k, v in phases.items())
        print(f"run {i + 1}: sandbox up {took:.1f}s ({steps}); RSS {total / 2**20:.2f} GiB "
              f"({parts} MiB)", flush=True)
    print(f"sandbox up (lab, 3 control planes, 21 nodes): median {statistics.median(times):.1f}s "
          f"(goal <= 20 s), max {max(times):.1f}s")
    print(f"RSS of 3 control planes: median {statistics.median(totals) / 2**20:.2f} GiB "
          f"(goal <= 3 GiB)")


if __name__ == "__main__":
    main()
