"""The small checkers. Each is a pure function of the analysed history returning its own map,
with `valid` True, False or "unknown"; `twinsite.checker.compose` merges them into the verdict."""

from __future__ import annotations

import math

import numpy as np

from ..columns import OTHER
from ..history import leader_sites
from .analysis import (NONE, Analysis, first_names, group_starts, names, segmented_accumulate,
                       sorted_str_names)
from .availability import op_room_of_sends, unavailable_by_group
from .stats import percentile, stats

MAX_IDS = 10  # offending ids listed per anomaly
STALL_S = 1.0  # a room whose writes stalled longer than this counts in rooms_stalled
UNKNOWN = "unknown"


def cut_short(a: Analysis) -> bool:
    """The run was interrupted: a torn last line, or writes but not a single final-read line."""
    return a.h.torn_lines > 0 or (bool(a.ops.has_op.any()) and len(a.h.final) == 0)


def operations(a: Analysis) -> dict:
    ops = a.ops
    o = ops.outcome[ops.has_op]
    indeterminate = np.flatnonzero(ops.has_op & (ops.outcome == 1))
    return {"valid": True, "attempted": int(ops.has_op.sum()),
            "attempts": int((a.sends.kind == 0).sum()), "acked": int((o == 2).sum()),
            "failed": int((o == 0).sum()), "indeterminate": len(indeterminate),
            "indeterminate_ids": sorted_str_names(a.h.ids, indeterminate, MAX_IDS)}


def wellformed(a: Analysis) -> dict:
    """Completions without an open attempt, odd completion types, events of no known kind."""
    s = a.sends
    unmatched = np.flatnonzero(s.unmatched)
    odd = int((s.matched & (s.kind == OTHER)).sum())
    malformed = len(unmatched) + odd + a.h.unknown
    return {"valid": not malformed, "malformed": malformed,
            "malformed_ids": names(a.h.ids, s.id[unmatched[:MAX_IDS]]),
            "torn_lines": a.h.torn_lines, "cut_short": cut_short(a),
            "duration_s": round(a.h.time_max - a.h.time_min, 3) if a.h.n_events else 0.0}


def durability(a: Analysis) -> dict:
    """The final read against the operations: lost, unexpected, duplicated, failed yet present."""
    ops, st, h = a.ops, a.stored, a.h
    first = np.flatnonzero(st.first)
    fid = st.id[first]
    home = ops.has_op[fid] & (ops.room[fid] == st.room[first])
    stray = fid[~home]
    o = ops.outcome[fid]
    recovered = fid[home & (o == 1)]
    failed_present = fid[home & (o == 0)]
    repeats = np.flatnonzero(~st.first)
    dup_ids = np.zeros(0, dtype=np.int64)
    if len(repeats):
        u, second = np.unique(st.id[repeats], return_index=True)
        dup_ids = u[np.argsort(second, kind="stable")]
    sent_rooms = np.zeros(len(h.rooms), dtype=bool)
    sent_rooms[ops.room[ops.has_op]] = True
    unread = np.flatnonzero(sent_rooms & ~st.read)
    op_ids = ops.order
    acked = op_ids[ops.first_ok[op_ids] != NONE]
    lost = acked[(st.home_pos[acked] == NONE) & ~np.isin(ops.room[acked], unread)]
    anomalous = len(lost) or len(stray) or len(failed_present) or len(dup_ids)
    if anomalous:
        valid = False
    elif len(unread):  # unknown when every unread room is explained by a failed read or a cut
        valid = UNKNOWN if cut_short(a) or bool(st.read_failed[unread].all()) else False
    else:
        valid = True
    return {"valid": valid, "lost": len(lost), "recovered": len(recovered), "unexpected": len(stray),
            "failed_present": len(failed_present), "duplicates": len(dup_ids),
            "unread_rooms": len(unread), "rooms": int((sent_rooms | st.read).sum()),
            "rooms_read": int(st.read.sum()),
            "lost_ids": first_names(h.ids, lost, MAX_IDS),
            "unexpected_ids": first_names(h.ids, stray, MAX_IDS),
            "failed_present_ids": first_names(h.ids, failed_present, MAX_IDS),
            "duplicate_ids": first_names(h.ids, dup_ids, MAX_IDS),
            "unread_room_ids": sorted_str_names(h.rooms, unread, MAX_IDS),
            "recovered_ids": first_names(h.ids, recovered, MAX_IDS)}


