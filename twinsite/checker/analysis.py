"""What every checker reads: the history in time order and the table of logical operations.

A pure function of a `History` (see `twinsite.columns`), vectorized with numpy. The definitions
are the checker's (see `twinsite.checker`); the tricks used to vectorize them:

- "open attempts of an id" is a running count that a completion without an open attempt does not
  decrement (it is malformed): a count reflected at zero, c_k = S_k - min(0, min_{j<=k} S_j) for the
  plain running sum S (Lindley's recursion), computed per id with one cumsum and one running min.
- running minima/maxima per group use one global accumulate over values shifted by a per-group
  offset larger than their range, so no group sees another's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..columns import INFO, INVOKE, OK, History, Table

NONE = -1  # "no such position / room / op" in int arrays


def time_order(t: Table) -> dict:
    """The table's columns (plus `time`) in time order, stable: equal times keep file order."""
    cols = {"time": t.time, **t.cols}
    tm = t.time
    if len(tm) < 2 or bool(np.all(tm[1:] >= tm[:-1])):
        return cols
    order = np.argsort(tm, kind="stable")
    return {k: v[order] for k, v in cols.items()}


def group_starts(keys: np.ndarray) -> np.ndarray:
    """True where a run of equal keys begins (keys sorted by group)."""
    if not len(keys):
        return np.zeros(0, dtype=bool)
    return np.r_[True, keys[1:] != keys[:-1]]


def segmented_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    cs = np.cumsum(x)
    idx = np.flatnonzero(starts)
    before = (cs - x)[idx]
    sizes = np.diff(np.r_[idx, len(x)])
    return cs - np.repeat(before, sizes)


