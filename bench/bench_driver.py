"""Traffic driver: achieved vs requested rate against real gateways (2 per primary site), judged
by the checker. By default on a lab of its own (`twinsite.lab.up`, link fabric included);
TWINSITE_BENCH_DIRECT=1 uses a bare cluster + gateways without the fabric. Reports the highest
rate sustained with < 1 % failed+indeterminate operations and >= 99 % of the requested rate sent."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from twinsite import procs, topology
from twinsite.checker import check
from twinsite.history import HistoryWriter, read_history
from twinsite.natscluster import LocalNatsCluster
from twinsite.talk import auth
from twinsite.workload import DriverConfig, TrafficDriver

ROOT = Path(__file__).resolve().parent.parent
RATES = [int(r) for r in os.environ.get("TWINSITE_BENCH_RATES", "100,200,400,800,1200").split(",")]
DURATION_S = float(os.environ.get("TWINSITE_BENCH_DURATION", "6"))


def _http_ok(url: str) -> bool:
    import urllib.request
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


def _own_lab(base: Path):
    """A cluster and two gateways per primary site, started here (reaped by the caller)."""
    topo = topology.load_stack("lab", root=ROOT)
    cluster = LocalNatsCluster(topo, base / "nats")
    cluster.start(timeout=60)
    gateways, endpoints = [], {}
    token_file = auth.write(base / "talk-token")
    for site in topo.primary_sites:
        own = cluster.client_urls(site.name)
        urls = own + [u for u in cluster.client_urls() if u not in own]
        for _ in site.gateway_zones:
            port = procs.free_port()
            proc = procs.spawn([sys.executable, "-m", "twinsite.cli", "talk", "serve",
                                "--site", site.name, "--nats", ",".join(urls),
                                "--listen", f"127.0.0.1:{port}", "--stack", "lab",
                                "--token-file", str(token_file)],
                               log=base / f"gw-{port}.log", cwd=ROOT)
            gateways.append(proc)
            endpoints.setdefault(site.name, []).append(f"http://127.0.0.1:{port}")
    for urls in endpoints.values():
        for u in urls:
            procs.wait_until(lambda u=u: _http_ok(u + "/readyz"), 60, what=f"gateway {u}")
    return cluster, gateways, endpoints, auth.read_token(token_file)


def run_rate(endpoints, rate: float, base: Path, token: str) -> dict:
    path = base / f"h-{int(rate)}.jsonl"
    cfg = DriverConfig(endpoints=endpoints, rate=rate, rooms=16, subscribers=2, settle_s=0.5,
                       max_in_flight=512, token=token)
    h = HistoryWriter(path)
    driver = TrafficDriver(cfg, h)
    asyncio.run(driver.run(DURATION_S))
    h.close()
    v = check(read_history(path))
    st = driver.stats
    bad = v["failed"] + v["indeterminate"]
    return {"rate": rate, "achieved": st.achieved_rate, "sent": st.sent, "overload": st.overload,
            "bad_pct": 100.0 * bad / max(1, v["attempted"]), "p50": v["p50_ms"], "p99": v["p99_ms"],
            "lag": st.max_schedule_lag_ms, "valid": v["valid"]}


def main() -> None:
    cluster = gateways = lab_dir = None
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as d:
        base = Path(d)
        try:
            if not os.environ.get("TWINSITE_BENCH_DIRECT"):
                import twinsite.lab as lab
                from twinsite.workload import endpoints_from_lab, token_from_lab
                lab_dir = str(base / "lab")
                lab.up(state_dir=lab_dir, die_with_parent=True, timeout=120)
                endpoints, token = endpoints_from_lab(lab_dir), token_from_lab(lab_dir)
                where = ("a lab of its own (twinsite.lab.up: 7 nats-servers, 4 gateways, "
                         "link fabric)")
            else:
                cluster, gateways, endpoints, token = _own_lab(base)
                where = "own cluster (7 nats-servers), 2 gateways per primary site, no link fabric"
            print(f"driver bench against {where}; {DURATION_S:g} s per rate; {os.cpu_count()} cores")
            print(f"{'requested/s':>11} {'achieved/s':>10} {'ratio':>6} {'overload':>8} "
                  f"{'fail+info%':>10} {'p50 ms':>8} {'p99 ms':>8} {'sched lag ms':>12} valid")
            best = 0
            for rate in RATES:
                r = run_rate(endpoints, rate, base, token)
                ratio = r["achieved"] / rate
                print(f"{rate:>11} {r['achieved']:>10.1f} {ratio:>6.2f} {r['overload']:>8} "
                      f"{r['bad_pct']:>10.2f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['lag']:>12.1f} "
                      f"{r['valid']}", flush=True)
                if r["bad_pct"] < 1.0 and ratio >= 0.99 and r["valid"]:
                    best = rate
                time.sleep(1)  # let the gateways drain between steps
            print(f"highest rate sustained with < 1% fail: {best} msg/s")
        finally:
            if lab_dir:
                import twinsite.lab as lab
                lab.down(state_dir=lab_dir)
            for g in gateways or []:
                procs.reap(g)
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    main()
