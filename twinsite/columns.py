"""A history as columns: the checker's input, built from event dicts or loaded from a sidecar.

Why: a million-operation run is ~2.3M events; as Python dicts it costs ~2 GiB and a pure-Python
pass over it ~5 s. As a few numpy arrays per event kind (send, deliver, final read, subscribe)
it is ~100 MB, and the checks are vectorized. The writer builds the same columns while it
writes the JSONL and saves them at close as `<history>.cols.npz` beside it; JSONL stays the
readable record and the source of truth (the sidecar is used only while it matches the JSONL's
size, and only when every id and room is a string and every process an integer).

Ids, rooms and processes are interned: columns hold small integers, `ids`/`rooms`/`procs` map
them back to the values of the history. `line` is each event's index in the file, so the checker
can restore the time order of the history (stable: equal times keep file order).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIDECAR_SUFFIX = ".cols.npz"
SIDECAR_VERSION = 1

# kinds of a send event
INVOKE, OK, FAIL, INFO, OTHER = 0, 1, 2, 3, 4
KINDS = {"invoke": INVOKE, "ok": OK, "fail": FAIL, "info": INFO}
NAN = math.nan


@dataclass(frozen=True, eq=False)
class Table:
    """One event kind's columns (equal-length numpy arrays)."""
    line: np.ndarray
    time: np.ndarray
    cols: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def __len__(self) -> int:
        return len(self.line)


@dataclass(frozen=True, eq=False)
class History:
    """A run's events as columns (see module doc). `marks` keeps the few marker events as dicts."""
    send: Table       # kind, id, room, proc, seq (NaN = none)
    deliver: Table    # id, room, proc, seq (NaN = none)
    final: Table      # room, ok (bool), start, stop (slice of final_ids)
    final_ids: np.ndarray
    subscribe: Table  # room, proc, seq (the `after` seq; none -> 0)
    ids: list
    rooms: list
    procs: list
    marks: tuple = ()          # fault and leaders events (dicts with "line"), file order
    unknown: int = 0           # events of no known kind
    n_events: int = 0
    time_min: float = 0.0
    time_max: float = 0.0
    torn_lines: int = 0        # a torn last line dropped by the reader (an interrupted run)


class ColumnBuilder:
    """Accumulates events into columns (typed arrays, not lists of objects: ~8 bytes a value)."""

    def __init__(self):
        self._ids: dict = {}
        self._rooms: dict = {}
        self._procs: dict = {}
        self.n = 0
        self.unknown = 0
        self.tmin = math.inf
        self.tmax = -math.inf
        self.marks: list[dict] = []
        self.s = {k: array(c) for k, c in (("line", "q"), ("time", "d"), ("kind", "b"),
                                            ("id", "q"), ("room", "q"), ("proc", "q"), ("seq", "d"))}
        self.d = {k: array(c) for k, c in (("line", "q"), ("time", "d"), ("id", "q"), ("room", "q"),
                                            ("proc", "q"), ("seq", "d"))}
        self.fr = {k: array(c) for k, c in (("line", "q"), ("time", "d"), ("room", "q"), ("ok", "b"),
                                             ("start", "q"), ("stop", "q"))}
        self.fr_ids = array("q")
        self.sub = {k: array(c) for k, c in (("line", "q"), ("time", "d"), ("room", "q"),
                                              ("proc", "q"), ("seq", "d"))}

    @staticmethod
    def _intern(table: dict, value) -> int:
        k = table.get(value)
        if k is None:
            k = table[value] = len(table)
        return k

    def add(self, e: dict) -> None:
        """Add one event. Raises TypeError/ValueError on wrongly typed fields (e.g. a list id)."""
        line = self.n
        self.n += 1
        t = e.get("time", 0.0)
        t = float(t)
        if t < self.tmin:
            self.tmin = t
        if t > self.tmax:
            self.tmax = t
        f = e.get("f")
        if f == "send":
            s = self.s
            seq = e.get("seq")
            s["line"].append(line)
            s["time"].append(t)
            s["kind"].append(KINDS.get(e.get("type"), OTHER))
            s["id"].append(self._intern(self._ids, e.get("id")))
            s["room"].append(self._intern(self._rooms, e.get("room")))
            s["proc"].append(self._intern(self._procs, e.get("process")))
            s["seq"].append(NAN if seq is None else float(seq))
        elif f == "deliver":
            d = self.d
            seq = e.get("seq")
            d["line"].append(line)
            d["time"].append(t)
            d["id"].append(self._intern(self._ids, e.get("id")))
            d["room"].append(self._intern(self._rooms, e.get("room")))
            d["proc"].append(self._intern(self._procs, e.get("process")))
            d["seq"].append(NAN if seq is None else float(seq))
        elif f == "final-read":
            fr = self.fr
            ok = e.get("type") == "ok"
            fr["line"].append(line)
            fr["time"].append(t)
            fr["room"].append(self._intern(self._rooms, e.get("room")))
            fr["ok"].append(ok)
            fr["start"].append(len(self.fr_ids))
            if ok:
                ids, ii = self._ids, self._intern
                self.fr_ids.extend([ii(ids, i) for i in (e.get("ids") or ())])
            fr["stop"].append(len(self.fr_ids))
        elif f == "subscribe":
            sub = self.sub
            sub["line"].append(line)
            sub["time"].append(t)
            sub["room"].append(self._intern(self._rooms, e.get("room")))
            sub["proc"].append(self._intern(self._procs, e.get("process")))
            sub["seq"].append(float(e.get("seq") or 0))
        elif e.get("type") in ("fault", "leaders"):
            self.marks.append({**e, "line": line, "time": t})
        else:
            self.unknown += 1

    def finish(self, torn_lines: int = 0) -> History:
        def table(cols: dict) -> Table:
            arrs = {k: np.frombuffer(v, dtype=v.typecode if v.typecode != "b" else np.int8).copy()
                    if len(v) else np.zeros(0, dtype=v.typecode if v.typecode != "b" else np.int8)
                    for k, v in cols.items()}
            line, time = arrs.pop("line"), arrs.pop("time")
            return Table(line, time, arrs)

        fr = table(self.fr)
        fr.cols["ok"] = fr.cols["ok"].astype(bool)
        return History(
            send=table(self.s), deliver=table(self.d), final=fr,
            final_ids=np.array(self.fr_ids, dtype=np.int64), subscribe=table(self.sub),
            ids=list(self._ids), rooms=list(self._rooms), procs=list(self._procs),
            marks=tuple(self.marks), unknown=self.unknown, n_events=self.n,
            time_min=self.tmin if self.n else 0.0, time_max=self.tmax if self.n else 0.0,
            torn_lines=torn_lines)


