"""`twinsite check HISTORY [--json] [--no-sidecar]`: the verdict of a recorded run.

Exit 0 when the history proves what it should (no anomaly), 1 when it shows anomalies, 3 when it
cannot tell (a final read failed, or the run was cut short: unknown, not lost), 2 when the file
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from .checker import ANOMALIES, UNKNOWN, anomalies, check
from .history import HistoryError, load_history

COUNTS = ("attempted", "acked", "failed", "indeterminate", "recovered", "lost", "unexpected",
          "failed_present", "duplicates", "order_violations", "delivery_missing",
          "delivery_unexpected", "unread_rooms", "malformed", "deliveries", "torn_lines")
EXIT = {True: 0, False: 1, UNKNOWN: 3}


def _headline(v: dict) -> str:
    if v["valid"] is True:
        return "verdict: VALID"
    why = ", ".join(anomalies(v))
    if v["valid"] == UNKNOWN:
        cut = "run cut short; " if v.get("cut_short") else ""
        return f"verdict: UNKNOWN: {cut}{v.get('unread_rooms', 0)} room(s) not read back"
    return f"verdict: INVALID: {why}"


def _room_lines(name: str, r: dict) -> str:
    return (f"  {name:<22} {r['rooms_stalled']:>4} of {r['rooms_written']:<5} stalled > 1 s   "
            f"max {r['room_unavailable_max_s']:.3f} s   p50 {r['room_unavailable_p50_s']:.3f} s")


def format_verdict(v: dict) -> str:
    lines = [_headline(v), ""]
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
    if "rooms_stalled" in v:
        lines.append("")
        lines.append("  write stalls per room")
        lines.append(_room_lines("all rooms", v))
        for site, r in (v.get("by_leader_site") or {}).items():
            lines.append(_room_lines(f"led by {site}", r))
    for name in ANOMALIES:
        ids = v.get({"duplicates": "duplicate_ids", "order_violations": "order_violation_ids",
                     "unread_rooms": "unread_room_ids"}.get(name, name + "_ids"))
        if v.get(name) and ids:
            lines.append(f"  first {name}: {', '.join(map(str, ids))}")
    if v.get("valid_by"):
        lines.append("  checkers not valid: " + ", ".join(f"{k}={v}" for k, v in v["valid_by"].items()))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="twinsite check",
                                description="check a history: lost, duplicated, reordered messages")
    p.add_argument("history", help="history file (JSON Lines) written by `twinsite traffic run`")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.add_argument("--no-sidecar", action="store_true",
                   help="parse the JSONL even when a matching .cols.npz sidecar exists")
    args = p.parse_args(argv)
    try:
        history = load_history(args.history, sidecar=not args.no_sidecar)
        verdict = check(history)
    except HistoryError as e:
        print(f"twinsite check: {e}", file=sys.stderr)
        return 2
    except (TypeError, AttributeError, ValueError) as e:  # wrongly typed fields in a JSON line
        print(f"twinsite check: {args.history}: not a twinsite history ({e})", file=sys.stderr)
        return 2
    print(json.dumps(verdict, indent=2) if args.json else format_verdict(verdict))
    return EXIT[verdict["valid"]]
