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
