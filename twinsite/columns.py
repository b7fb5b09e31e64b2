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
import zipfile
from array import array
from itertools import count, repeat
from operator import attrgetter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
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


class Event(msgspec.Struct, gc=False):
    """The fields of a history line that the checker reads (others are skipped while parsing).
    Not tracked by the cyclic GC: millions of them must not make collections superlinear."""
    f: Any = None
    type: Any = None
    id: Any = None
    room: Any = None
    process: Any = None
    time: Any = 0.0
    seq: Any = None
    ids: Any = None
    name: Any = None
    rooms: Any = None


MARK_FIELDS = ("type", "f", "name", "rooms", "time")
_TIME, _F, _ID, _ROOM, _PROC, _SEQ, _TYPE = map(attrgetter, ("time", "f", "id", "room", "process",
                                                             "seq", "type"))
F_CODES = {"send": 1, "deliver": 2, "final-read": 3, "subscribe": 4}


def as_event(e: dict) -> Event:
    g = e.get
    return Event(g("f"), g("type"), g("id"), g("room"), g("process"), g("time", 0.0), g("seq"),
                 g("ids"), g("name"), g("rooms"))


class Names:
    """Interns the ids (rooms, processes) of a history in order of first appearance.

    `codes` gives each value the number of values interned before its first occurrence: one
    C-level `dict.setdefault(value, next(counter))` per value, no Python-level loop (measured
    10-15% faster than the loop `setdefault(v, len(table))` on 1.2M ids; what remains is hashing
    and a dict of a million ids, a third of parsing a JSONL history). Codes are then unique per
    value but sparse; `dense()` maps them to 0..len-1, applied once when the columns are finished.
    Values are compared as dict keys (so 1, 1.0 and True are one value), as before."""

    def __init__(self):
        self.table: dict = {}
        self.seen = 0

    def codes(self, values, n: int | None = None) -> np.ndarray:
        """Codes of `values` (a list, or an iterable of `n` values)."""
        n = len(values) if n is None else n
        out = np.fromiter(map(self.table.setdefault, values, count(self.seen)), dtype=np.int64,
                          count=n)
        self.seen += n
        return out

    def dense(self) -> np.ndarray:
        """A lookup array: sparse code -> index of the value in `names()`."""
        lut = np.zeros(self.seen, dtype=np.int64)
        lut[np.fromiter(self.table.values(), dtype=np.int64, count=len(self.table))] = \
            np.arange(len(self.table))
        return lut

    def names(self) -> list:
        return list(self.table)


