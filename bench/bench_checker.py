"""Checker speed on synthetic histories: 250k and 1M operations (each an invoke and an ok, ~2% with a
timed-out first attempt and a retry), 64 rooms, 2 subscribers per room on 8 rooms, one fault window.
Goal (issue 4): 1,000,000 operations in <= 10 s, linear in size."""

from __future__ import annotations

import gc
import os
import random
import tempfile
import time

from twinsite.checker import check
from twinsite.history import HistoryWriter, read_history


def synthetic(n_ops: int, rooms: int = 64, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    ev: list[dict] = []
    stored: dict[str, list[str]] = {}
    seqs: dict[str, int] = {}
    rate = 1000.0
    room_names = [f"room{r}" for r in range(rooms)]
    fault_at, fault_end = n_ops / rate * 0.4, n_ops / rate * 0.5
    faulted = ended = False
    for n in range(n_ops):
        t = n / rate
        if not faulted and t >= fault_at:
            ev.append({"type": "fault", "f": "start", "name": "kill", "time": t})
            faulted = True
        if not ended and t >= fault_end:
            ev.append({"type": "fault", "f": "stop", "name": "kill", "time": t})
            ended = True
        room = room_names[n % rooms]
        i = f"m{n}"
        p = n % 16
        base = {"process": p, "f": "send", "room": room, "id": i, "site": "pangyo", "error": None}
        ev.append({**base, "type": "invoke", "time": t, "seq": None})
        if rnd.random() < 0.02:
            ev.append({**base, "type": "info", "time": t + 0.0005, "seq": None, "error": "timeout"})
            ev.append({**base, "type": "invoke", "time": t + 0.0005, "seq": None, "site": "ansan"})
        s = seqs[room] = seqs.get(room, 0) + 1
        stored.setdefault(room, []).append(i)
        ev.append({**base, "type": "ok", "time": t + 0.0008, "seq": s})
        if n % rooms < 8:
            for sub in (1000 + n % rooms, 2000 + n % rooms):
                ev.append({"process": sub, "type": "ok", "f": "deliver", "room": room, "id": i,
                           "seq": s, "time": t + 0.0009})
    end = n_ops / rate + 2
    for room in room_names:
        ev.append({"type": "ok", "f": "final-read", "room": room, "ids": stored.get(room, []),
                   "time": end})
    return ev


def timed_check(events) -> tuple[float, dict]:
    gc.collect()
    t0 = time.perf_counter()
    v = check(events)
    return time.perf_counter() - t0, v


def main() -> None:
    results = {}
    for n in (250_000, 1_000_000):
        events = synthetic(n)
        secs, v = timed_check(events)
        assert v["valid"] and v["acked"] == n, v
        results[n] = secs
        print(f"checker: {n:>9,} ops ({len(events):>9,} events): {secs:6.2f} s "
              f"({n / secs:,.0f} ops/s)  valid={v['valid']}", flush=True)
        if n == 1_000_000:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "h.jsonl")
                w = HistoryWriter(path, t0=0.0)
                t0 = time.perf_counter()
                for e in events:
                    w.write(e)
                w.close()
                t_write = time.perf_counter() - t0
                del events
                gc.collect()
                t0 = time.perf_counter()
                events = read_history(path)
                t_read = time.perf_counter() - t0
                size = os.path.getsize(path) / 1e6
            print(f"history file: write {t_write:.2f} s, read {t_read:.2f} s ({size:.0f} MB); "
                  f"`twinsite check` on 1M ops ~ {t_read + secs:.1f} s", flush=True)
        del events
        gc.collect()
    ratio = results[1_000_000] / results[250_000]
    print(f"scaling 250k -> 1M (4x ops): {ratio:.2f}x time (linear = 4.0x); "
          f"goal 1M <= 10 s: {'met' if results[1_000_000] <= 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
