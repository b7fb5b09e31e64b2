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
uses msgspec, block by block, into typed structs holding only the fields the checker reads (a million-operation history is ~300 MB). Besides the JSONL the writer
saves the same events as columns (`<file>.cols.npz`, see `twinsite.columns`) when it closes;
`load_history` uses them while they match the file, else parses the JSONL.
"""

from __future__ import annotations

import json
import logging
import math
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
    """An unreadable history file: the message is one line naming the file and line."""


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


def _parse_block(lines: list[bytes], first_line: int, name: str, decoder) -> list:
    """Events of complete lines (numbered from first_line + 1); HistoryError names a bad line."""
    try:  # fast path: one C-level parse of the whole block
        events = decoder.decode(b"[" + b",".join(lines) + b"]")
        if len(events) == len(lines):
            return events
    except msgspec.DecodeError:
        pass
    events = []
    for n, line in enumerate(lines, first_line + 1):  # slow path: skip blanks, name the bad line
        if not line.strip():
            continue
        try:
            ev = _ANY.decode(line)
        except msgspec.DecodeError:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise HistoryError(f"{name}: line {n}: not UTF-8 text") from None
            raise HistoryError(f"{name}: line {n}: not valid JSON") from None
        if not isinstance(ev, dict):
            raise HistoryError(f"{name}: line {n}: expected a JSON object")
        events.extend(decoder.decode(b"[" + line + b"]"))
    return events


def iter_blocks(f, name: str = "history", decoder=_DICTS):
    """Yield lists of events from a binary file, block by block; the last item yielded is the
    number of torn lines (0 or 1: an unparsable last line without a newline, dropped)."""
    rest = b""
    lineno = 0
    while True:
        block = f.read(CHUNK_BYTES)
        if not block:
            break
        block = rest + block if rest else block
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        rest = block[cut + 1:]
        lines = block[:cut].split(b"\n")
        yield _parse_block(lines, lineno, name, decoder)
        lineno += len(lines)
    torn = 0
    if rest.strip():
        try:
            _ANY.decode(rest)
        except msgspec.DecodeError:
            torn = 1  # torn tail of a crashed or interrupted writer
        else:
            yield _parse_block([rest], lineno, name, decoder)
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


def load_history(path, *, sidecar: bool = True) -> History:
    """A history file as columns for the checker: from its sidecar when that matches the file,
    else parsed from the JSONL block by block (no list of every event is ever held)."""
    path = Path(path)
    with _open(path) as f:
        if sidecar:
            h = load_sidecar(path)
            if h is not None:
                return h
        b = ColumnBuilder()
        torn = 0
        try:
            for block in iter_blocks(f, str(path), _TYPED):
                if isinstance(block, list):
                    b.add_block(block)
                else:
                    torn = block
        except OSError as e:
            raise HistoryError(f"{path}: {e.strerror or e}") from None
    return b.finish(torn)


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