def _segmented_max(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Running max of `values` per run of equal `keys` (sorted by key; integer values)."""
    return segmented_accumulate(np.maximum, values, group_starts(keys))


def order(a: Analysis) -> dict:
    """Per room and process: B first invoked after A was acked must be stored after A."""
    ops, st = a.ops, a.stored
    op_ids = ops.order
    acked = op_ids[ops.first_ok[op_ids] != NONE]
    ev_id = np.r_[op_ids, acked]
    ev_pos = np.r_[ops.first_inv[op_ids], ops.first_ok[acked]]
    is_ack = np.r_[np.zeros(len(op_ids), dtype=bool), np.ones(len(acked), dtype=bool)]
    key = ops.room[ev_id] * (len(a.h.procs) + 1) + ops.proc[ev_id]
    o = np.argsort(key * (len(a.sends.kind) + 1) + ev_pos, kind="stable")  # by key, then time
    ev_id, is_ack, key = ev_id[o], is_ack[o], key[o]
    pos = st.home_pos[ev_id]
    prefix = _segmented_max(np.where(is_ack, pos, NONE), key)
    bad = ev_id[~is_ack & (pos != NONE) & (prefix > pos)]
    bad = bad[np.argsort(ops.first_inv[bad], kind="stable")]
    return {"valid": not len(bad), "order_violations": len(bad),
            "order_violation_ids": first_names(a.h.ids, bad, MAX_IDS)}


def delivery(a: Analysis) -> dict:
    """Subscribers saw every stored message they should, and nothing that was not stored."""
    ops, st, d, h = a.ops, a.stored, a.deliver, a.h
    did, droom, dproc, dseq = d["id"], d["room"], d["proc"], d["seq"]
    n_rooms = len(h.rooms)
    here = ((st.home_pos[did] != NONE) & (ops.room[did] == droom)) | (st.stray_room[did] == droom)
    unexpected = np.flatnonzero(st.read[droom] & ~here)
    acked = ops.first_ok[did] != NONE
    lags = np.sort(np.maximum(0.0, (d["time"][acked] - ops.t_ok[did[acked]]) * 1000.0))
    # a message's seq: its first ok's, else the last one a subscriber saw
    seq_of = np.full(len(h.ids), math.nan)
    rows = np.flatnonzero(~np.isnan(dseq))[::-1]
    if len(rows):
        u, last = np.unique(did[rows], return_index=True)
        seq_of[u] = dseq[rows[last]]
    seq = np.where(np.isnan(ops.seq_ok), seq_of, ops.seq_ok)
    dkey = dproc * n_rooms + droom
    sub = a.subscribe
    skey = sub["proc"] * n_rooms + sub["room"]
    after = {}
    if len(skey):
        u, firsts = np.unique(skey, return_index=True)
        after = dict(zip(u.tolist(), sub["seq"][firsts].tolist()))
    o = np.argsort(dkey, kind="stable")
    dk, dids = dkey[o], did[o]
    pairs, starts = np.unique(dk, return_index=True)
    got = dict(zip(pairs.tolist(), np.split(dids, starts[1:]) if len(dk) else []))
    subscribers = set(after) | set(got)
    missing = np.zeros(len(h.ids), dtype=bool)
    for k in subscribers:
        span = st.slices.get(k % n_rooms)
        if not span or span[0] == span[1]:
            continue
        ids = st.id[span[0]:span[1]]
        s = seq[ids]
        want = np.isnan(s) | (s > after.get(k, 0))
        g = got.get(k)
        if g is not None:
            want &= ~np.isin(ids, g)
        missing[ids[want]] = True
    missing_ids = first_names(h.ids, st.id[missing[st.id]], MAX_IDS) if missing.any() else []
    return {"valid": not (missing.any() or len(unexpected)), "delivery_missing": int(missing.sum()),
            "delivery_unexpected": len(unexpected), "deliveries": len(did),
            "delivery_lag_p99_ms": round(percentile(lags, 99), 3), "subscribers": len(subscribers),
            "delivery_missing_ids": missing_ids,
            "delivery_unexpected_ids": names(h.ids, did[unexpected[:MAX_IDS]])}


def availability(a: Analysis) -> dict:
    s = a.sends
    worst = unavailable_by_group(a, np.zeros(len(s.kind), dtype=np.int64), 1)[0]
    return {"valid": True, "max_unavailable_s": round(float(worst), 3)}


def fault_windows(marks: list[dict]) -> list[tuple[float, float]]:
    """Intervals during which at least one fault is active (a fault with no stop lasts forever)."""
    active: dict = {}
    windows: list[tuple[float, float]] = []
    opened = None
    for e in marks:
        if e.get("type") != "fault":
            continue
        name, t = e.get("name"), e["time"]
        if e.get("f") == "start":
            if not active:
                opened = t
            active[name] = active.get(name, 0) + 1
        elif e.get("f") == "stop" and active.get(name):
            active[name] -= 1
            if not active[name]:
                del active[name]
            if not active:
                windows.append((opened, t))
    if active:
        windows.append((opened, math.inf))
    return windows


def latency(a: Analysis) -> dict:
    """First invoke -> first ok per acked id, split by when the id was first invoked."""
    ops = a.ops
    acked = np.flatnonzero(ops.first_ok != NONE)
    t_inv = ops.t_inv[acked]
    ms = (ops.t_ok[acked] - t_inv) * 1000.0
    windows = fault_windows(a.marks)
    before = np.ones(len(ms), dtype=bool)
    during = np.zeros(len(ms), dtype=bool)
    if windows:
        starts = np.array([w[0] for w in windows])
        ends = np.array([w[1] for w in windows])
        before = t_inv < starts[0]
        w = np.searchsorted(starts, t_inv, side="right") - 1
        during = ~before & (t_inv <= ends[np.maximum(w, 0)])
    overall, lat_during = stats(ms), stats(ms[during])
    return {"valid": True, "p50_ms": overall["p50_ms"], "p99_ms": overall["p99_ms"],
            "max_ms": overall["max_ms"], "latency_before": stats(ms[before]),
            "latency_during": lat_during, "latency_after": stats(ms[~before & ~during]),
            "p99_during_ms": lat_during["p99_ms"],
            "faults": [{"start": s, "stop": None if e == math.inf else e} for s, e in windows]}


def _room_figures(worst: np.ndarray, rooms: np.ndarray, room_names) -> dict:
    w = np.sort(worst)
    stalled = rooms[worst > STALL_S]
    return {"rooms_written": len(rooms), "rooms_stalled": len(stalled),
            "room_unavailable_max_s": round(float(w[-1]), 3) if len(w) else 0.0,
            "room_unavailable_p50_s": round(percentile(w, 50), 3),
            "rooms_stalled_ids": sorted_str_names(room_names, stalled, MAX_IDS)}


def rooms(a: Analysis) -> dict:
    """Per-room write unavailability, overall and split by the site that led each room's shard."""
    h = a.h
    group = op_room_of_sends(a)
    worst = unavailable_by_group(a, group, len(h.rooms))
    written = np.zeros(len(h.rooms), dtype=bool)
    written[group[a.sends.kind == 0]] = True
    idx = np.flatnonzero(written)
    out = {"valid": True, **_room_figures(worst[idx], idx, h.rooms)}
    leaders = leader_sites(a.h)
    if leaders:
        site_of = np.array([str(leaders.get(r, UNKNOWN)) for r in names(h.rooms, idx)], dtype=object)
        out["by_leader_site"] = {site: _room_figures(worst[idx[site_of == site]],
                                                     idx[site_of == site], h.rooms)
                                 for site in sorted(set(site_of.tolist()))}
    return out


CHECKERS = (("operations", operations), ("durability", durability), ("order", order),
            ("delivery", delivery), ("wellformed", wellformed), ("availability", availability),
            ("latency", latency), ("rooms", rooms))

