"""`twinsite check HISTORY [--json]`: the verdict of a recorded run.

Exit 0 when the history proves what it should (no anomaly), 1 when it shows anomalies,
2 when the file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from .checker import ANOMALIES, anomalies, check
from .history import HistoryError, read_history

COUNTS = ("attempted", "acked", "failed", "indeterminate", "recovered", "lost", "unexpected",
          "failed_present", "duplicates", "order_violations", "delivery_missing",
          "delivery_unexpected", "unread_rooms", "malformed", "deliveries")


def format_verdict(v: dict) -> str:
    lines = [f"verdict: {'VALID' if v['valid'] else 'INVALID: ' + ', '.join(anomalies(v))}", ""]
    for name in COUNTS:
        mark = "  <-- anomaly" if name in ANOMALIES and v.get(name) else ""
        lines.append(f"  {name:<22} {v.get(name, 0):>10}{mark}")
    lines.append(f"  {'max_unavailable_s':<22} {v['max_unavailable_s']:>10.3f}")
    lines.append(f"  {'delivery_lag_p99_ms':<22} {v['delivery_lag_p99_ms']:>10.1f}")
    lines.append("")
    lines.append(f"  {'latency (ms)':<22} {'p50':>10} {'p99':>10} {'max':>10} {'count':>8}")
    for label, s in (("overall", {"p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"], "max_ms": v["max_ms"],
                                  "count": v["acked"]}),
                     ("before fault", v["latency_before"]), ("during fault", v["latency_during"]),
                     ("after fault", v["latency_after"])):
        lines.append(f"  {label:<22} {s['p50_ms']:>10.1f} {s['p99_ms']:>10.1f} {s['max_ms']:>10.1f} "
                     f"{s['count']:>8}")
    for name in ANOMALIES:
        ids = v.get({"duplicates": "duplicate_ids", "order_violations": "order_violation_ids",
                     "unread_rooms": "unread_room_ids"}.get(name, name + "_ids"))
        if v.get(name) and ids:
            lines.append(f"  first {name}: {', '.join(map(str, ids))}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="twinsite check",
                                description="check a history: lost, duplicated, reordered messages")
    p.add_argument("history", help="history file (JSON Lines) written by `twinsite traffic run`")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    args = p.parse_args(argv)
    try:
        events = read_history(args.history)
    except HistoryError as e:
        print(f"twinsite check: {e}", file=sys.stderr)
        return 2
    try:
        verdict = check(events)
    except (TypeError, AttributeError, ValueError) as e:  # wrongly typed fields in a JSON line
        print(f"twinsite check: {args.history}: not a twinsite history ({e})", file=sys.stderr)
        return 2
    print(json.dumps(verdict, indent=2) if args.json else format_verdict(verdict))
    return 0 if verdict["valid"] else 1
