"""`make fuzz` / `python -m fuzz [--minutes M] [--seed N]`: a long schemathesis run.

Starts what the test suite starts — a real 7-server JetStream cluster of the lab topology and one
real `twinsite talk serve` gateway, no lab fabric — and fuzzes the gateway for M minutes
(default $FUZZ_MINUTES or 10) with a random seed (printed, so a failure can be replayed with
--seed). Output in reports/fuzz-<time>/; exit 0 only with 0 failures and 0 errors.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from twinsite import procs, topology
from twinsite.natscluster import LocalNatsCluster
from twinsite.talk import auth

from . import api


@contextmanager
def gateway(work: Path, site: str = "pangyo"):
    """(base URL, API token) of a gateway on a fresh lab-topology cluster; everything is reaped
    on exit."""
    cluster = LocalNatsCluster(topology.load_stack("lab", root=api.ROOT), work / "nats")
    proc = None
    try:
        cluster.start(timeout=60)
        own = cluster.client_urls(site)
        urls = own + [u for u in cluster.client_urls() if u not in own]
        port = procs.free_port()
        base = f"http://127.0.0.1:{port}"
        token_file = auth.write(work / "talk-token")
        proc = procs.spawn([sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site", site,
                            "--nats", ",".join(urls), "--listen", f"127.0.0.1:{port}",
                            "--stack", "lab", "--token-file", str(token_file)],
                           log=work / "gateway.log", cwd=api.ROOT)

        def ready() -> bool:
            if proc.poll() is not None:
                raise procs.ChildExited(f"gateway exited {proc.returncode}: see "
                                        f"{work / 'gateway.log'}")
            return procs.http_status(base + "/readyz") == 200

        procs.wait_until(ready, 60, interval=0.1, what="gateway ready")
        yield base, auth.read_token(token_file)
    finally:
        if proc is not None:
            procs.reap(proc)
        cluster.stop()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=float(os.environ.get("FUZZ_MINUTES") or 10))
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--max-examples", type=int, default=100,
                   help="examples per operation and round (rounds repeat until the time is up)")
    p.add_argument("--out", default=None, help="default: reports/fuzz-<time>")
    args = p.parse_args(argv)
    if args.minutes <= 0:
        print("python -m fuzz: --minutes must be > 0", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else api.ROOT / "reports" / f"fuzz-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"fuzz: {args.minutes:g} min, seed {seed}, output {out}", flush=True)
    with gateway(out) as (base, token):
        outcome = api.run(base, out, token=token, seed=seed, max_examples=args.max_examples,
                          max_time_s=max(1, round(args.minutes * 60)), echo=True,
                          timeout_s=args.minutes * 60 + 600)
    print(f"\nfuzz: {'PASSED' if outcome.ok else 'FAILED'} — {outcome.line()}; "
          f"report {out / 'schemathesis.json'}", flush=True)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
