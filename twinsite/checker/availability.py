"""Write unavailability: the longest span during which writes were wanted and none succeeded.

A span opens at an invoke while none is open (or at an ok that leaves other attempts of the same
scope outstanding) and is closed only by an ok; fail/info do not close it. A span still open at the
end is closed at the scope's last send event (run edges count). The scope is the whole run for
`max_unavailable_s` and one room for the per-room figures: the same definition, grouped.
"""

from __future__ import annotations

import numpy as np

from ..columns import INVOKE, OK
from .analysis import Analysis, group_starts, segmented_cumsum


def unavailable_by_group(a: Analysis, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group (ints in [0, n_groups)), the longest unavailable span in seconds (0.0 if none)."""
    s = a.sends
    out = np.zeros(n_groups)
    n = len(s.kind)
    if not n:
        return out
    order = np.argsort(group, kind="stable")  # by group, time order within
    g, t, kind, matched = group[order], s.time[order], s.kind[order], s.matched[order]
    starts = group_starts(g)
    inv = kind == INVOKE
    open_after = segmented_cumsum(inv.astype(np.int64) - matched.astype(np.int64), starts)
    ok = matched & (kind == OK)
    closes = ok & (open_after == 0)            # an ok that leaves nothing open: no span after it
    boundary = starts.copy()
    boundary[1:] |= closes[:-1]
    inv_rows = np.flatnonzero(inv)
    opening = np.zeros(n, dtype=bool)
    if len(inv_rows):                          # the first invoke after each boundary opens a span
        opening[inv_rows[group_starts(np.cumsum(boundary)[inv_rows])]] = True
    setters = np.flatnonzero(ok | opening)     # the events that set the span's start
    ok_rows = np.flatnonzero(ok)
    if len(ok_rows):  # ok rows ascend, so their groups come in runs: one reduceat per run
        prev = setters[np.searchsorted(setters, ok_rows) - 1]
        gk = g[ok_rows]
        runs = np.flatnonzero(group_starts(gk))
        out[gk[runs]] = np.maximum.reduceat(t[ok_rows] - t[prev], runs)
    if len(setters):                           # spans open at the end: closed at the last send
        gs = g[setters]
        last_setter = setters[np.r_[gs[1:] != gs[:-1], True]]
        group_end = np.r_[np.flatnonzero(starts)[1:] - 1, n - 1]
        end_time = np.full(n_groups, np.nan)
        end_time[g[group_end]] = t[group_end]
        still_open = last_setter[~closes[last_setter]]
        go = g[still_open]  # one per group
        out[go] = np.maximum(out[go], end_time[go] - t[still_open])
    return out


def op_room_of_sends(a: Analysis) -> np.ndarray:
    """Each send event's room as its operation's room (the first invoke's), else its own field."""
    ids = a.sends.id
    return np.where(a.ops.has_op[ids], a.ops.room[ids], a.sends.room)
