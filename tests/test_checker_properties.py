"""Property tests: histories of a correct (linearizable, durable) store never show anomalies, and
removing one acknowledged id from the final read is always exactly one lost message."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from twinsite.checker import anomalies, check

MSG = st.tuples(
    st.integers(0, 2000),            # invoke tick
    st.integers(1, 300),             # duration in ticks
    st.floats(0.0, 1.0),             # where in [invoke, ack] the store applied it
    st.sampled_from(["ok", "ok", "ok", "retry-ok", "info-stored", "info-lost", "fail"]),
    st.integers(0, 3),               # room
    st.integers(0, 3),               # process
)


def simulate(msgs, subscribed_rooms=(0, 1)) -> list[dict]:
    """Events of a correct store: each write takes effect at a point strictly inside its attempt."""
    timed = []   # (time, order, event)
    applied = {}  # room -> [(lin, id)]
    for n, (inv, dur, frac, kind, room, proc) in enumerate(msgs):
        mid, rid = f"m{n}", f"room{room}"
        t0, t1 = inv * 1e-3, (inv + dur) * 1e-3
        lin = t0 + (0.1 + 0.8 * frac) * (t1 - t0)

        def op(typ, t, order, seq=None):
            timed.append((t, order, {"process": proc, "type": typ, "f": "send", "room": rid,
                                     "id": mid, "time": t, "site": "s", "seq": seq, "error": None}))

        if kind == "retry-ok":  # first attempt times out unapplied, the retry (same id) is applied
            tm = (t0 + t1) / 2
            op("invoke", t0, 1)
            op("info", tm, 0)
            op("invoke", tm, 1)
            lin = tm + (0.1 + 0.8 * frac) * (t1 - tm)
        else:
            op("invoke", t0, 1)
        if kind in ("ok", "retry-ok"):
            op("ok", t1, 0)
        elif kind == "fail":
            op("fail", t1, 0)
        else:
            op("info", t1, 0)
        if kind != "fail" and kind != "info-lost":
            applied.setdefault(rid, []).append((lin, mid))
    end = 10.0
    seq_events = []
    for rid, items in applied.items():
        items.sort()
        for seq, (lin, mid) in enumerate(items, 1):
            if int(rid[4:]) in subscribed_rooms:
                seq_events.append((lin + 0.002, 2, {"process": 100, "type": "ok", "f": "deliver",
                                                    "room": rid, "id": mid, "seq": seq,
                                                    "time": lin + 0.002}))
    for r in subscribed_rooms:
        timed.append((0.0, -1, {"process": 100, "type": "invoke", "f": "subscribe",
                                "room": f"room{r}", "seq": 0, "time": 0.0}))
    timed += seq_events
    timed.sort(key=lambda x: (x[0], x[1]))
    events = [e for _, _, e in timed]
    rooms = {f"room{m[4]}" for m in msgs}
    for rid in sorted(rooms):
        events.append({"type": "ok", "f": "final-read", "room": rid, "time": end,
                       "ids": [mid for _, mid in sorted(applied.get(rid, []))]})
    return events


@settings(max_examples=200, deadline=None)
@given(st.lists(MSG, min_size=1, max_size=60))
def test_random_clean_histories_have_no_anomalies(msgs):
    v = check(simulate(msgs))
    assert anomalies(v) == [], v
    assert v["attempted"] == len(msgs)
    assert v["acked"] + v["failed"] + v["indeterminate"] == v["attempted"]
    assert v["acked"] == sum(m[3] in ("ok", "retry-ok") for m in msgs)


@settings(max_examples=200, deadline=None)
@given(st.lists(MSG, min_size=1, max_size=60), st.integers(0, 10_000))
def test_deleting_an_acked_id_from_the_final_read_is_exactly_one_lost(msgs, pick):
    events = simulate(msgs, subscribed_rooms=())
    acked = [e["id"] for e in events if e.get("f") == "send" and e["type"] == "ok"]
    if not acked:
        return
    victim = acked[pick % len(acked)]
    for e in events:
        if e.get("f") == "final-read" and victim in e["ids"]:
            e["ids"] = [i for i in e["ids"] if i != victim]
    v = check(events)
    assert v["lost"] == 1 and v["lost_ids"] == [victim]
    assert anomalies(v) == ["lost"]
