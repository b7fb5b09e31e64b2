"""The run context of one chaostoolkit experiment: its traffic, its active faults, its verdict.

It lives in the run's configuration dict under `RUN_KEY`: chaoslib hands that same dict to every
control, and a shallow copy of it to every activity, so the actions and probes of a run find the
context the traffic control created, with no module globals. An activity called outside a run (a
bare `chaos run` without the traffic control, a test) gets `None` and records no marker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import faults

RUN_KEY = "twinsite_run"
HISTORY = "history.jsonl"


@dataclass
class Run:
    run_dir: Path
    traffic: Any = None          # twinsite.workload.BackgroundTraffic, once started
    rate: float = 0.0
    rooms: int = 0
    stopped: bool = False
    events: list | None = None   # the final events, once stopped
    verdict: dict | None = None
    error: str | None = None     # the traffic driver failed (the verdict then shows what is missing)
    active: tuple[faults.Effect, ...] = ()
    started_at: float = field(default_factory=time.monotonic)

    @property
    def history_path(self) -> Path:
        return self.run_dir / HISTORY

    def record(self, effect: faults.Effect, leaders: Mapping[str, str | None] | None = None
               ) -> list[str]:
        """Book an effect: a fault that starts gets a start marker (after the leaders marker: which
        site led each room's shard just before it), the faults a restore or heal ends get their
        stop markers. Returns the markers of the faults that ended."""
        self.active, ended = faults.settle(self.active, effect)
        if effect.marker:
            if leaders is not None and self.traffic is not None and not self.stopped:
                self.traffic.mark_leaders(dict(leaders))
            self._mark(effect.marker, "start")
        for e in ended:
            self._mark(e.marker, "stop")
        return [e.marker for e in ended]

    def room_names(self) -> list[str]:
        """The rooms the running traffic writes to (none before it started)."""
        driver = getattr(self.traffic, "driver", None)
        return list(getattr(driver, "rooms", None) or [])

    def _mark(self, name: str, phase: str) -> None:
        if self.traffic is not None and not self.stopped:
            self.traffic.mark_fault(name, phase)


def run_of(configuration: Mapping[str, Any] | None) -> Run | None:
    run = (configuration or {}).get(RUN_KEY)
    return run if isinstance(run, Run) else None
