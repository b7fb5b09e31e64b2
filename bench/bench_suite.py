"""`make test` wall time (issue 15: <= 5 min on this machine from a warm venv, the sandbox's
one-time tool build aside) and its slowest ten tests.

Runs the suite as `make test` does (`pytest -q`, serial) in a subprocess with `--durations=10`,
then prints the wall time against the goal, the pass/fail line and the ten slowest test phases,
with the load average before and after. `python -m bench.bench_suite [PYTEST ARGS]` passes
arguments on (e.g. a subset of files).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 300.0


def suite_time(extra: list[str] | None = None) -> None:
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--durations=10", *(extra or [])], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    out = r.stdout.splitlines()
    slow = [ln for ln in out if re.match(r"^\d+\.\d+s (call|setup|teardown) ", ln)]
    result = next((ln for ln in reversed(out) if re.search(r"\d+ (passed|failed)", ln)), "?")
    for ln in slow:
        print(f"  {ln}")
    for ln in out:
        if ln.startswith(("FAILED", "ERROR")):
            print(f"  {ln}")
    print(f"make test ({result.strip('= ')}; load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs): wall {wall:.0f}s "
          f"({wall // 60:.0f} min {wall % 60:02.0f} s; goal <= {GOAL_S:.0f} s)")


def main() -> None:
    suite_time()


if __name__ == "__main__":
    suite_time(sys.argv[1:])
