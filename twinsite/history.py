"""The history of a run: JSON Lines, one event per line (the contract between driver, chaos and checker).

Event shapes (all `time` values are seconds since the run's start, from a monotonic clock):

- operation attempts, one `invoke` then one completion per attempt, paired by (process, id):
  {"process": int, "type": "invoke"|"ok"|"fail"|"info", "f": "send", "room": str, "id": str,
   "time": float, "site": str|null, "seq": int|null, "error": str|null}
  `ok` = acknowledged; `fail` = certainly not written; `info` = outcome unknown.
- a subscriber starting to follow a room (from after `seq`):
  {"process": int, "type": "invoke", "f": "subscribe", "room": str, "seq": int, "time": float}
- deliveries seen by subscribers:
  {"process": int, "type": "ok", "f": "deliver", "room": str, "id": str, "seq": int, "time": float}
- fault markers: {"type": "fault", "f": "start"|"stop", "name": str, "time": float}
- which site led each room's shard: {"type": "leaders", "rooms": {room: site}, "time": float}
  (recorded before the fault; the checker splits per-room figures by the marker in force when the
  first fault began, see `leader_sites`)
- the final read, one per room: {"type": "ok", "f": "final-read", "room": str, "ids": [...], "time": float}
  (a room that could not be read back before the timeout gets
  {"type": "fail", "f": "final-read", "room": str, "error": str, "time": float}: the checker then
  reports it in `unread_rooms` instead of guessing)

Hand-written (no library): it is a few lines of json + a lock, and the format is ours. Reading
uses msgspec, block by block, into typed structs holding only the fields the checker reads (a
million-operation history is ~300 MB). Besides the JSONL the writer saves the same events as
columns (`<file>.cols.npz`, see `twinsite.columns`) when it closes; `load_history` uses them while
they match the file, else parses the JSONL (an interrupted run has no sidecar).

Parsing the JSONL is CPU-bound: per event a msgspec decode, then interning ids, rooms and
processes into numpy columns (`twinsite.columns.Names`: C-level, no per-event Python loop). A
large file, on a machine with a CPU idle, is split at a newline and its second part parsed in a
worker process (fork when this process has one thread, else spawn: `multiprocessing`, no
dependency); its columns are merged in file order by `ColumnBuilder.extend`, so the result is
exactly the serial one (tests/test_history.py). The splitting, the block reader and the bad-line
numbering are hand-written because they must keep the reader's contract: a torn last line
dropped and counted, any other bad line a HistoryError naming its line in the whole file. No
library parses JSON Lines into columns with that contract (pyarrow/polars read JSON into
columns, but without line numbers or the torn-tail rule, and would be a large dependency for
one reader).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import threading
import time
from pathlib import Path

import msgspec

from .columns import ColumnBuilder, Event, History, as_event, load_sidecar, save_sidecar

logger = logging.getLogger(__name__)
CHUNK_BYTES = 8 << 20
# the writer adds events to its columns in blocks this small so that the pause it adds to the
# caller's thread (the driver's event loop) stays around a millisecond
WRITER_BLOCK = 1024


class HistoryError(ValueError):
    """An unreadable history file: the message is one line naming the file and line (`line`, its
    number, when one line is at fault)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line

    def __reduce__(self):  # raised in a worker process: pickled back with its line
        return type(self), (str(self), self.line)


