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
from pathlib import Path

from chaoslib.exceptions import InterruptExecution

from ..drivers import config_value, get_driver
from ..run import HISTORY, RUN_KEY, Run, run_of

__all__ = ["configure_control", "before_experiment_control", "before_hypothesis_control",
           "before_method_control", "after_method_control", "after_experiment_control",
           "cleanup_control"]

logger = logging.getLogger("chaostoolkit")
_open: list[Run] = []  # runs with traffic not yet stopped: only for cleanup_control's last resort


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
    _stop_quietly(run_of(configuration))


def before_experiment_control(context, configuration=None, secrets=None, **_):
    _new_run(configuration)


def before_hypothesis_control(context, rate=None, rate_factor=1.0, rooms=None, subscribers=2,
                              settle_s=2.0, warmup_s=3.0, configuration=None, secrets=None, **_):
    _ensure_started(rate, rate_factor, rooms, subscribers, settle_s, warmup_s, configuration,
                    secrets)


def before_method_control(context, rate=None, rate_factor=1.0, rooms=None, subscribers=2,
                          settle_s=2.0, warmup_s=3.0, configuration=None, secrets=None, **_):
    # a run with the hypothesis skipped before the method still gets its traffic
    _ensure_started(rate, rate_factor, rooms, subscribers, settle_s, warmup_s, configuration,
                    secrets)


def after_method_control(context, state=None, configuration=None, secrets=None, **_):
    finish(run_of(configuration))


def after_experiment_control(context, state=None, configuration=None, secrets=None, **_):
    run = run_of(configuration)
    finish(run)
    if run is None or not isinstance(state, dict):
        return
    state["twinsite"] = {
        "history": str(run.history_path),
        "rate": run.rate,
        "rooms": run.rooms,
        "verdict": run.verdict,
        "faults_active_at_end": [e.marker for e in run.active],
        "failed_tolerances": failed_tolerances(state),
    }


def cleanup_control(**_):
    for run in list(_open):
        _stop_quietly(run)


# --- the work ----------------------------------------------------------------------------------


def _new_run(configuration) -> Run | None:
    """A fresh run context in the run's configuration dict (shared with every activity)."""
    _stop_quietly(run_of(configuration))
    if configuration is None:
        return None  # no configuration to hold a context (called outside chaoslib)
    run_dir = run_dir_for(configuration)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = run_dir / HISTORY
    if history.exists():
        history.unlink()  # a re-run in the same folder must not mix two histories
    run = configuration[RUN_KEY] = Run(run_dir=run_dir)
    return run


def _ensure_started(rate, rate_factor, rooms, subscribers, settle_s, warmup_s, configuration,
                    secrets=None):
    run = run_of(configuration) or _new_run(configuration)
    if run is None:
        raise InterruptExecution("twinsite traffic: no run configuration (run it with chaos run)")
    if run.traffic is not None or run.stopped:
        return
    from twinsite.workload import BackgroundTraffic, DriverConfig
    try:  # chaoslib swallows a control's errors: say it loudly and stop the run instead
        driver = get_driver(configuration, secrets)
        defaults = _stack_traffic(configuration, driver)
        run.rate = float(rate) if rate else defaults.drill_rate_msgs_per_s * float(rate_factor)
        run.rooms = int(rooms) if rooms else defaults.drill_rooms
        topo = driver.topology()  # the target's shards decide each room's home site
        config = DriverConfig(endpoints=driver.endpoints(), rate=run.rate, rooms=run.rooms,
                              subscribers=int(subscribers), settle_s=float(settle_s),
                              shards=len(driver.shard_leaders()),
                              primaries=tuple(s.name for s in topo.primary_sites),
                              token=driver.api_token())
        config.validate()
    except Exception as e:  # noqa: BLE001 - ActivityFailed, TopologyError, ValueError: one line
        raise InterruptExecution(f"twinsite traffic cannot start: {e}") from None
    logger.info(f"twinsite traffic: {run.rate:.0f} msgs/s over {run.rooms} rooms, "
                f"history {run.history_path}")
    run.traffic = BackgroundTraffic(config, run.history_path)
    run.traffic.start()
    _open.append(run)
    run.started_at = time.monotonic()
    _warm_up(run, float(warmup_s))


def _warm_up(run: Run, warmup_s: float) -> None:
    """Let the traffic reach its rate; refuse to judge a run that cannot write at all."""
    from twinsite import procs
    try:
        procs.wait_until(lambda: _acked_so_far(run) > 0, timeout=max(10.0, warmup_s),
                         interval=0.1, what="the first acknowledged write")
    except TimeoutError as e:
        raise InterruptExecution(f"twinsite traffic: {e}; is the target up and healthy?") from None
    remaining = warmup_s - (time.monotonic() - run.started_at)
    if remaining > 0:
        time.sleep(remaining)  # a warm-up *duration*, deliberately: the 'before' latencies need it


def _acked_so_far(run: Run) -> int:
    return sum(1 for e in run.traffic.events() if e.get("type") == "ok" and e.get("f") == "send")


def finish(run: Run | None) -> dict | None:
    """Stop the traffic (settle + final read) once; the verdict of the whole run after that."""
    if run is None or run.traffic is None:
        return None
    if not run.stopped:
        run.stopped = True
        if run in _open:
            _open.remove(run)
        logger.info("twinsite traffic: settling and reading every room back")
        try:
            run.traffic.stop()
        except Exception as e:  # noqa: BLE001 - judged below: a missing final read fails the run
            run.error = str(e)
            logger.error(f"twinsite traffic: {e}")
        run.events = list(run.traffic.events())
        from twinsite.checker import check
        run.verdict = check(run.events)
        if run.error:
            run.verdict["traffic_error"] = run.error
        (run.run_dir / "verdict.json").write_text(json.dumps(run.verdict, indent=2) + "\n")
    return run.verdict


def _stop_quietly(run: Run | None) -> None:
    if run is not None and run.traffic is not None and not run.stopped:
        try:
            finish(run)
        except Exception:  # noqa: BLE001 - cleanup after a failure: stop, never mask it
            logger.debug("twinsite traffic: stop failed", exc_info=True)


def _stack_traffic(configuration, driver):
    """Traffic defaults of the stack: configuration `stack` (env TWINSITE_STACK), else the stack
    the target runs. A stack that does not load is an error, never a silent fallback."""
    stack = config_value(configuration, "stack", "TWINSITE_STACK")
    if stack:
        from twinsite.topology import load_stack
        return load_stack(stack).traffic
    return driver.topology().traffic


def failed_tolerances(journal: dict) -> list[str]:
    """Names of the hypothesis probes whose tolerance failed (chaoslib stops at the first)."""
    names = []
    for when in ("before", "after"):
        ss = (journal.get("steady_states") or {}).get(when) or {}
        for p in ss.get("probes", []):
            if p.get("tolerance_met") is False or p.get("status") == "failed":
                names.append(f"{when}: {p.get('activity', {}).get('name')}")
    return names
