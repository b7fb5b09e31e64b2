"""The history file (writer, reader) and `twinsite check` on it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from twinsite.checker_cli import main as check_main
from twinsite.history import HistoryError, HistoryWriter, read_history


def test_writer_is_thread_safe_and_stamps_time(tmp_path):
    path = tmp_path / "h.jsonl"
    w = HistoryWriter(path)

    def burst(p):
        for n in range(500):
            w.write({"process": p, "type": "invoke", "f": "send", "room": "r", "id": f"{p}-{n}"})

    threads = [threading.Thread(target=burst, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.fault("kill", "start")
    w.close()
    w.write({"late": True})  # after close: dropped, no exception
    events = read_history(path)
    assert len(events) == 2001
    times = [e["time"] for e in events]
    assert times == sorted(times)  # stamped under the lock: file order is time order
    assert events[-1]["type"] == "fault" and events[-1]["f"] == "start" and events[-1]["name"] == "kill"
    assert len({e["id"] for e in events[:-1]}) == 2000


def test_writer_flushes_every_line(tmp_path):
    path = tmp_path / "h.jsonl"
    w = HistoryWriter(path, t0=0.0)
    w.write({"type": "fault", "f": "start", "name": "x", "time": 1.5})
    assert json.loads(path.read_text())["time"] == 1.5  # readable before close
    with pytest.raises(ValueError):
        w.fault("x", "begin")
    w.close()


def test_reader_drops_a_torn_last_line_but_rejects_garbage_inside(tmp_path):
    p = tmp_path / "h.jsonl"
    p.write_text('{"a": 1}\n\n{"b": 2}\n{"c": ')
    assert read_history(p) == [{"a": 1}, {"b": 2}]
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(HistoryError, match="line 2"):
        read_history(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(HistoryError, match="JSON object"):
        read_history(p)
    with pytest.raises(HistoryError, match="no such file"):
        read_history(tmp_path / "missing.jsonl")


def _history(path, lost=False):
    w = HistoryWriter(path, t0=0.0)
    for n in range(3):
        base = {"process": 0, "f": "send", "room": "r1", "id": f"m{n}", "site": "pangyo", "error": None}
        w.write({**base, "type": "invoke", "time": n, "seq": None})
        w.write({**base, "type": "ok", "time": n + 0.01, "seq": n + 1})
    ids = ["m0", "m2"] if lost else ["m0", "m1", "m2"]
    w.write({"type": "ok", "f": "final-read", "room": "r1", "ids": ids, "time": 5})
    w.close()


def test_check_cli_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    _history(good)
    _history(bad, lost=True)
    assert check_main([str(good)]) == 0
    assert "VALID" in capsys.readouterr().out
    assert check_main([str(bad), "--json"]) == 1
    v = json.loads(capsys.readouterr().out)
    assert v["lost"] == 1 and v["lost_ids"] == ["m1"] and v["valid"] is False
    assert check_main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "INVALID: lost" in out and "first lost: m1" in out
    assert check_main([str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    typed = tmp_path / "typed.jsonl"
    typed.write_text('{"f": "send", "type": "invoke", "id": [1], "time": "x"}\n'
                     '{"f": "send", "type": "invoke", "id": "a", "time": 1}\n')
    assert check_main([str(typed)]) == 2
    assert "not a twinsite history" in capsys.readouterr().err


def test_twinsite_check_through_the_dispatcher(tmp_path):
    h = tmp_path / "h.jsonl"
    _history(h, lost=True)
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "check", str(h)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "lost" in r.stdout and not r.stderr


def _rich_history(path, *, close=True):
    """Two rooms led by different sites; room r1 stalls 3 s during the fault, r0 does not."""
    w = HistoryWriter(path, t0=0.0)
    w.write({"process": 100, "type": "invoke", "f": "subscribe", "room": "r0", "seq": 0, "time": 0.0})
    w.write({"type": "leaders", "rooms": {"r0": "ansan", "r1": "pangyo"}, "time": 0.5})
    seqs = {"r0": 0, "r1": 0}
    for n in range(20):
        t = n * 0.5
        for room in ("r0", "r1"):
            i = f"{room}-{n}"
            lat = 6.0 - t if room == "r1" and 6 <= n < 12 else 0.01  # r1 stalls from 3.0 to 6.0
            base = {"process": 0 if room == "r0" else 1, "f": "send", "room": room, "id": i}
            w.write({**base, "type": "invoke", "time": t, "seq": None})
            seqs[room] += 1
            w.write({**base, "type": "ok", "time": t + lat, "seq": seqs[room]})
            if room == "r0":
                w.write({"process": 100, "type": "ok", "f": "deliver", "room": room, "id": i,
                         "seq": seqs[room], "time": t + 0.02})
        if n == 5:
            w.fault("site-power:pangyo", "start")
        if n == 12:
            w.fault("site-power:pangyo", "stop")
    for room in ("r0", "r1"):
        w.write({"type": "ok", "f": "final-read", "room": room, "time": 20.0,
                 "ids": [f"{room}-{n}" for n in range(20)]})
    if close:
        w.close()
    return w


def test_sidecar_gives_the_same_verdict_as_the_jsonl(tmp_path):
    from twinsite.checker import check
    from twinsite.columns import sidecar_path
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    _rich_history(p)
    assert sidecar_path(p).exists()
    assert not isinstance(load_history(p).ids, list)  # came from the sidecar (numpy names)
    assert isinstance(load_history(p, sidecar=False).ids, list)
    v_side = check(load_history(p))
    v_jsonl = check(load_history(p, sidecar=False))
    v_dicts = check(read_history(p))
    assert v_side == v_jsonl == v_dicts
    assert v_side["valid"] is True and v_side["acked"] == 40 and v_side["deliveries"] == 20


def test_a_stale_sidecar_is_ignored(tmp_path):
    from twinsite.checker import check
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    _rich_history(p)
    with open(p, "a") as f:  # a line appended by another tool after the writer closed
        f.write(json.dumps({"process": 9, "type": "ok", "f": "send", "room": "r0", "id": "zz",
                            "time": 21.0}) + "\n")
    v = check(load_history(p))
    assert v["malformed"] == 1 and v["valid"] is False


def test_appending_writer_and_odd_ids_write_no_sidecar(tmp_path):
    from twinsite.columns import sidecar_path
    p = tmp_path / "h.jsonl"
    p.write_text('{"type": "fault", "f": "start", "name": "x", "time": 0}\n')
    HistoryWriter(p, t0=0.0).close()
    assert not sidecar_path(p).exists()
    q = tmp_path / "q.jsonl"
    w = HistoryWriter(q, t0=0.0)
    w.write({"process": 0, "type": "invoke", "f": "send", "room": "r", "id": 7, "time": 0.0})
    w.write({"process": 0, "type": "invoke", "f": "send", "room": "r", "id": "8", "time": 0.0})
    w.close()
    assert not sidecar_path(q).exists()  # ids neither all strings nor all integers: JSONL only
    assert check_main([str(q)]) == 3  # readable; no final read: cut short, unknown


def test_per_room_stalls_split_by_leader_site(tmp_path, capsys):
    from twinsite.checker import check, leader_sites
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    _rich_history(p)
    h = load_history(p)
    assert leader_sites(h) == {"r0": "ansan", "r1": "pangyo"} == leader_sites(read_history(p))
    v = check(h)
    assert v["rooms_stalled"] == 1 and v["rooms_stalled_ids"] == ["r1"]
    assert v["room_unavailable_max_s"] == pytest.approx(3.0)
    assert v["room_unavailable_p50_s"] == pytest.approx(0.01)
    by = v["by_leader_site"]
    assert by["pangyo"]["rooms_stalled"] == 1 and by["pangyo"]["room_unavailable_max_s"] == 3.0
    assert by["ansan"]["rooms_stalled"] == 0 and by["ansan"]["room_unavailable_max_s"] == 0.01
    assert check_main([str(p)]) == 0
    out = capsys.readouterr().out
    assert "led by pangyo" in out and "led by ansan" in out


def test_leaders_marker_in_force_at_the_fault():
    from twinsite.history import leader_sites
    ev = [{"type": "leaders", "rooms": {"a": "x"}, "time": 1.0},
          {"type": "leaders", "rooms": {"a": "y"}, "time": 2.0},
          {"type": "fault", "f": "start", "name": "k", "time": 3.0},
          {"type": "leaders", "rooms": {"a": "z"}, "time": 4.0}]
    assert leader_sites(ev) == {"a": "y"}
    assert leader_sites(ev[3:]) == {"a": "z"}  # only later markers: the first of them
    assert leader_sites(ev[2:3]) == {}


def test_torn_last_line_is_cut_short_not_lost(tmp_path, capsys):
    from twinsite.checker import check
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    _rich_history(p)
    lines = p.read_text().splitlines(keepends=True)
    sends = [ln for ln in lines if '"final-read"' not in ln]
    p.write_text("".join(sends) + '{"process": 0, "type": "inv')  # killed mid-write, no final read
    h = load_history(p)
    assert h.torn_lines == 1
    v = check(h)
    assert v["cut_short"] is True and v["torn_lines"] == 1
    assert v["lost"] == 0 and v["unread_rooms"] == 2
    assert v["valid"] == "unknown" and v["valid_by"] == {"durability": "unknown"}
    assert check_main([str(p)]) == 3
    assert "UNKNOWN: run cut short" in capsys.readouterr().out


def test_failed_final_read_is_unknown_and_a_loss_still_invalid(tmp_path):
    from twinsite.checker import check
    ev = [{"process": 0, "type": "invoke", "f": "send", "room": "r", "id": "a", "time": 0.0},
          {"process": 0, "type": "ok", "f": "send", "room": "r", "id": "a", "time": 0.1, "seq": 1},
          {"process": 0, "type": "invoke", "f": "send", "room": "s", "id": "b", "time": 0.0},
          {"process": 0, "type": "ok", "f": "send", "room": "s", "id": "b", "time": 0.1, "seq": 1},
          {"type": "fail", "f": "final-read", "room": "r", "error": "timeout", "time": 1.0},
          {"type": "ok", "f": "final-read", "room": "s", "ids": ["b"], "time": 1.0}]
    v = check(ev)
    assert v["valid"] == "unknown" and v["cut_short"] is False and v["unread_rooms"] == 1
    ev[-1] = {**ev[-1], "ids": []}
    v = check(ev)
    assert v["valid"] is False and v["valid_by"] == {"durability": False} and v["lost"] == 1


def test_check_has_no_process_wide_side_effects():
    import gc
    from twinsite.checker import check
    gc.enable()
    before = gc.get_threshold()
    check([{"process": 0, "type": "invoke", "f": "send", "room": "r", "id": "a", "time": 0.0}])
    assert gc.isenabled() and gc.get_threshold() == before


def test_a_damaged_sidecar_falls_back_to_the_jsonl(tmp_path):
    import os
    from twinsite.checker import check
    from twinsite.columns import sidecar_path
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    _rich_history(p)
    good = check(load_history(p, sidecar=False))
    side = sidecar_path(p)
    data = side.read_bytes()
    for damaged in (data[: len(data) // 2], b"not a zip file", data[:100]):
        side.write_bytes(damaged)
        os.utime(side, ns=(p.stat().st_mtime_ns + 1, p.stat().st_mtime_ns + 1))
        assert check(load_history(p)) == good


# --- parsing a JSONL history in two processes (load_history's parallel path) ---------------------

def _odd_history(path, bad_line: int | None = None, torn: bool = True) -> list[str]:
    """Lines of a messy history: ids, rooms and processes of every JSON scalar type (1, 1.0 and
    True intern as one value), a big int, blank lines, retries and deliveries across the middle,
    markers, a subscribe, an unknown event, final reads; optionally a bad line and a torn tail."""
    odd = ["s", 7, 2.5, True, None, 1, 1.0, "7", 2 ** 70, "é\x00"]
    lines = ['{"type":"leaders","rooms":{"r":"pangyo"},"time":0}']
    for n in range(60):
        i, room, proc = odd[n % len(odd)], odd[(n // 3) % len(odd)], odd[(n // 7) % len(odd)]
        op = {"process": proc, "f": "send", "room": room, "id": i, "seq": None, "site": "x"}
        lines.append(json.dumps({**op, "type": "invoke", "time": n}))
        lines.append(json.dumps({**op, "type": "ok" if n % 4 else "info", "time": n + 0.5, "seq": n}))
        if n % 5 == 0:
            lines += ["", json.dumps({"process": 900, "type": "ok", "f": "deliver", "room": room,
                                      "id": f"d{n}", "seq": n, "time": n + 0.6})]
        if n == 30:
            lines += ['{"type":"fault","f":"start","name":"k","time":30.1}',
                      '{"process":5,"type":"invoke","f":"subscribe","room":"r","seq":3,"time":30.2}',
                      '{"type":"what","time":30.3}', "   "]
    lines += [json.dumps({"type": "ok", "f": "final-read", "room": r, "ids": odd + ["zz"], "time": 99})
              for r in ("s", 7, "r")]
    lines.append('{"type":"fail","f":"final-read","room":"q","error":"timeout","time":99}')
    if bad_line is not None:
        lines[bad_line - 1] = '{"type": "ok", "f": '  # not valid JSON, inside the file
    path.write_text("\n".join(lines) + "\n" + ('{"process":0,"f":"send","ty' if torn else ""))
    return lines


def _same_history(a, b) -> None:
    import numpy as np
    for name in ("send", "deliver", "final", "subscribe"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert np.array_equal(ta.line, tb.line) and np.array_equal(ta.time, tb.time), name
        assert ta.cols.keys() == tb.cols.keys()
        for k in ta.cols:
            assert ta[k].dtype == tb[k].dtype, (name, k)
            assert np.array_equal(ta[k], tb[k], equal_nan=ta[k].dtype.kind == "f"), (name, k)
    assert np.array_equal(a.final_ids, b.final_ids)
    for k in ("ids", "rooms", "procs"):
        assert [(type(v), v) for v in getattr(a, k)] == [(type(v), v) for v in getattr(b, k)], k
    for k in ("marks", "unknown", "n_events", "time_min", "time_max", "torn_lines"):
        assert getattr(a, k) == getattr(b, k), k


@pytest.mark.parametrize("split_at", [0.1, 0.55, 0.9])
def test_two_process_parse_equals_the_serial_one(tmp_path, monkeypatch, split_at):
    import twinsite.history as history
    p = tmp_path / "h.jsonl"
    _odd_history(p)
    monkeypatch.setattr(history, "SPLIT_AT", split_at)
    serial = history.load_history(p, sidecar=False, parallel=False)
    assert serial.torn_lines == 1 and serial.unknown == 1 and 2 ** 70 in serial.ids
    _same_history(serial, history.load_history(p, sidecar=False, parallel=True))


def test_two_process_parse_of_a_plain_history_and_its_verdict(tmp_path):
    from twinsite.checker import check
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    _history(p, lost=True)
    serial = load_history(p, sidecar=False, parallel=False)
    parallel = load_history(p, sidecar=False, parallel=True)
    _same_history(serial, parallel)
    assert check(parallel) == check(serial) and check(serial)["lost"] == 1


@pytest.mark.parametrize("bad_line", [5, 150])
def test_two_process_parse_names_a_bad_line_by_its_number_in_the_file(tmp_path, bad_line):
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    lines = _odd_history(p, bad_line=bad_line)
    assert bad_line > len(lines) * 0.55 or bad_line < len(lines) * 0.5  # a line of each part
    with pytest.raises(HistoryError, match=f"line {bad_line}: not valid JSON") as serial:
        load_history(p, sidecar=False, parallel=False)
    with pytest.raises(HistoryError) as parallel:
        load_history(p, sidecar=False, parallel=True)
    assert str(parallel.value) == str(serial.value) and parallel.value.line == bad_line


def test_two_process_parse_raises_what_the_serial_one_raises_on_a_wrong_type(tmp_path):
    from twinsite.history import load_history
    p = tmp_path / "h.jsonl"
    lines = _odd_history(p, torn=False)
    lines[-10] = '{"process":1,"type":"ok","f":"send","room":"r","id":["a list"],"time":1}'
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(TypeError, match="unhashable"):
        load_history(p, sidecar=False, parallel=False)
    with pytest.raises(TypeError, match="unhashable"):
        load_history(p, sidecar=False, parallel=True)


def test_two_processes_only_for_a_large_file_with_a_cpu_idle(tmp_path, monkeypatch):
    import twinsite.history as history
    p = tmp_path / "h.jsonl"
    _odd_history(p)
    monkeypatch.setattr(history.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with open(p, "rb") as f:
        monkeypatch.setattr(history.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
        assert not history._parallel(f, None)  # small file
        monkeypatch.setattr(history, "PARALLEL_BYTES", 1)
        assert history._parallel(f, None)
        monkeypatch.setattr(history.os, "getloadavg", lambda: (1.5, 1.5, 1.5))
        assert not history._parallel(f, None)  # no CPU idle: the worker would not be faster
        assert history._parallel(f, True) and not history._parallel(f, False)
