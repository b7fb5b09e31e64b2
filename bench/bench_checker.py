"""`twinsite check` speed on synthetic histories of 250k and 1M operations (each an invoke and an ok,
~2% with a timed-out first attempt and a retry), 64 rooms, 2 subscribers per room on 8 rooms, one
fault window. The history is written by the real HistoryWriter (JSONL + column sidecar), then
`twinsite check` runs as a subprocess, end to end, once reading the sidecar and once the JSONL
only (`--no-sidecar`, the case of an interrupted run: no sidecar). Wall time and CPU are those of
that process and its parse worker (os.wait4 counts reaped children); peak RSS is the largest
single process (ru_maxrss) and, sampled every 20 ms, the sum over the process and its worker.
Goals (issue 15): 1M operations <= 10 s end to end; 250k -> 1M within 4.5x; peak RSS <= 1 GiB."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time

from twinsite.history import HistoryWriter

GOAL_S, GOAL_RATIO, GOAL_RSS_MIB = 10.0, 4.5, 1024.0


def synthetic(n_ops: int, rooms: int = 64, seed: int = 1):
    """The events of a clean run, in time order (a generator: the bench never holds them all)."""
    rnd = random.Random(seed)
    stored: dict[str, list[str]] = {}
    seqs: dict[str, int] = {}
    rate = 1000.0
    room_names = [f"room{r}" for r in range(rooms)]
    fault_at, fault_end = n_ops / rate * 0.4, n_ops / rate * 0.5
    faulted = ended = False
    yield {"type": "leaders", "rooms": {r: ("pangyo", "ansan")[k % 2] for k, r in enumerate(room_names)},
           "time": 0.0}
    for n in range(n_ops):
        t = n / rate
        if not faulted and t >= fault_at:
            yield {"type": "fault", "f": "start", "name": "kill", "time": t}
            faulted = True
        if not ended and t >= fault_end:
            yield {"type": "fault", "f": "stop", "name": "kill", "time": t}
            ended = True
        room = room_names[n % rooms]
        i = f"m{n}"
        p = n % 16
        base = {"process": p, "f": "send", "room": room, "id": i, "site": "pangyo", "error": None}
        yield {**base, "type": "invoke", "time": t, "seq": None}
        if rnd.random() < 0.02:
            yield {**base, "type": "info", "time": t + 0.0005, "seq": None, "error": "timeout"}
            yield {**base, "type": "invoke", "time": t + 0.0005, "seq": None, "site": "ansan"}
        s = seqs[room] = seqs.get(room, 0) + 1
        stored.setdefault(room, []).append(i)
        yield {**base, "type": "ok", "time": t + 0.0008, "seq": s}
        if n % rooms < 8:
            for sub in (1000 + n % rooms, 2000 + n % rooms):
                yield {"process": sub, "type": "ok", "f": "deliver", "room": room, "id": i,
                       "seq": s, "time": t + 0.0009}
    end = n_ops / rate + 2
    for room in room_names:
        yield {"type": "ok", "f": "final-read", "room": room, "ids": stored.get(room, []), "time": end}


def write_history(path: str, n_ops: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    w = HistoryWriter(path, t0=0.0)
    n = 0
    for e in synthetic(n_ops):
        w.write(e)
        n += 1
    w.close()
    return time.perf_counter() - t0, n


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (Linux /proc; 0 elsewhere)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total / 1024.0


def run_check(path: str, *extra: str) -> tuple[float, float, float, float, int]:
    """Wall seconds, CPU seconds (user + system, with the parse worker's: less sensitive to a
    loaded machine), peak RSS of one process and of the process tree (MiB) and exit code of
    `twinsite check PATH` in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "twinsite.cli", "check", path, "--json", *extra],
                            stdout=subprocess.DEVNULL)
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0,
            peak[0], proc.returncode)


def _goal(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(wall times are only comparable on an idle machine)", flush=True)
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-checker-") as d:
        for n in (250_000, 1_000_000):
            path = os.path.join(d, f"h{n}.jsonl")
            t_write, n_events = write_history(path, n)
            size = os.path.getsize(path) / 1e6
            side = os.path.getsize(path + ".cols.npz") / 1e6
            for mode, extra in (("sidecar", ()), ("jsonl", ("--no-sidecar",))):
                secs, cpu, rss, tree, rc = run_check(path, *extra)
                assert rc == 0, f"twinsite check exited {rc}"
                res[n, mode] = (secs, cpu, max(rss, tree))
                print(f"checker: {n:>9,} ops ({n_events:,} events, {size:.0f} MB JSONL, {side:.0f} MB "
                      f"sidecar, written in {t_write:.1f} s): `twinsite check` {mode:<7} "
                      f"{secs:6.2f} s wall, {cpu:6.2f} s CPU, peak RSS {rss:6.0f} MiB "
                      f"(process tree {tree:.0f} MiB), load {os.getloadavg()[0]:.1f}", flush=True)
            os.remove(path)
            os.remove(path + ".cols.npz")
    for mode in ("jsonl", "sidecar"):
        secs, cpu, rss = res[1_000_000, mode]
        ratio = secs / res[250_000, mode][0]
        cpu_ratio = cpu / res[250_000, mode][1]
        print(f"checker [{mode}]: 1M ops {secs:.2f} s wall / {cpu:.2f} s CPU (goal <= {GOAL_S:.0f} s: "
              f"{_goal(secs <= GOAL_S)}); 250k -> 1M {ratio:.2f}x wall / {cpu_ratio:.2f}x CPU "
              f"(goal <= {GOAL_RATIO}x: {_goal(ratio <= GOAL_RATIO)}); "
              f"peak RSS {rss:.0f} MiB (goal <= {GOAL_RSS_MIB:.0f} MiB: {_goal(rss <= GOAL_RSS_MIB)})",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
