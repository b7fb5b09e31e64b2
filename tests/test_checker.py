"""The checker on hand-made histories: one test per anomaly, each asserting the exact count."""

from __future__ import annotations

import pytest

from twinsite.checker import ANOMALIES, anomalies, check, percentile, timeline


class H:
    """A tiny history builder: explicit times, one line per event, like the driver writes."""

    def __init__(self):
        self.events: list[dict] = []

    def op(self, typ, id_, t, room="r1", process=0, site="pangyo", seq=None, error=None):
        self.events.append({"process": process, "type": typ, "f": "send", "room": room, "id": id_,
                            "time": t, "site": site, "seq": seq, "error": error})
        return self

    def send(self, id_, t_inv, t_ok, room="r1", process=0, seq=None):
        self.op("invoke", id_, t_inv, room, process)
        return self.op("ok", id_, t_ok, room, process, seq=seq)

    def deliver(self, id_, t, room="r1", process=100, seq=None):
        self.events.append({"process": process, "type": "ok", "f": "deliver", "room": room,
                            "id": id_, "seq": seq, "time": t})
        return self

    def subscribe(self, t, room="r1", process=100, after=0):
        self.events.append({"process": process, "type": "invoke", "f": "subscribe", "room": room,
                            "seq": after, "time": t})
        return self

    def fault(self, phase, t, name="kill"):
        self.events.append({"type": "fault", "f": phase, "name": name, "time": t})
        return self

    def final(self, ids, t, room="r1"):
        self.events.append({"type": "ok", "f": "final-read", "room": room, "ids": list(ids), "time": t})
        return self


def clean() -> H:
    h = H()
    h.subscribe(0.0)
    for n in range(5):
        h.send(f"m{n}", n * 0.1, n * 0.1 + 0.01, seq=n + 1)
        h.deliver(f"m{n}", n * 0.1 + 0.02, seq=n + 1)
    return h.final([f"m{n}" for n in range(5)], 2.0)


def test_clean_history_is_valid_with_zero_anomalies():
    v = check(clean().events)
    assert v["valid"] is True
    assert anomalies(v) == []
    for name in ANOMALIES:
        assert v[name] == 0, name
    assert (v["attempted"], v["acked"], v["failed"], v["indeterminate"], v["recovered"]) == (5, 5, 0, 0, 0)
    assert v["p50_ms"] == pytest.approx(10.0)
    assert v["max_ms"] == pytest.approx(10.0)
    assert v["delivery_lag_p99_ms"] == pytest.approx(10.0)
    assert v["deliveries"] == 5 and v["subscribers"] == 1


def test_lost_counts_acked_ids_missing_from_final_read():
    h = H().send("a", 0, 0.1).send("b", 0.2, 0.3).send("c", 0.4, 0.5).final(["b"], 1)
    v = check(h.events)
    assert v["lost"] == 2 and v["lost_ids"] == ["a", "c"]
    assert anomalies(v) == ["lost"] and v["valid"] is False


def test_retries_of_one_id_are_one_operation():
    h = H()
    h.op("invoke", "a", 0.0, site="pangyo").op("info", "a", 1.5, site="pangyo", error="timeout")
    h.op("invoke", "a", 1.5, site="ansan").op("fail", "a", 1.6, site="ansan", error="refused")
    h.op("invoke", "a", 1.7, site="pangyo").op("ok", "a", 1.8, site="pangyo", seq=1)
    h.final(["a"], 3)
    v = check(h.events)
    assert (v["attempted"], v["attempts"], v["acked"], v["failed"], v["indeterminate"]) == (1, 3, 1, 0, 0)
    assert v["max_ms"] == pytest.approx(1800.0)  # latency spans the retries
    assert v["valid"]


def test_failed_and_indeterminate_and_recovered():
    h = H()
    h.op("invoke", "f", 0).op("fail", "f", 0.1, error="client-overload")
    h.op("invoke", "i1", 0).op("info", "i1", 1.5, error="timeout")
    h.op("invoke", "i2", 0).op("info", "i2", 1.5, error="timeout")
    h.final(["i2"], 3)
    v = check(h.events)
    assert (v["failed"], v["indeterminate"], v["recovered"], v["acked"]) == (1, 2, 1, 0)
    assert v["recovered_ids"] == ["i2"]
    assert v["valid"]  # indeterminate outcomes are allowed either way


def test_failed_but_present_is_an_anomaly():
    h = H().op("invoke", "f", 0).op("fail", "f", 0.1, error="http 400").final(["f"], 1)
    v = check(h.events)
    assert v["failed_present"] == 1 and anomalies(v) == ["failed_present"]


def test_unexpected_ids_never_invoked_or_in_another_room():
    h = H().send("a", 0, 0.1).final(["a", "ghost"], 1).final([], 1, room="r2")
    v = check(h.events)
    assert v["unexpected"] == 1 and v["unexpected_ids"] == ["ghost"]
    h2 = H().send("a", 0, 0.1, room="r1").final([], 1, room="r1").final(["a"], 1, room="r2")
    v2 = check(h2.events)
    assert (v2["unexpected"], v2["lost"]) == (1, 1)


def test_duplicates_count_each_id_once():
    h = H().send("a", 0, 0.1).send("b", 0.2, 0.3).final(["a", "b", "a", "a", "b"], 1)
    v = check(h.events)
    assert v["duplicates"] == 2 and v["duplicate_ids"] == ["a", "b"]
    assert v["lost"] == 0 and v["order_violations"] == 0