class ColumnBuilder:
    """Accumulates blocks of events into columns (numpy chunks, concatenated at finish)."""

    def __init__(self):
        self._ids = Names()
        self._rooms = Names()
        self._procs = Names()
        self.n = 0
        self.unknown = 0
        self.tmin = math.inf
        self.tmax = -math.inf
        self.marks: list[dict] = []
        self._chunks: dict[str, list] = {}
        self.fr_ids: list[np.ndarray] = []
        self._n_fr_ids = 0

    def _put(self, table: str, **cols) -> None:
        for k, v in cols.items():
            self._chunks.setdefault(f"{table}.{k}", []).append(v)

    @staticmethod
    def _seqs(values: list) -> np.ndarray:
        return np.array(values, dtype=np.float64)  # None -> NaN

    def add(self, e: dict) -> None:
        """Add one event dict (prefer add_block: per-call overhead is that of a small block)."""
        self.add_block([as_event(e)])

    def add_block(self, evs: list[Event]) -> None:
        """Add events in file order. TypeError/ValueError on wrongly typed fields (a list id)."""
        if not evs:
            return
        base = self.n
        self.n += len(evs)
        t = np.frombuffer(array("d", map(_TIME, evs)))  # array(): no silent str -> float
        self.tmin = min(self.tmin, float(t.min()))
        self.tmax = max(self.tmax, float(t.max()))
        code = np.fromiter(map(F_CODES.get, map(_F, evs), repeat(0)), dtype=np.int8, count=len(evs))
        common = (code == 1) | (code == 2)  # sends and deliveries: nearly all
        start = 0  # names are interned in file order, whatever the blocks: final reads and
        for stop in [*np.flatnonzero(code >= 3).tolist(), len(evs)]:  # subscribes cut the rest
            rows = np.flatnonzero(common[start:stop]) + start
            if len(rows):
                self._add_common(evs, rows, code[rows] == 1, base, t[rows])
            if stop < len(evs):
                self._add_rare(evs[stop], base + stop, float(t[stop]), int(code[stop]))
            start = stop + 1
        for k in np.flatnonzero(code == 0).tolist():  # markers, unknown events: no names
            self._add_rare(evs[k], base + k, float(t[k]), 0)

    def _add_common(self, evs: list[Event], rows, is_send, base: int, t) -> None:
        """Sends and deliveries share id, room, process and seq: each is read and interned once
        for both (in file order), then split into the two tables."""
        sub = evs if len(rows) == len(evs) else list(map(evs.__getitem__, rows.tolist()))
        cols = {"line": rows + base, "time": t,
                "id": self._ids.codes(map(_ID, sub), len(sub)),
                "room": self._rooms.codes(map(_ROOM, sub), len(sub)),
                "proc": self._procs.codes(map(_PROC, sub), len(sub)),
                "seq": self._seqs(list(map(_SEQ, sub)))}
        sends = sub if is_send.all() else list(map(sub.__getitem__, np.flatnonzero(is_send).tolist()))
        kind = np.fromiter(map(KINDS.get, map(_TYPE, sends), repeat(OTHER)), dtype=np.int8,
                           count=len(sends))  # the type of a send only: a delivery's is not read
        for table, mask in (("send", is_send), ("deliver", ~is_send)):
            if mask.any():
                part = {k: v[mask] for k, v in cols.items()}
                self._put(table, **part, **({"kind": kind} if table == "send" else {}))

    def _add_rare(self, e: Event, line: int, t: float, code: int) -> None:
        if code == 3:
            ok = e.type == "ok"
            ids = self._ids.codes(list(e.ids or ())) if ok else np.zeros(0, dtype=np.int64)
            start = self._n_fr_ids
            self.fr_ids.append(ids)
            self._n_fr_ids += len(ids)
            self._put("final", line=np.array([line]), time=np.array([t]),
                      room=self._rooms.codes([e.room]), ok=np.array([ok]),
                      start=np.array([start]), stop=np.array([self._n_fr_ids]))
        elif code == 4:
            self._put("subscribe", line=np.array([line]), time=np.array([t]),
                      room=self._rooms.codes([e.room]), proc=self._procs.codes([e.process]),
                      seq=np.array([float(e.seq or 0)]))
        elif e.type in ("fault", "leaders"):
            mark = {k: getattr(e, k) for k in MARK_FIELDS if getattr(e, k) is not None}
            self.marks.append({**mark, "time": t, "line": line})
        else:
            self.unknown += 1

    def extend(self, h: History) -> None:
        """Append a History's events as if added after those so far (the later part of a file
        parsed by another process): its names are interned here and its codes remapped."""
        codes = {k: names.codes(values, len(values)) for k, names, values in (
            ("id", self._ids, h.ids), ("room", self._rooms, h.rooms), ("proc", self._procs, h.procs))}
        base, fr_base = self.n, self._n_fr_ids
        for name in ("send", "deliver", "final", "subscribe"):
            t = getattr(h, name)
            if not len(t):
                continue
            cols = {k: codes[k][v] if k in codes else v for k, v in t.cols.items()}
            if name == "final":
                cols["start"], cols["stop"] = cols["start"] + fr_base, cols["stop"] + fr_base
            self._put(name, line=t.line + base, time=t.time, **cols)
        self.fr_ids.append(codes["id"][h.final_ids])
        self._n_fr_ids += len(h.final_ids)
        self.marks.extend({**m, "line": m["line"] + base} for m in h.marks)
        self.unknown += h.unknown
        self.n += h.n_events
        if h.n_events:
            self.tmin, self.tmax = min(self.tmin, h.time_min), max(self.tmax, h.time_max)

    def finish(self, torn_lines: int = 0) -> History:
        kinds = {"line": np.int64, "time": np.float64, "kind": np.int8, "id": np.int64,
                 "room": np.int64, "proc": np.int64, "seq": np.float64, "ok": bool,
                 "start": np.int64, "stop": np.int64}
        names = {"send": ("kind", "id", "room", "proc", "seq"),
                 "deliver": ("id", "room", "proc", "seq"),
                 "final": ("room", "ok", "start", "stop"), "subscribe": ("room", "proc", "seq")}

        dense = {"id": self._ids.dense(), "room": self._rooms.dense(), "proc": self._procs.dense()}

        def table(name: str) -> Table:
            def col(k):
                parts = self._chunks.get(f"{name}.{k}")
                v = np.concatenate(parts).astype(kinds[k], copy=False) if parts else np.zeros(0, kinds[k])
                return dense[k][v] if k in dense else v
            return Table(col("line"), col("time"), {k: col(k) for k in names[name]})

        return History(
            send=table("send"), deliver=table("deliver"), final=table("final"),
            final_ids=dense["id"][np.concatenate(self.fr_ids)] if self.fr_ids else np.zeros(0, np.int64),
            subscribe=table("subscribe"),
            ids=self._ids.names(), rooms=self._rooms.names(), procs=self._procs.names(),
            marks=tuple(self.marks), unknown=self.unknown, n_events=self.n,
            time_min=self.tmin if self.n else 0.0, time_max=self.tmax if self.n else 0.0,
            torn_lines=torn_lines)


