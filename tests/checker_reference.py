"""Oracle for tests/test_checker_oracle.py: the checker as it was before `twinsite.checker` became a
composed, columnar package (one pure-Python pass over event dicts). Frozen: do not "fix" it; the
new checker must agree with it on every history it can express.
"""
# The original module documentation follows.
"""The checker: a pure function from a history (see `twinsite.history`) to a verdict. No I/O, no clocks.

Hand-written rather than Jepsen/Elle/Porcupine: those are JVM/Go, and what we check is narrower than
linearizability — a set of acknowledged ids against the final stored order — which a single
linear-time pass over the history decides.

Definitions (one logical operation per message id: the driver retries the same id across sites):
- an id is `acked` if any attempt returned ok; else `indeterminate` if any attempt returned info;
  else `failed` (every attempt failed: certainly not written). `attempted` = distinct ids invoked.
- `lost`: acked ids absent from the final read of their room.
- `recovered`: indeterminate ids present in the final read (not an anomaly).
- `unexpected`: ids in a final read that were never invoked for that room.
- `failed_present`: ids whose every attempt said "certainly not written" yet are stored.
- `duplicates`: ids stored more than once (counted once per id).
- `order_violations`: per room and process, if B was first invoked after A was acknowledged by the
  same process, A must precede B in the stored order; counts the B ids that don't.
- `delivery_missing`: stored messages of a room that some subscriber of that room never received.
  A subscriber of a room is a process with a `subscribe` event for it (expecting every stored
  message whose seq is above the subscribe event's `seq`; messages with unknown seq are expected)
  or, lacking one, a process with deliveries in it (then it is expected to see everything).
- `delivery_unexpected`: deliveries of ids that the final read of the room does not contain.
- `unread_rooms`: rooms written to without a final-read line (their acked ids cannot be verified;
  they are not counted as lost). A mid-run snapshot therefore is never `valid`.
- `malformed`: completions without a matching invoke, unknown event types.
- `max_unavailable_s`: the longest span during which writes were wanted and none succeeded. A span
  opens at an invoke (or at an ok that leaves other attempts outstanding) while none is open, and is
  closed only by an ok; fail/info do not close it. A span still open at the end of the history is
  closed at the last send event (run edges count).
- latency: per acked id, first invoke -> first ok (retries included), in ms: `p50_ms`, `p99_ms`,
  `max_ms`; `latency_before`/`latency_during`/`latency_after` split the ids by the time of their
  first invoke: before the first fault start / while any fault is active / otherwise.
  `p99_during_ms` is `latency_during["p99_ms"]` (0.0 when nothing was acked during a fault).
- `delivery_lag_p99_ms`: per delivery of an acked id, deliver time - ack time (clamped at 0).
"""


import gc
import math
from bisect import bisect_right
from itertools import accumulate
from typing import Iterable

ANOMALIES = ("lost", "unexpected", "failed_present", "duplicates", "order_violations",
             "delivery_missing", "delivery_unexpected", "unread_rooms", "malformed")
MAX_IDS = 10  # offending ids listed per anomaly


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty list)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def _stats(values_ms: list[float]) -> dict:
    values_ms.sort()
    return {"p50_ms": round(percentile(values_ms, 50), 3), "p99_ms": round(percentile(values_ms, 99), 3),
            "max_ms": round(values_ms[-1], 3) if values_ms else 0.0, "count": len(values_ms)}


def _in_time_order(events: Iterable[dict]) -> list[dict]:
    evs = events if isinstance(events, list) else list(events)
    prev = -math.inf
    for e in evs:
        t = e.get("time", 0.0)
        if t < prev:
            # stable: an invoke and its completion stamped with the same time keep their file order
            return sorted(evs, key=lambda e: e.get("time", 0.0))
        prev = t
    return evs


