"""`make drill` wall time (issue 15: <= 3 min with every experiment on main) and where it goes.

Runs `twinsite drill` once as `make drill` does (lab up, every experiment of experiments/, report,
lab down) into a scratch reports folder and state dir, then prints the wall time of the whole
command against the goal and each experiment's own time from summary.json, with the load average
before and after (a 2-core machine: other work inflates every figure).
`python -m bench.bench_drill [EXPERIMENT ...]` runs only those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 180.0


def drill_time(experiments: list[str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reports, state = Path(tmp) / "reports", Path(tmp) / "lab"
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "twinsite.cli", "drill", *(experiments or []),
                            "--reports", str(reports), "--state-dir", str(state)],
                           cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - t0
        load1 = os.getloadavg()[0]
        summaries = sorted(reports.glob("*/summary.json"))
        if not summaries:
            print(f"drill wrote no summary (exit {r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}")
            return
        summary = json.loads(summaries[-1].read_text())
    exps = summary["experiments"]
    for x in exps:
        print(f"  {x['name']:<16} {x['status']:<8} {x['duration_s'] or 0:6.1f}s")
    inside = sum(x["duration_s"] or 0 for x in exps)
    passed = sum(x["status"] == "passed" for x in exps)
    print(f"drill ({len(exps)} experiments, {passed} passed, exit {r.returncode}; load average "
          f"{load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs): wall {wall:.0f}s "
          f"({wall // 60:.0f} min {wall % 60:02.0f} s; goal <= {GOAL_S:.0f} s), experiments "
          f"{inside:.0f}s, lab up/down + report {wall - inside:.0f}s")


def main() -> None:
    drill_time()


if __name__ == "__main__":
    drill_time(sys.argv[1:])