class HistoryWriter:
    """Thread-safe append-only JSONL writer; every line is flushed so a crash keeps what was written."""

    def __init__(self, path, t0: float | None = None, *, keep: bool = False, columns: bool = True):
        """`keep=True` also keeps every event in memory for `events()` (a verdict mid-run);
        `columns=True` builds the columnar sidecar saved at `close()` (not when appending to a
        file that already has lines: the sidecar would describe only part of it)."""
        self.path = Path(path)
        self._kept: list[dict] | None = [] if keep else None
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic() if t0 is None else float(t0)
        self._lock = threading.Lock()
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._columns: ColumnBuilder | None = ColumnBuilder() if columns and fresh else None
        self._pending: list[Event] = []
        self._f = open(self.path, "a", encoding="utf-8", buffering=1)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def write(self, event: dict) -> None:
        with self._lock:
            if self._f is None:
                return  # closed: late completions after stop() are dropped, never raise
            if "time" not in event:
                event = {**event, "time": round(self.now(), 6)}  # stamped under the lock: file order
            self._f.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._f.flush()
            if self._kept is not None:
                self._kept.append(event)
            if self._columns is not None:
                self._pending.append(as_event(event))
                if len(self._pending) >= WRITER_BLOCK:
                    self._flush_columns()

    def _flush_columns(self) -> None:
        try:
            self._columns.add_block(self._pending)
        except (TypeError, ValueError):  # not storable as columns: JSONL only
            self._columns = None
        self._pending = []

    def events(self) -> list[dict]:
        """A snapshot of the events written so far (requires keep=True, else read the file)."""
        with self._lock:
            if self._kept is not None:
                return list(self._kept)
        return read_history(self.path)

    def fault(self, name: str, phase: str) -> None:
        if phase not in ("start", "stop"):
            raise ValueError(f"fault phase must be 'start' or 'stop', got {phase!r}")
        self.write({"type": "fault", "f": phase, "name": str(name)})

    def leaders(self, rooms: dict) -> None:
        """Record which site leads each room's shard ({room: site}), e.g. just before a fault."""
        self.write({"type": "leaders", "rooms": {str(r): str(s) for r, s in dict(rooms).items()}})

    @property
    def closed(self) -> bool:
        return self._f is None

    def close(self) -> None:
        with self._lock:
            if self._f is None:
                return
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            if self._columns is not None:
                self._flush_columns()
            builder, self._columns = self._columns, None
        if builder is not None:
            try:
                save_sidecar(builder.finish(), self.path, self.path.stat().st_size)
            except (OSError, ValueError, TypeError) as e:  # the JSONL is the record; no sidecar
                logger.warning(f"twinsite history: no column sidecar for {self.path}: {e}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_TYPED = msgspec.json.Decoder(list[Event])
_DICTS = msgspec.json.Decoder(list[dict])
_ANY = msgspec.json.Decoder()


def _parse_block(block: bytes, n_lines: int, first_line: int, name: str, decoder) -> list:
    """Events of a block of `n_lines` complete lines without its last newline (numbered from
    first_line + 1); HistoryError names a bad line."""
    try:  # fast path: one C-level parse of the whole block as one JSON array
        events = decoder.decode(b"[" + block.replace(b"\n", b",") + b"]")
        if len(events) == n_lines:
            return events
    except msgspec.DecodeError:
        pass
    events = []
    for n, line in enumerate(block.split(b"\n"), first_line + 1):  # slow path: skip blanks, name the bad line
        if not line.strip():
            continue
        try:
            ev = _ANY.decode(line)
        except msgspec.DecodeError:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise HistoryError(f"{name}: line {n}: not UTF-8 text", n) from None
            raise HistoryError(f"{name}: line {n}: not valid JSON", n) from None
        if not isinstance(ev, dict):
            raise HistoryError(f"{name}: line {n}: expected a JSON object", n)
        events.extend(decoder.decode(b"[" + line + b"]"))
    return events


def _read(f, stop: int | None) -> bytes:
    """The next chunk of `f`, not reading past offset `stop` (None: to the end)."""
    if stop is None:
        return f.read(CHUNK_BYTES)
    return f.read(max(0, min(CHUNK_BYTES, stop - f.tell())))


def iter_blocks(f, name: str = "history", decoder=_DICTS, stop: int | None = None):
    """Yield lists of events from a binary file, block by block, from its position up to offset
    `stop` (None: the end); the last item yielded is the number of torn lines (0 or 1: an
    unparsable last line without a newline, dropped)."""
    rest = b""
    lineno = 0
    while True:
        block = _read(f, stop)
        if not block:
            break
        block = rest + block if rest else block
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        rest = block[cut + 1:]
        n_lines = block.count(b"\n", 0, cut) + 1
        yield _parse_block(block[:cut], n_lines, lineno, name, decoder)
        lineno += n_lines
    torn = 0
    if rest.strip():
        try:
            _ANY.decode(rest)
        except msgspec.DecodeError:
            torn = 1  # torn tail of a crashed or interrupted writer
        else:
            yield _parse_block(rest, 1, lineno, name, decoder)
    yield torn


def parse_lines(lines, name: str = "history") -> list[dict]:
    """Parse JSONL lines (str or bytes). A torn last line (a crash mid-write, no newline) is
    dropped; any other bad line raises HistoryError naming the line."""
    import io
    data = "".join(lines) if not isinstance(lines, (bytes, str)) else lines
    raw = data.encode("utf-8") if isinstance(data, str) else data
    events: list[dict] = []
    for block in iter_blocks(io.BytesIO(raw), name):
        if isinstance(block, list):
            events.extend(block)
    return events


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HistoryError(f"{path}: is a directory") from None
    except OSError as e:
        raise HistoryError(f"{path}: {e.strerror or e}") from None


def read_history(path) -> list[dict]:
    """Every complete event of a history file, as dicts (for tools; the checker uses load_history)."""
    path = Path(path)
    events: list[dict] = []
    with _open(path) as f:
        try:
            for block in iter_blocks(f, str(path)):
                if isinstance(block, list):
                    events.extend(block)
        except OSError as e:
            raise HistoryError(f"{path}: {e.strerror or e}") from None
    return events


def load_history(path, *, sidecar: bool = True, parallel: bool | None = None) -> History:
    """A history file as columns for the checker: from its sidecar when that matches the file,
    else parsed from the JSONL block by block (no list of every event is ever held). A large file
    is parsed in two processes (`parallel=None`: when over PARALLEL_BYTES with a CPU idle)."""
    path = Path(path)
    with _open(path) as f:
        if sidecar:
            h = load_sidecar(path)
            if h is not None:
                return h
        try:
            split = _split_at(f) if _parallel(f, parallel) else None
            if split is not None:
                return _load_two(f, str(path), split)
            b, torn = _columns(f, str(path))
        except OSError as e:
            raise HistoryError(f"{path}: {e.strerror or e}") from None
    return b.finish(torn)


def _columns(f, name: str, stop: int | None = None) -> tuple[ColumnBuilder, int]:
    """The columns of `f` from its position up to offset `stop`, and its torn line count."""
    b = ColumnBuilder()
    torn = 0
    for block in iter_blocks(f, name, _TYPED, stop):
        if isinstance(block, list):
            b.add_block(block)
        else:
            torn = block
    return b, torn


# --- parsing in two processes ------------------------------------------------------------------
# Parsing is CPU-bound Python (msgspec's decode, then interning ids into columns: ~3 us per
# operation). A second process parses the file's second half into its own History (ids, rooms
# and processes interned locally) while this one parses the first; `ColumnBuilder.extend` then
# remaps its codes into ours with numpy. Names first seen in the second half are appended in
# their order there, so the result is the serial one. Below PARALLEL_BYTES starting the worker
# and sending its columns back costs more than it saves.
PARALLEL_BYTES = 32 << 20
# where the file is split: the worker's part also holds the final reads (ids it interns and sends
# back) and the worker pickles its columns, this process remaps them; with 55% here both sides
# took about the same CPU on a 1M-operation history (3.9 s and 4.2 s, bench_checker's shape)
SPLIT_AT = 0.55


def _parallel(f, wanted: bool | None) -> bool:
    """Two processes only for a large file and with a CPU to spare: on a loaded machine the worker
    competes with this process for the same share (Linux autogroups a session) and the split costs
    ~0.6 s more CPU, so it was no faster there (docs/checker.md)."""
    if wanted is not None:
        return wanted
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    idle = (cpus or 1) - os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return idle >= 1.0 and os.fstat(f.fileno()).st_size >= PARALLEL_BYTES


def _split_at(f) -> int | None:
    """The offset just after the first newline from SPLIT_AT of the file on (None: none)."""
    f.seek(int(os.fstat(f.fileno()).st_size * SPLIT_AT))
    while chunk := f.read(1 << 16):
        i = chunk.find(b"\n")
        if i >= 0:
            split = f.tell() - len(chunk) + i + 1
            f.seek(0)
            return split
    f.seek(0)
    return None


def _load_two(f, name: str, split: int) -> History:
    """Lines before `split` parsed here, the rest in a worker process, merged in file order."""
    with _pool_context().Pool(1) as pool:  # leaving the block ends the worker, even on an error
        later = pool.apply_async(_load_tail, (name, split))
        b, _ = _columns(f, name, stop=split)  # a first bad line here is the one to report
        h, ids = later.get()
    if ids is not None:
        h = dataclasses.replace(h, ids=msgspec.msgpack.decode(ids))
    b.extend(h)
    return b.finish(h.torn_lines)


def _pool_context():
    """fork when this process has a single thread (no spawn: no re-imports); else spawn (forking
    a threaded process can inherit a held lock)."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _load_tail(name: str, start: int) -> History:
    """In the worker: the History of file `name` from offset `start` (just after a newline) to its
    end; a bad line is named by its number in the whole file."""
    with open(name, "rb") as f:
        f.seek(start)
        try:
            b, torn = _columns(f, name)
        except HistoryError as e:
            if e.line is None:
                raise
            before = _count_lines(f, start)
            prefix = f"{name}: line {e.line}: "
            why = str(e).removeprefix(prefix)
            raise HistoryError(f"{name}: line {e.line + before}: {why}", e.line + before) from None
    return _packed(b.finish(torn))


def _packed(h: History) -> tuple[History, bytes | None]:
    """The worker's History to send back, its ids as msgpack when they round-trip exactly (JSON
    strings, ints, floats, bools, null: ~6x cheaper than pickling a list of a million strings)."""
    try:
        return dataclasses.replace(h, ids=[]), msgspec.msgpack.encode(h.ids)
    except (TypeError, ValueError, OverflowError):  # e.g. an int beyond 64 bits: pickled as is
        return h, None


def _count_lines(f, stop: int) -> int:
    f.seek(0)
    return sum(f.read(min(CHUNK_BYTES, stop - f.tell())).count(b"\n")
               for _ in range(-(-stop // CHUNK_BYTES)))


def leader_sites(history) -> dict:
    """{room: site} from the `leaders` marker in force when the first fault began (the last
    marker at or before it; the first marker if all are later; {} without a marker)."""
    marks = history.marks if isinstance(history, History) else [
        e for e in history if e.get("type") in ("fault", "leaders")
        and e.get("f") not in ("send", "deliver", "final-read", "subscribe")]
    marks = sorted(marks, key=lambda e: float(e.get("time", 0.0)))
    leaders = [e for e in marks if e.get("type") == "leaders" and isinstance(e.get("rooms"), dict)]
    if not leaders:
        return {}
    start = next((float(e.get("time", 0.0)) for e in marks
                  if e.get("type") == "fault" and e.get("f") == "start"), math.inf)
    before = [e for e in leaders if float(e.get("time", 0.0)) <= start]
    return dict((before[-1] if before else leaders[0])["rooms"])
