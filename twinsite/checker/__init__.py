"""The checker: a pure function from a history (see `twinsite.history`) to a verdict. No I/O, no clocks,
no process-wide switches.

Composed as Jepsen's `checker/compose`: small checkers (`twinsite.checker.checkers.CHECKERS`), each a
function of the analysed history returning its own map with a `valid` of True, False or "unknown";
`check` merges the maps into one verdict whose `valid` is False if any checker is False, else
"unknown" if any is unknown, else True, and `valid_by` names the checkers that were not True.
Hand-written rather than Jepsen/Elle/Porcupine (JVM/Go): what we check is narrower than
linearizability — a set of acknowledged ids against the final stored order. Vectorized with numpy
over a columnar history (`twinsite.columns`) so a million operations check in about a second.

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
  they are not counted as lost). `valid` is then "unknown" when every such room has a failed final
  read or the run was `cut_short`, else False (a mid-run snapshot is never valid).
- `cut_short`: the run was interrupted — the reader dropped a torn last line (`torn_lines`), or
  there are writes and no final-read line at all. Its unread rooms are unknown, not lost.
- `malformed`: completions without a matching invoke, unknown event types.
- `max_unavailable_s`: the longest span during which writes were wanted and none succeeded (see
  `twinsite.checker.availability`). Per room the same: `rooms_stalled` (rooms over 1 s),
  `room_unavailable_max_s`, `room_unavailable_p50_s` (over the rooms written to), and
  `by_leader_site` {site: the same figures} from the `leaders` marker in force when the first
  fault began (rooms the marker does not name count under "unknown").
- latency: per acked id, first invoke -> first ok (retries included), in ms: `p50_ms`, `p99_ms`,
  `max_ms`; `latency_before`/`latency_during`/`latency_after` split the ids by the time of their
  first invoke: before the first fault start / while any fault is active / otherwise.
  `p99_during_ms` is `latency_during["p99_ms"]` (0.0 when nothing was acked during a fault).
- `delivery_lag_p99_ms`: per delivery of an acked id, deliver time - ack time (clamped at 0).
"""

from __future__ import annotations

from typing import Callable, Iterable

from ..columns import History, from_events
from .analysis import Analysis, analyse
from ..history import leader_sites
from .checkers import CHECKERS, MAX_IDS, UNKNOWN
from .stats import percentile
from .timeline import timeline

ANOMALIES = ("lost", "unexpected", "failed_present", "duplicates", "order_violations",
             "delivery_missing", "delivery_unexpected", "unread_rooms", "malformed")

# the verdict's keys in the order they have always been printed; newer keys follow
KEY_ORDER = ("valid", "attempted", "attempts", "acked", "failed", "indeterminate", "lost", "recovered",
             "unexpected", "failed_present", "duplicates", "order_violations", "delivery_missing",
             "delivery_unexpected", "unread_rooms", "malformed", "max_unavailable_s", "p50_ms",
             "p99_ms", "max_ms", "latency_before", "latency_during", "latency_after",
             "p99_during_ms", "deliveries", "delivery_lag_p99_ms", "rooms", "rooms_read",
             "subscribers", "faults", "duration_s")

Checker = Callable[[Analysis], dict]


def merge_valid(values: Iterable) -> bool | str:
    """False beats "unknown" beats True."""
    values = list(values)
    if any(v is False for v in values):
        return False
    return UNKNOWN if any(v == UNKNOWN for v in values) else True


def compose(checkers=CHECKERS) -> Callable[[Iterable[dict] | History], dict]:
    """A checker of histories made of named checkers: their maps merged, `valid` and `valid_by`."""
    checkers = tuple(checkers)

    def run(history) -> dict:
        a = analyse(from_events(history))
        merged: dict = {}
        valid_by: dict = {}
        for name, fn in checkers:
            out = dict(fn(a))
            v = out.pop("valid", True)
            if v is not True:
                valid_by[name] = v
            merged.update(out)
        merged["valid"] = merge_valid(valid_by.values())
        merged["valid_by"] = valid_by
        ordered = {k: merged[k] for k in KEY_ORDER if k in merged}
        ordered.update((k, v) for k, v in merged.items() if k not in ordered)
        return ordered

    return run


check = compose()
check.__doc__ = "The verdict of a history (event dicts or a `twinsite.columns.History`)."


def anomalies(verdict: dict) -> list[str]:
    """Names of the nonzero anomaly fields of a verdict (empty = the run proved what it should)."""
    return [name for name in ANOMALIES if verdict.get(name)]


__all__ = ["ANOMALIES", "CHECKERS", "MAX_IDS", "UNKNOWN", "anomalies", "check", "compose",
           "leader_sites", "merge_valid", "percentile", "timeline"]