def test_order_violation_same_process():
    # b invoked after a was acked by the same process, but stored before a
    h = H().send("a", 0, 0.1).send("b", 0.2, 0.3).send("c", 0.4, 0.5).final(["b", "a", "c"], 1)
    v = check(h.events)
    assert v["order_violations"] == 1 and v["order_violation_ids"] == ["b"]
    assert anomalies(v) == ["order_violations"]


def test_concurrent_or_other_process_is_not_an_order_violation():
    h = H()
    h.send("a", 0, 0.5).send("b", 0.1, 0.3)            # concurrent: any order is fine
    h.send("c", 0.6, 0.7, process=1)                    # other process, acked first...
    h.send("d", 0.8, 0.9, process=2)                    # ...d stored before c: not the same process
    h.final(["b", "a", "d", "c"], 2)
    assert check(h.events)["order_violations"] == 0


def test_delivery_missing_and_unexpected():
    h = H().subscribe(0).send("a", 0, 0.1, seq=1).send("b", 0.2, 0.3, seq=2).send("c", 0.4, 0.5, seq=3)
    h.deliver("a", 0.15, seq=1).deliver("c", 0.55, seq=3).deliver("zz", 0.6, seq=9)
    h.final(["a", "b", "c"], 1)
    v = check(h.events)
    assert v["delivery_missing"] == 1 and v["delivery_missing_ids"] == ["b"]
    assert v["delivery_unexpected"] == 1 and v["delivery_unexpected_ids"] == ["zz"]


def test_delivery_expected_only_after_subscribe_seq_and_only_for_subscribed_rooms():
    h = H().send("a", 0, 0.1, seq=1).send("b", 0.2, 0.3, seq=2)
    h.send("x", 0, 0.1, room="r2", seq=1)               # r2 has no subscriber: nothing expected
    h.subscribe(0.25, after=1).deliver("b", 0.35, seq=2)
    h.final(["a", "b"], 1).final(["x"], 1, room="r2")
    v = check(h.events)
    assert v["delivery_missing"] == 0 and v["valid"]


def test_two_subscribers_one_missing_counts_the_message_once():
    h = H().subscribe(0, process=100).subscribe(0, process=101).send("a", 0, 0.1, seq=1)
    h.deliver("a", 0.2, process=100, seq=1)
    h.final(["a"], 1)
    assert check(h.events)["delivery_missing"] == 1


def test_unread_rooms_are_an_anomaly_not_lost():
    h = H().send("a", 0, 0.1).send("b", 0, 0.1, room="r2").final(["a"], 1)
    v = check(h.events)
    assert (v["unread_rooms"], v["lost"]) == (1, 0) and v["unread_room_ids"] == ["r2"]
    assert not v["valid"]


def test_malformed_completion_without_invoke():
    h = H().send("a", 0, 0.1).op("ok", "b", 0.2).final(["a"], 1)
    v = check(h.events)
    assert v["malformed"] == 1 and v["acked"] == 1


def test_max_unavailable_is_the_longest_span_without_success():
    h = H()
    h.send("a", 0.0, 0.1)
    h.op("invoke", "b", 1.0).op("info", "b", 2.5).op("invoke", "b", 2.5)
    h.op("invoke", "c", 3.0).op("fail", "c", 3.1)
    h.op("ok", "b", 7.0)                                # first success since b's invoke at 1.0
    h.send("d", 8.0, 8.05)
    h.final(["a", "b", "d"], 9)
    v = check(h.events)
    assert v["max_unavailable_s"] == pytest.approx(6.0)


def test_max_unavailable_counts_the_run_edges():
    h = H().send("a", 0.0, 0.1).op("invoke", "b", 1.0).op("info", "b", 4.0).final(["a"], 5)
    assert check(h.events)["max_unavailable_s"] == pytest.approx(3.0)
    # outstanding at an ok: the span restarts at that ok
    h2 = H().op("invoke", "a", 0).op("invoke", "b", 0.1).op("ok", "a", 0.2).op("ok", "b", 5.2)
    assert check(h2.final(["a", "b"], 6).events)["max_unavailable_s"] == pytest.approx(5.0)


def test_latency_split_by_fault_windows():
    h = H()
    h.send("a", 0.0, 0.010)
    h.fault("start", 1.0)
    h.send("b", 1.5, 3.5)                               # invoked during the fault: 2000 ms
    h.fault("stop", 4.0)
    h.send("c", 5.0, 5.020)
    h.final(["a", "b", "c"], 6)
    v = check(h.events)
    assert v["latency_before"] == {"p50_ms": 10.0, "p99_ms": 10.0, "max_ms": 10.0, "count": 1}
    assert v["latency_during"]["count"] == 1 and v["p99_during_ms"] == pytest.approx(2000.0)
    assert v["latency_after"]["p99_ms"] == pytest.approx(20.0)
    assert v["faults"] == [{"start": 1.0, "stop": 4.0}]
    assert v["max_ms"] == pytest.approx(2000.0)


def test_unsorted_events_are_checked_in_time_order():
    evs = clean().events
    assert check(list(reversed(evs))) == check(evs)  # distinct times: sorting restores the history


def test_timeline_buckets():
    h = H().send("a", 0.1, 0.2).send("b", 1.1, 1.5).op("invoke", "c", 2.2).op("fail", "c", 2.3)
    tl = timeline(h.events)
    assert [b["t"] for b in tl] == [0.0, 1.0, 2.0]
    assert [b["acked"] for b in tl] == [1, 1, 0]
    assert [b["errors"] for b in tl] == [0, 0, 1]
    assert tl[1]["p99_ms"] == pytest.approx(400.0)


def test_percentile_nearest_rank():
    assert percentile([], 99) == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99