BLOCK = 8192


def from_events(events, torn_lines: int = 0) -> History:
    """Columns of an iterable of event dicts (a History passes through unchanged)."""
    if isinstance(events, History):
        return events
    b = ColumnBuilder()
    block: list[Event] = []
    for e in events:
        block.append(as_event(e))
        if len(block) >= BLOCK:
            b.add_block(block)
            block = []
    b.add_block(block)
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


TABLE_COLS = {"send": ("kind", "id", "room", "proc", "seq"), "deliver": ("id", "room", "proc", "seq"),
              "final": ("room", "ok", "start", "stop"), "subscribe": ("room", "proc", "seq")}


def load_sidecar(path) -> History | None:
    """The sidecar's columns if it exists, is consistent, and matches the JSONL file (same size,
    not modified after the sidecar was written); else None (the caller parses the JSONL)."""
    target = sidecar_path(path)
    try:
        st, st_side = os.stat(path), os.stat(target)
        if st.st_mtime_ns > st_side.st_mtime_ns:
            return None
        with np.load(target, allow_pickle=False) as z:
            meta = z["meta"]
            if int(meta[0]) != SIDECAR_VERSION or int(meta[1]) != st.st_size:
                return None
            data = {k: z[k] for k in z.files}
        h = _from_arrays(data, meta)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return h if _consistent(h) else None


def _from_arrays(data: dict, meta) -> History:
    def table(name: str) -> Table:
        return Table(data[f"{name}.line"], data[f"{name}.time"],
                     {k: data[f"{name}.{k}"] for k in TABLE_COLS[name]})

    return History(
        send=table("send"), deliver=table("deliver"), final=table("final"),
        final_ids=data["final_ids"], subscribe=table("subscribe"),
        ids=data["ids"], rooms=data["rooms"].tolist(), procs=data["procs"].tolist(),
        marks=tuple(json.loads(str(data["marks"]))), unknown=int(meta[3]), n_events=int(meta[2]),
        time_min=float(data["trange"][0]), time_max=float(data["trange"][1]))


def _consistent(h: History) -> bool:
    """Equal column lengths and every interned index in range (a damaged file is not trusted)."""
    bounds = {"id": len(h.ids), "room": len(h.rooms), "proc": len(h.procs)}
    for t in (h.send, h.deliver, h.final, h.subscribe):
        n = len(t.line)
        if len(t.time) != n or any(len(v) != n for v in t.cols.values()):
            return False
        for k, hi in bounds.items():
            v = t.cols.get(k)
            if v is not None and len(v) and (v.min() < 0 or v.max() >= hi):
                return False
    f = h.final
    if len(f.line) and (f["start"].min() < 0 or f["stop"].max() > len(h.final_ids)):
        return False
    ids = h.final_ids
    return not len(ids) or (ids.min() >= 0 and ids.max() < len(h.ids))