def segmented_accumulate(ufunc, v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running min or max of `v` restarting at every group start (values are integers)."""
    if not len(v):
        return v
    span = int(v.max()) - int(v.min()) + 1
    gnum = np.cumsum(starts) - 1
    sign = -1 if ufunc is np.minimum else 1  # later groups lower for min, higher for max
    shifted = v + sign * gnum * span
    return ufunc.accumulate(shifted) - sign * gnum * span


@dataclass(frozen=True, eq=False)
class Sends:
    """Send events in time order, with which completions matched an open attempt."""
    time: np.ndarray
    kind: np.ndarray
    id: np.ndarray
    room: np.ndarray
    proc: np.ndarray
    seq: np.ndarray
    matched: np.ndarray    # a completion that closed an open attempt of its id
    unmatched: np.ndarray  # a completion with no open attempt (malformed)


@dataclass(frozen=True, eq=False)
class Ops:
    """One row per interned id (most are operations: `has_op`); NONE / NaN where not applicable."""
    has_op: np.ndarray
    first_inv: np.ndarray   # position (in Sends) of the first invoke
    t_inv: np.ndarray
    room: np.ndarray
    proc: np.ndarray
    outcome: np.ndarray     # 0 only fails, 1 some info, 2 acked
    first_ok: np.ndarray    # position of the first matched ok
    t_ok: np.ndarray
    seq_ok: np.ndarray      # seq of the first matched ok (NaN if none)
    order: np.ndarray       # op ids by first invoke


@dataclass(frozen=True, eq=False)
class Stored:
    """The final reads: every stored id of every read room, rooms in first-read order."""
    id: np.ndarray
    room: np.ndarray
    first: np.ndarray        # first occurrence of its id anywhere
    home_pos: np.ndarray     # per id: position of its first occurrence when in its own room
    stray_room: np.ndarray   # per id: room of its first occurrence when that is not its room
    read: np.ndarray         # per room: has an ok final read
    read_failed: np.ndarray  # per room: has a failed final read
    slices: dict             # room -> (start, stop) in id/room


@dataclass(frozen=True, eq=False)
class Analysis:
    h: History
    sends: Sends
    ops: Ops
    stored: Stored
    deliver: dict
    subscribe: dict
    marks: list


def _sends(h: History) -> Sends:
    c = time_order(h.send)
    kind, ids = c["kind"], c["id"]
    n = len(kind)
    x = np.where(kind == INVOKE, 1, -1).astype(np.int64)
    by_id = np.argsort(ids, kind="stable")
    gx = x[by_id]
    starts = group_starts(ids[by_id])
    s = segmented_cumsum(gx, starts)
    m = segmented_accumulate(np.minimum, s, starts)
    count = s - np.minimum(0, m)
    before = np.r_[0, count[:-1]] if n else count
    before[starts] = 0
    matched = np.zeros(n, dtype=bool)
    unmatched = np.zeros(n, dtype=bool)
    matched[by_id] = (gx == -1) & (before > 0)
    unmatched[by_id] = (gx == -1) & (before == 0)
    return Sends(c["time"], kind, ids, c["room"], c["proc"], c["seq"], matched, unmatched)


def _first_per_id(ids: np.ndarray, rows: np.ndarray, n_ids: int) -> np.ndarray:
    """Per id, the first of `rows` (positions, ascending) carrying it; NONE if none."""
    out = np.full(n_ids, NONE, dtype=np.int64)
    if len(rows):
        u, first = np.unique(ids[rows], return_index=True)
        out[u] = rows[first]
    return out


def _ops(s: Sends, n_ids: int) -> Ops:
    inv = np.flatnonzero(s.kind == INVOKE)
    first_inv = _first_per_id(s.id, inv, n_ids)
    has_op = first_inv != NONE
    fi = np.where(has_op, first_inv, 0)
    nan = np.full(n_ids, math.nan)
    t_inv = np.where(has_op, s.time[fi] if len(s.time) else nan, nan)
    room = np.where(has_op, s.room[fi] if len(s.room) else NONE, NONE)
    proc = np.where(has_op, s.proc[fi] if len(s.proc) else NONE, NONE)
    ok_rows = np.flatnonzero(s.matched & (s.kind == OK))
    info_rows = np.flatnonzero(s.matched & (s.kind == INFO))
    outcome = np.zeros(n_ids, dtype=np.int8)
    outcome[s.id[info_rows]] = 1
    outcome[s.id[ok_rows]] = 2
    first_ok = _first_per_id(s.id, ok_rows, n_ids)
    acked = first_ok != NONE
    fo = np.where(acked, first_ok, 0)
    t_ok = np.where(acked, s.time[fo] if len(s.time) else nan, nan)
    seq_ok = np.where(acked, s.seq[fo] if len(s.seq) else nan, nan)
    op_ids = np.flatnonzero(has_op)
    order = op_ids[np.argsort(first_inv[op_ids], kind="stable")]
    return Ops(has_op, first_inv, t_inv, room, proc, outcome, first_ok, t_ok, seq_ok, order)


def _stored(h: History, ops: Ops) -> Stored:
    c = time_order(h.final)
    n_ids, n_rooms = len(h.ids), len(h.rooms)
    ok = c["ok"].astype(bool)
    read = np.zeros(n_rooms, dtype=bool)
    read_failed = np.zeros(n_rooms, dtype=bool)
    read[c["room"][ok]] = True
    read_failed[c["room"][~ok]] = True
    rows = np.flatnonzero(ok)
    rooms = c["room"][rows]
    # rooms in the order of their first ok read; a room's reads concatenated in time order
    _, first = np.unique(rooms, return_index=True)
    rank = np.empty(n_rooms, dtype=np.int64)
    rank[rooms[np.sort(first)]] = np.arange(len(first))
    rows = rows[np.argsort(rank[rooms], kind="stable")] if len(rows) else rows
    parts, room_parts, slices, pos = [], [], {}, 0
    for r in rows:
        a, b = int(c["start"][r]), int(c["stop"][r])
        room = int(c["room"][r])
        parts.append(h.final_ids[a:b])
        room_parts.append(np.full(b - a, room, dtype=np.int64))
        lo, _ = slices.get(room, (pos, pos))
        pos += b - a
        slices[room] = (lo, pos)
    sid = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    sroom = np.concatenate(room_parts) if room_parts else np.zeros(0, dtype=np.int64)
    first_mask = np.zeros(len(sid), dtype=bool)
    if len(sid):
        _, fidx = np.unique(sid, return_index=True)
        first_mask[fidx] = True
    home_pos = np.full(n_ids, NONE, dtype=np.int64)
    stray_room = np.full(n_ids, NONE, dtype=np.int64)
    fpos = np.flatnonzero(first_mask)
    fid = sid[fpos]
    home = ops.has_op[fid] & (ops.room[fid] == sroom[fpos])
    home_pos[fid[home]] = fpos[home]
    stray_room[fid[~home]] = sroom[fpos[~home]]
    return Stored(sid, sroom, first_mask, home_pos, stray_room, read, read_failed, slices)


def analyse(h: History) -> Analysis:
    sends = _sends(h)
    ops = _ops(sends, len(h.ids))
    stored = _stored(h, ops)
    marks = sorted(h.marks, key=lambda e: (e["time"], e["line"]))
    return Analysis(h, sends, ops, stored, time_order(h.deliver), time_order(h.subscribe), marks)


def names(values, idx) -> list:
    """The history's values (ids, rooms) at interned indexes, as plain Python values."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(values, np.ndarray):
        return values[idx].tolist()
    return [values[k] for k in idx.tolist()]


def first_names(values, idx, limit: int) -> list:
    return names(values, np.asarray(idx, dtype=np.int64)[:limit])


def sorted_str_names(values, idx, limit: int) -> list[str]:
    """sorted(map(str, names))[:limit] without materialising more than needed for numpy names."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        return np.sort(values[idx])[:limit].tolist()
    return sorted(map(str, names(values, idx)))[:limit]