def from_events(events, torn_lines: int = 0) -> History:
    """Columns of an iterable of event dicts (a History passes through unchanged)."""
    if isinstance(events, History):
        return events
    b = ColumnBuilder()
    add = b.add
    for e in events:
        add(e)
    return b.finish(torn_lines)


# --- the sidecar -------------------------------------------------------------------------------

def sidecar_path(path) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def _names(values: list):
    """A names list as a numpy array, or None when it is not all-str or all-int."""
    if all(type(v) is str for v in values):
        return np.array(values, dtype=str) if values else np.zeros(0, dtype="U1")
    if all(type(v) is int for v in values):
        return np.array(values, dtype=np.int64)
    return None


def save_sidecar(h: History, path, jsonl_size: int) -> bool:
    """Write `<path>.cols.npz` for history file `path` of `jsonl_size` bytes; False if not storable."""
    names = {k: _names(v) for k, v in (("ids", h.ids), ("rooms", h.rooms), ("procs", h.procs))}
    if any(v is None for v in names.values()):
        return False
    try:
        marks = json.dumps(list(h.marks))
    except (TypeError, ValueError):
        return False
    arrays = {"meta": np.array([SIDECAR_VERSION, jsonl_size, h.n_events, h.unknown], dtype=np.int64),
              "trange": np.array([h.time_min, h.time_max]), "final_ids": h.final_ids, **names,
              "marks": np.array(marks)}
    for tname in ("send", "deliver", "final", "subscribe"):
        t = getattr(h, tname)
        arrays[f"{tname}.line"], arrays[f"{tname}.time"] = t.line, t.time
        for k, v in t.cols.items():
            arrays[f"{tname}.{k}"] = v
    target = sidecar_path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, target)
    return True


def load_sidecar(path) -> History | None:
    """The sidecar's columns if it exists and matches the JSONL file's size, else None."""
    target = sidecar_path(path)
    try:
        size = os.path.getsize(path)
        with np.load(target, allow_pickle=False) as z:
            meta = z["meta"]
            if int(meta[0]) != SIDECAR_VERSION or int(meta[1]) != size:
                return None
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None

    def table(name: str) -> Table:
        prefix = name + "."
        cols = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
        return Table(cols.pop("line"), cols.pop("time"), cols)

    return History(
        send=table("send"), deliver=table("deliver"), final=table("final"),
        final_ids=data["final_ids"], subscribe=table("subscribe"),
        ids=data["ids"], rooms=data["rooms"].tolist(), procs=data["procs"].tolist(),
        marks=tuple(json.loads(str(data["marks"]))), unknown=int(meta[3]), n_events=int(meta[2]),
        time_min=float(data["trange"][0]), time_max=float(data["trange"][1]))