def _fault_windows(evs: list[dict]) -> list[tuple[float, float]]:
    """Intervals during which at least one fault is active (a fault with no stop lasts forever)."""
    active: dict[str, int] = {}
    windows: list[tuple[float, float]] = []
    opened = None
    for e in evs:
        if e.get("type") != "fault":
            continue
        name, t = e.get("name"), e.get("time", 0.0)
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


def check(events: Iterable[dict]) -> dict:
    # millions of small live objects make the cyclic GC rescan them over and over (superlinear);
    # the checker creates no cycles, so pause it for the duration
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(events)
    finally:
        if was_enabled:
            gc.enable()


def _check(events: Iterable[dict]) -> dict:
    evs = _in_time_order(events)

    # id -> [time of first invoke, room, process of first invoke, open attempts, outcome,
    #        seq of the first ok, time of the first ok]
    # outcome: 0 = only fails so far, 1 = some info, 2 = acked
    ops: dict = {}
    attempts = 0
    malformed = 0
    malformed_ids: list = []
    # order checking: ids acked so far per (room, process), and for each id invoked after some of
    # them, how many there were at its first invoke
    acks_by: dict[tuple, list] = {}
    mark_ids: list = []
    mark_lists: list = []
    mark_ns: list = []
    # availability
    n_open = 0
    span_open = None
    max_unavail = 0.0
    last_send_time = None
    # reads / deliveries / subscriptions
    final: dict = {}
    deliveries: list[tuple] = []            # (process, room, id, seq, time)
    subscribe_after: dict[tuple, int] = {}  # (process, room) -> after seq
    seq_of: dict = {}                       # id -> seq, from deliveries
    faults: list[dict] = []

    for e in evs:
        f = e.get("f")
        if f == "send":
            i = e.get("id")
            t = e.get("time", 0.0)
            typ = e.get("type")
            last_send_time = t
            if typ == "invoke":
                attempts += 1
                n_open += 1
                if span_open is None:
                    span_open = t
                op = ops.get(i)
                if op is None:
                    room = e.get("room")
                    proc = e.get("process")
                    ops[i] = [t, room, proc, 1, 0, None, None]
                    lst = acks_by.get((room, proc))
                    if lst:
                        mark_ids.append(i)
                        mark_lists.append(lst)
                        mark_ns.append(len(lst))
                else:
                    op[3] += 1
                continue
            op = ops.get(i)
            if op is None or not op[3]:
                malformed += 1
                if len(malformed_ids) < MAX_IDS:
                    malformed_ids.append(i)
                continue
            op[3] -= 1
            n_open -= 1
            if typ == "ok":
                if span_open is not None and t - span_open > max_unavail:
                    max_unavail = t - span_open
                span_open = t if n_open else None
                if op[4] != 2:
                    op[4] = 2
                    op[5] = e.get("seq")
                    op[6] = t
                    k2 = (op[1], op[2])
                    lst = acks_by.get(k2)
                    if lst is None:
                        acks_by[k2] = [i]
                    else:
                        lst.append(i)
            elif typ == "info":
                if op[4] == 0:
                    op[4] = 1
            elif typ != "fail":
                malformed += 1
        elif f == "deliver":
            i = e.get("id")
            s = e.get("seq")
            deliveries.append((e.get("process"), e.get("room"), i, s, e.get("time", 0.0)))
            if s is not None:
                seq_of[i] = s
        elif f == "final-read":
            if e.get("type") == "ok":  # a failed final read leaves the room unread
                final.setdefault(e.get("room"), []).extend(e.get("ids") or [])
        elif f == "subscribe":
            subscribe_after.setdefault((e.get("process"), e.get("room")), e.get("seq") or 0)
        elif e.get("type") == "fault":
            faults.append(e)
        elif e.get("type") == "leaders":
            pass  # which site led each room's shard: the per-room split is the checker branch's
        else:
            malformed += 1

    if span_open is not None and last_send_time is not None:
        max_unavail = max(max_unavail, last_send_time - span_open)

    # --- classify logical operations ---------------------------------------------------------------
    acked = sum(1 for op in ops.values() if op[4] == 2)
    indeterminate_ids = [i for i, op in ops.items() if op[4] == 1]
    failed = len(ops) - acked - len(indeterminate_ids)

    # --- final read: positions, duplicates, unexpected -------------------------------------------
    # pos: id -> a global position (increasing through each room's read: order within a room is
    # all that is compared); one setdefault both records the first occurrence and spots a repeat
    home_pos: dict = {}
    stray: dict = {}         # id -> room, for ids stored in a room they were never sent to
    dup_ids: list = []
    duplicates = 0
    seen_twice: set = set()
    unexpected = 0
    unexpected_ids: list = []
    failed_present = 0
    failed_present_ids: list = []
    recovered = 0
    recovered_ids: list = []
    ops_get = ops.get
    setpos = home_pos.setdefault
    g = 0
    for room, ids in final.items():
        for i in ids:
            g += 1
            if setpos(i, g) != g:
                if i not in seen_twice:
                    seen_twice.add(i)
                    duplicates += 1
                    if len(dup_ids) < MAX_IDS:
                        dup_ids.append(i)
                continue
            op = ops_get(i)
            if op is None or op[1] != room:
                stray[i] = room
                unexpected += 1
                if len(unexpected_ids) < MAX_IDS:
                    unexpected_ids.append(i)
                continue
            o = op[4]
            if o == 1:
                recovered += 1
                if len(recovered_ids) < MAX_IDS:
                    recovered_ids.append(i)
            elif o == 0:
                failed_present += 1
                if len(failed_present_ids) < MAX_IDS:
                    failed_present_ids.append(i)
    for i in stray:  # home_pos keeps only ids stored in the room they were sent to
        del home_pos[i]

    # --- lost, and latency split by fault windows -------------------------------------------------
    lost = 0
    lost_ids: list = []
    sent_rooms = {op[1] for op in ops.values()}
    unread = {r for r in sent_rooms if r not in final}
    windows = _fault_windows(faults)
    first_fault = windows[0][0] if windows else math.inf
    starts = [a for a, _ in windows]
    all_ms: list[float] = []
    before: list[float] = []
    during: list[float] = []
    after: list[float] = []
    for i, op in ops.items():
        if op[4] != 2:
            continue
        t_inv = op[0]
        ms = (op[6] - t_inv) * 1000.0
        all_ms.append(ms)
        if t_inv < first_fault:
            before.append(ms)
        elif t_inv <= windows[bisect_right(starts, t_inv) - 1][1]:
            during.append(ms)
        else:
            after.append(ms)
        if i not in home_pos:
            if unread and op[1] in unread:
                continue  # cannot be verified: reported as an unread room
            lost += 1
            if len(lost_ids) < MAX_IDS:
                lost_ids.append(i)

    # --- order: B first invoked after A acked (same room and process) must be stored after A -----
    order_violations = 0
    order_ids: list = []
    if mark_ids:
        # prefix maximum of stored positions over each (room, process)'s acked ids, in ack order
        pos_get = home_pos.get
        prefix = {id(lst): list(accumulate([pos_get(a, -1) for a in lst], max))
                  for lst in acks_by.values()}
        for b, lst, n in zip(mark_ids, mark_lists, mark_ns):
            pb = pos_get(b)
            if pb is not None and prefix[id(lst)][n - 1] > pb:
                order_violations += 1
                if len(order_ids) < MAX_IDS:
                    order_ids.append(b)

    # --- deliveries ---------------------------------------------------------------------------------
    delivered: dict[tuple, set] = {}
    lags: list[float] = []
    delivery_unexpected = 0
    delivery_unexpected_ids: list = []
    for proc, room, i, s, t in deliveries:
        k = (proc, room)
        got = delivered.get(k)
        if got is None:
            delivered[k] = got = set()
        got.add(i)
        stored_here = (i in home_pos and ops[i][1] == room) or stray.get(i) == room
        if room in final and not stored_here:
            delivery_unexpected += 1
            if len(delivery_unexpected_ids) < MAX_IDS:
                delivery_unexpected_ids.append(i)
        op = ops_get(i)
        if op is not None and op[4] == 2:
            lags.append(max(0.0, (t - op[6]) * 1000.0))
    subscribers = set(subscribe_after) | set(delivered)
    missing_set: set = set()
    for proc, room in subscribers:
        ids = final.get(room)
        if not ids:
            continue
        after_seq = subscribe_after.get((proc, room), 0)
        got = delivered.get((proc, room), ())
        for i in ids:
            if i not in got and i not in missing_set:
                op = ops_get(i)
                s = op[5] if op is not None and op[5] is not None else seq_of.get(i)
                if s is None or s > after_seq:
                    missing_set.add(i)
    missing_ids = [i for ids in final.values() for i in ids if i in missing_set][:MAX_IDS] \
        if missing_set else []

    overall = _stats(all_ms)
    lat_during = _stats(during)
    lags.sort()

    times = [e.get("time", 0.0) for e in (evs[0], evs[-1])] if evs else [0.0, 0.0]
    verdict = {
        "valid": True,
        "attempted": len(ops),
        "attempts": attempts,
        "acked": acked,
        "failed": failed,
        "indeterminate": len(indeterminate_ids),
        "lost": lost,
        "recovered": recovered,
        "unexpected": unexpected,
        "failed_present": failed_present,
        "duplicates": duplicates,
        "order_violations": order_violations,
        "delivery_missing": len(missing_set),
        "delivery_unexpected": delivery_unexpected,
        "unread_rooms": len(unread),
        "malformed": malformed,
        "max_unavailable_s": round(max_unavail, 3),
        "p50_ms": overall["p50_ms"],
        "p99_ms": overall["p99_ms"],
        "max_ms": overall["max_ms"],
        "latency_before": _stats(before),
        "latency_during": lat_during,
        "latency_after": _stats(after),
        "p99_during_ms": lat_during["p99_ms"],
        "deliveries": len(deliveries),
        "delivery_lag_p99_ms": round(percentile(lags, 99), 3),
        "rooms": len(sent_rooms | set(final)),
        "rooms_read": len(final),
        "subscribers": len(subscribers),
        "faults": [{"start": a, "stop": None if b == math.inf else b} for a, b in windows],
        "duration_s": round(times[1] - times[0], 3),
        "lost_ids": lost_ids,
        "unexpected_ids": unexpected_ids,
        "failed_present_ids": failed_present_ids,
        "duplicate_ids": dup_ids,
        "order_violation_ids": order_ids,
        "delivery_missing_ids": missing_ids,
        "delivery_unexpected_ids": delivery_unexpected_ids,
        "unread_room_ids": sorted(map(str, unread))[:MAX_IDS],
        "malformed_ids": malformed_ids,
        "recovered_ids": recovered_ids,
        "indeterminate_ids": sorted(map(str, indeterminate_ids))[:MAX_IDS],
    }
    verdict["valid"] = not anomalies(verdict)
    return verdict


def anomalies(verdict: dict) -> list[str]:
    """Names of the nonzero anomaly fields of a verdict (empty = the run proved what it should)."""
    return [name for name in ANOMALIES if verdict.get(name)]


def timeline(events: Iterable[dict], bucket_s: float = 1.0) -> list[dict]:
    """Per-bucket series for plots: {"t", "invoked", "acked", "errors", "p99_ms"}.

    `acked` counts logical acks (first ok of an id) in the bucket, `errors` fail/info attempts,
    `p99_ms` the p99 latency (first invoke -> first ok) of the ids acked in the bucket.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be > 0")
    evs = _in_time_order(events)
    first_invoke: dict[str, float] = {}
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

    for e in evs:
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
