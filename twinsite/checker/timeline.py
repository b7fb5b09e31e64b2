"""Per-bucket series of a history for the report's plots (event dicts; drill-sized histories)."""

from __future__ import annotations

import math
from typing import Iterable

from .stats import percentile


def in_time_order(events: Iterable[dict]) -> list[dict]:
    """The events sorted by time, stably (an invoke and its completion at one time keep file order)."""
    evs = events if isinstance(events, list) else list(events)
    prev = -math.inf
    for e in evs:
        t = e.get("time", 0.0)
        if t < prev:
            return sorted(evs, key=lambda e: e.get("time", 0.0))
        prev = t
    return evs


def timeline(events: Iterable[dict], bucket_s: float = 1.0) -> list[dict]:
    """Per-bucket series for plots: {"t", "invoked", "acked", "errors", "p99_ms"}.

    `acked` counts logical acks (first ok of an id) in the bucket, `errors` fail/info attempts,
    `p99_ms` the p99 latency (first invoke -> first ok) of the ids acked in the bucket.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be > 0")
    first_invoke: dict = {}
    acked: set = set()
    buckets: dict[int, dict] = {}
    last = -1

    def bucket(t: float) -> dict:
        nonlocal last
        b = int(t // bucket_s) if t > 0 else 0
        last = max(last, b)
        d = buckets.get(b)
        if d is None:
            buckets[b] = d = {"invoked": 0, "acked": 0, "errors": 0, "lat": []}
        return d

    for e in in_time_order(events):
        if e.get("f") != "send":
            continue
        t = e.get("time", 0.0)
        typ = e.get("type")
        i = e.get("id")
        if typ == "invoke":
            if i not in first_invoke:
                first_invoke[i] = t
                bucket(t)["invoked"] += 1
        elif typ == "ok":
            if i not in acked:
                acked.add(i)
                d = bucket(t)
                d["acked"] += 1
                d["lat"].append((t - first_invoke.get(i, t)) * 1000.0)
        elif typ in ("fail", "info"):
            bucket(t)["errors"] += 1
    out = []
    for b in range(last + 1):
        d = buckets.get(b) or {"invoked": 0, "acked": 0, "errors": 0, "lat": []}
        lat = sorted(d["lat"])
        out.append({"t": round(b * bucket_s, 6), "invoked": d["invoked"], "acked": d["acked"],
                    "errors": d["errors"], "p99_ms": round(percentile(lat, 99), 3)})
    return out
