"""chaostoolkit control: drive traffic through the whole experiment and record its history.

Declared at the top level of an experiment:

    controls:
      - name: traffic
        provider: {type: python, module: twinsite.chaos.controls.traffic,
                   arguments: {rate_factor: 1, subscribers: 2, settle_s: 2, warmup_s: 3}}

Life cycle (chaoslib calls the functions named after the level):
- before the steady-state hypothesis is first checked: start the traffic driver, warm up;
- after the method (whose last steps restore/heal): stop — settle, final read, history closed —
  so the hypothesis that runs after the method judges the *whole* run, fault window included;
- after the experiment: the verdict and the history's path go into the journal.

The history goes next to the journal: configuration `run_dir`, else env TWINSITE_RUN_DIR, else the
folder of `chaos run --journal-path`, else the current directory.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslib.exceptions import InterruptExecution

from ..drivers import config_value

__all__ = ["configure_control", "before_experiment_control", "before_hypothesis_control",
           "before_method_control", "after_method_control", "after_experiment_control",
           "cleanup_control", "current_run"]

logger = logging.getLogger("chaostoolkit")
HISTORY = "history.jsonl"


@dataclass
class Run:
    """The traffic of the experiment running in this process (one experiment per process)."""
    run_dir: Path
    traffic: Any = None
    rate: float = 0.0
    rooms: int = 0
    stopped: bool = False
    events: list | None = None  # the final events, once stopped
    verdict: dict | None = None
    error: str | None = None  # the traffic driver failed (the verdict then shows what is missing)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def history_path(self) -> Path:
        return self.run_dir / HISTORY


_run: Run | None = None


def current_run() -> Run | None:
    return _run


def run_dir_for(configuration) -> Path:
    value = config_value(configuration, "run_dir", "TWINSITE_RUN_DIR")
    if value:
        return Path(value)
    argv = sys.argv
    for i, arg in enumerate(argv):  # under `chaos run --journal-path X`: next to the journal
        if arg == "--journal-path" and i + 1 < len(argv):
            return Path(argv[i + 1]).parent
        if arg.startswith("--journal-path="):
            return Path(arg.split("=", 1)[1]).parent
    return Path.cwd()


# --- chaoslib entry points ---------------------------------------------------------------------


def configure_control(configuration=None, secrets=None, **_):
    global _run
    _stop_quietly()
    _run = None


def before_experiment_control(context, configuration=None, secrets=None, **_):
    global _run
    _stop_quietly()
    run_dir = run_dir_for(configuration)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = run_dir / HISTORY
    if history.exists():
        history.unlink()  # a re-run in the same folder must not mix two histories
    _run = Run(run_dir=run_dir)


def before_hypothesis_control(context, rate=None, rate_factor=1.0, rooms=None, subscribers=2,
                              settle_s=2.0, warmup_s=3.0, configuration=None, secrets=None, **_):
    _ensure_started(rate, rate_factor, rooms, subscribers, settle_s, warmup_s, configuration)


def before_method_control(context, rate=None, rate_factor=1.0, rooms=None, subscribers=2,
                          settle_s=2.0, warmup_s=3.0, configuration=None, secrets=None, **_):
    # a run with the hypothesis skipped before the method still gets its traffic
    _ensure_started(rate, rate_factor, rooms, subscribers, settle_s, warmup_s, configuration)


def after_method_control(context, state=None, configuration=None, secrets=None, **_):
    finish()


def after_experiment_control(context, state=None, configuration=None, secrets=None, **_):
    finish()
    if _run is None or not isinstance(state, dict):
        return
    state["twinsite"] = {
        "history": str(_run.history_path),
        "rate": _run.rate,
        "rooms": _run.rooms,
        "verdict": _run.verdict,
        "failed_tolerances": failed_tolerances(state),
    }


def cleanup_control(**_):
    _stop_quietly()


# --- the work ----------------------------------------------------------------------------------


def _ensure_started(rate, rate_factor, rooms, subscribers, settle_s, warmup_s, configuration):
    if _run is None:
        before_experiment_control(None, configuration=configuration)
    if _run.traffic is not None or _run.stopped:
        return
    from twinsite.workload import BackgroundTraffic, DriverConfig, endpoints_from_lab
    defaults = _stack_traffic(configuration)
    _run.rate = float(rate) if rate else defaults.drill_rate_msgs_per_s * float(rate_factor)
    _run.rooms = int(rooms) if rooms else defaults.drill_rooms
    state_dir = config_value(configuration, "state_dir", "TWINSITE_LAB_DIR")
    try:  # chaoslib swallows a control's errors: say it loudly and stop the run instead
        endpoints = endpoints_from_lab(state_dir) if state_dir else endpoints_from_lab()
        config = DriverConfig(endpoints=endpoints, rate=_run.rate, rooms=_run.rooms,
                              subscribers=int(subscribers), settle_s=float(settle_s))
        config.validate()
    except Exception as e:  # noqa: BLE001 - LabError, ValueError: one line either way
        raise InterruptExecution(f"twinsite traffic cannot start: {e}") from None
    logger.info(f"twinsite traffic: {_run.rate:.0f} msgs/s over {_run.rooms} rooms, "
                f"history {_run.history_path}")
    _run.traffic = BackgroundTraffic(config, _run.history_path)
    _run.traffic.start()
    _run.started_at = time.monotonic()
    _warm_up(float(warmup_s))


def _warm_up(warmup_s: float) -> None:
    """Let the traffic reach its rate; refuse to judge a run that cannot write at all."""
    from twinsite import procs
    try:
        procs.wait_until(lambda: _acked_so_far() > 0, timeout=max(10.0, warmup_s),
                         interval=0.1, what="the first acknowledged write")
    except TimeoutError as e:
        raise InterruptExecution(f"twinsite traffic: {e}; is the lab up and healthy?") from None
    remaining = warmup_s - (time.monotonic() - _run.started_at)
    if remaining > 0:
        time.sleep(remaining)  # a warm-up *duration*, deliberately: the 'before' latencies need it


def _acked_so_far() -> int:
    return sum(1 for e in _run.traffic.events() if e.get("type") == "ok" and e.get("f") == "send")


def finish() -> dict | None:
    """Stop the traffic (settle + final read) once; the verdict of the whole run after that."""
    if _run is None or _run.traffic is None:
        return None
    if not _run.stopped:
        _run.stopped = True
        logger.info("twinsite traffic: settling and reading every room back")
        try:
            _run.traffic.stop()
        except Exception as e:  # noqa: BLE001 - judged below: a missing final read fails the run
            _run.error = str(e)
            logger.error(f"twinsite traffic: {e}")
        _run.events = list(_run.traffic.events())
        from twinsite.checker import check
        _run.verdict = check(_run.events)
        if _run.error:
            _run.verdict["traffic_error"] = _run.error
        (_run.run_dir / "verdict.json").write_text(json.dumps(_run.verdict, indent=2) + "\n")
    return _run.verdict


def _stop_quietly() -> None:
    if _run is not None and _run.traffic is not None and not _run.stopped:
        try:
            finish()
        except Exception:  # noqa: BLE001 - cleanup after a failure: stop, never mask it
            logger.debug("twinsite traffic: stop failed", exc_info=True)


def _stack_traffic(configuration):
    """Traffic defaults from the stack the lab is running (its drill rate and rooms)."""
    from twinsite.topology import Traffic, load_stack
    stack = config_value(configuration, "stack", "TWINSITE_STACK")
    if not stack:
        try:
            from ..drivers import get_driver
            stack = get_driver(configuration).status().get("stack")
        except Exception:  # noqa: BLE001 - no stack known: the model's defaults
            stack = None
    try:
        return load_stack(stack).traffic if stack else Traffic()
    except Exception:  # noqa: BLE001
        return Traffic()


def failed_tolerances(journal: dict) -> list[str]:
    """Names of the hypothesis probes whose tolerance failed (chaoslib stops at the first)."""
    names = []
    for when in ("before", "after"):
        ss = (journal.get("steady_states") or {}).get(when) or {}
        for p in ss.get("probes", []):
            if p.get("tolerance_met") is False or p.get("status") == "failed":
                names.append(f"{when}: {p.get('activity', {}).get('name')}")
    return names
