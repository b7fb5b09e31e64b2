"""Percentiles and latency summaries, shared by the checkers and the timeline."""

from __future__ import annotations

import math

import numpy as np


def percentile(sorted_values, p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    n = len(sorted_values)
    if not n:
        return 0.0
    k = max(0, min(n - 1, math.ceil(p / 100.0 * n) - 1))
    return float(sorted_values[k])


def stats(values_ms: np.ndarray) -> dict:
    """p50/p99/max (ms, rounded to µs) and count of a set of latencies."""
    v = np.sort(np.asarray(values_ms, dtype=np.float64))
    return {"p50_ms": round(percentile(v, 50), 3), "p99_ms": round(percentile(v, 99), 3),
            "max_ms": round(float(v[-1]), 3) if len(v) else 0.0, "count": int(len(v))}
