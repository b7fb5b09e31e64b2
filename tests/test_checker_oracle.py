"""The composed, vectorized checker agrees with the old one-pass checker (tests/checker_reference.py)
on arbitrary messy histories: retries, completions without invoke, odd types, unsorted times with
ties, duplicates and strays in the final reads, failed reads, deliveries of unknown ids, faults."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings, strategies as st

from twinsite.checker import check

sys.path.insert(0, str(Path(__file__).parent))
import checker_reference as reference  # noqa: E402

IDS = [f"m{n}" for n in range(12)]
ROOMS = ["r0", "r1", "r2"]

SEND = st.fixed_dictionaries({
    "f": st.just("send"),
    "type": st.sampled_from(["invoke", "invoke", "invoke", "ok", "ok", "fail", "info", "weird"]),
    "id": st.sampled_from(IDS), "room": st.sampled_from(ROOMS), "process": st.integers(0, 2),
    "time": st.integers(0, 40).map(lambda t: t / 4), "seq": st.one_of(st.none(), st.integers(1, 9)),
})
DELIVER = st.fixed_dictionaries({
    "f": st.just("deliver"), "type": st.just("ok"), "id": st.sampled_from(IDS + ["ghost"]),
    "room": st.sampled_from(ROOMS), "process": st.integers(100, 101),
    "time": st.integers(0, 40).map(lambda t: t / 4), "seq": st.one_of(st.none(), st.integers(1, 9)),
})
SUBSCRIBE = st.fixed_dictionaries({
    "f": st.just("subscribe"), "type": st.just("invoke"), "room": st.sampled_from(ROOMS),
    "process": st.integers(100, 101), "seq": st.one_of(st.none(), st.integers(0, 5)),
    "time": st.integers(0, 40).map(lambda t: t / 4),
})
FAULT = st.fixed_dictionaries({
    "type": st.just("fault"), "f": st.sampled_from(["start", "stop"]),
    "name": st.sampled_from(["kill", "cut"]), "time": st.integers(0, 40).map(lambda t: t / 4),
})
FINAL = st.fixed_dictionaries({
    "f": st.just("final-read"), "type": st.sampled_from(["ok", "ok", "ok", "fail"]),
    "room": st.sampled_from(ROOMS), "ids": st.lists(st.sampled_from(IDS + ["ghost"]), max_size=8),
    "time": st.integers(0, 44).map(lambda t: t / 4),
})
ODD = st.fixed_dictionaries({"f": st.just("mystery"), "time": st.just(1.0)})
EVENT = st.one_of(SEND, SEND, SEND, SEND, DELIVER, SUBSCRIBE, FAULT, FINAL, ODD)
# a well-formed attempt: invoke, then one completion some ticks later
ATTEMPT = st.tuples(st.sampled_from(IDS * 2 + [f"n{n}" for n in range(30)]), st.sampled_from(ROOMS[:2]),
                    st.integers(0, 1),
                    st.integers(0, 40), st.integers(0, 8),
                    st.sampled_from(["ok", "ok", "ok", "fail", "info", None]),
                    st.one_of(st.none(), st.integers(1, 9)))


def attempts(items) -> list[dict]:
    out = []
    for i, room, proc, t, dur, outcome, seq in items:
        base = {"f": "send", "id": i, "room": room, "process": proc}
        out.append({**base, "type": "invoke", "time": t / 4, "seq": None})
        if outcome:
            out.append({**base, "type": outcome, "time": (t + dur) / 4, "seq": seq})
    return out


def agree(events):
    new, old = check(events), reference.check(events)
    for key, value in old.items():
        if key == "valid":
            assert (new["valid"] is True) == value, (new["valid"], value)
        else:
            assert new[key] == value, (key, new[key], value)


@settings(max_examples=400, deadline=None)
@given(st.lists(EVENT, max_size=50))
def test_agrees_with_the_reference_on_messy_histories(events):
    agree(events)


@settings(max_examples=300, deadline=None)
@given(st.lists(ATTEMPT, max_size=40), st.lists(EVENT, max_size=10), st.lists(FINAL, max_size=4),
       st.randoms(use_true_random=False))
def test_agrees_with_the_reference_on_mostly_wellformed_histories(items, noise, finals, rnd):
    events, finals = attempts(items) + noise, list(finals)
    events.sort(key=lambda e: e["time"])
    if rnd.random() < 0.3:  # sometimes out of order in the file
        rnd.shuffle(events)
    for room in ROOMS:  # a plausible read: what was sent there, sometimes reordered or trimmed
        ids = list(dict.fromkeys(e["id"] for e in events if e.get("room") == room
                                 and e.get("f") == "send" and e["type"] == "ok"))
        if ids and rnd.random() < 0.5:
            a, b = rnd.randrange(len(ids)), rnd.randrange(len(ids))
            ids[a], ids[b] = ids[b], ids[a]
        if ids and rnd.random() < 0.2:
            ids.pop(rnd.randrange(len(ids)))
        if rnd.random() < 0.8:
            finals.append({"f": "final-read", "type": "ok", "room": room, "ids": ids, "time": 11.0})
    subs = [{"f": "deliver", "type": "ok", "id": e["id"], "room": e["room"], "process": 100,
             "seq": e["seq"], "time": e["time"]} for e in events
            if e.get("f") == "send" and e["type"] == "ok" and rnd.random() < 0.7]
    agree(events + subs + finals)
