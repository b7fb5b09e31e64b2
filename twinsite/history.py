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
- the final read, one per room: {"type": "ok", "f": "final-read", "room": str, "ids": [...], "time": float}
  (a room that could not be read back before the timeout gets
  {"type": "fail", "f": "final-read", "room": str, "error": str, "time": float}: the checker then
  reports it in `unread_rooms` instead of guessing)

Hand-written (no library): it is 40 lines of json + a lock, and the format is ours.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class HistoryError(ValueError):
    """An unreadable history file: the message is one line naming the file and line."""


class HistoryWriter:
    """Thread-safe append-only JSONL writer; every line is flushed so a crash keeps what was written."""

    def __init__(self, path, t0: float | None = None, *, keep: bool = False):
        """`keep=True` also keeps every event in memory for `events()` (a verdict mid-run)."""
        self.path = Path(path)
        self._kept: list[dict] | None = [] if keep else None
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic() if t0 is None else float(t0)
        self._lock = threading.Lock()
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

    @property
    def closed(self) -> bool:
        return self._f is None

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
                self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_lines(lines, name: str = "history") -> list[dict]:
    """Parse JSONL lines. A torn last line (a crash mid-write, no newline) is dropped; any other
    bad line raises HistoryError naming the line."""
    lines = [ln for ln in lines]
    if lines and not lines[-1].endswith("\n"):
        try:
            json.loads(lines[-1])
        except ValueError:
            lines.pop()  # torn tail of a crashed writer
    body = [ln for ln in lines if ln.strip()]
    try:  # fast path: one C-level parse of the whole file
        events = json.loads("[" + ",".join(body) + "]")
        if all(type(ev) is dict for ev in events) and len(events) == len(body):
            return events
    except ValueError:
        pass
    events = []
    for i, line in enumerate(lines, 1):  # slow path: find and name the bad line
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            raise HistoryError(f"{name}: line {i}: not valid JSON") from None
        if not isinstance(ev, dict):
            raise HistoryError(f"{name}: line {i}: expected a JSON object")
        events.append(ev)
    return events


def read_history(path) -> list[dict]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return parse_lines(f, name=str(path))
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HistoryError(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise HistoryError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise HistoryError(f"{path}: {e.strerror or e}") from None
