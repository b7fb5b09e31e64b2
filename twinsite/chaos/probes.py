"""chaostoolkit probes: is the lab healthy, and what does the checker say about the run.

`verdict()` is the checker's verdict over the traffic of the running experiment (started by the
`twinsite.chaos.controls.traffic` control): the run so far while traffic flows, the whole run
(final read included) once the control stopped it after the method. `verdict_metric(metric)`
returns one number of it, so each tolerance is its own probe and a failure names what failed.
"""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from .drivers import get_driver
from .run import run_of

__all__ = ["lab_healthy", "verdict", "verdict_metric"]


def lab_healthy(configuration: Configuration = None, secrets: Secrets = None) -> bool:
    """True when every node of the target is up and serving."""
    return bool(get_driver(configuration, secrets).healthy())


def verdict(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """The checker's verdict dict for this experiment's run (so far, or finished)."""
    run = run_of(configuration)
    if run is None or run.traffic is None:
        raise ActivityFailed("no traffic in this run: declare the control "
                             "twinsite.chaos.controls.traffic in the experiment")
    if run.verdict is not None:
        return run.verdict
    from twinsite.checker import check
    return check(list(run.traffic.events()))


def verdict_metric(metric: str, configuration: Configuration = None,
                   secrets: Secrets = None) -> float:
    """One number of the verdict, e.g. `lost`, `max_unavailable_s`, `p99_during_ms`.

    Before the traffic stopped (the check before the method) there is no final read yet, so the
    metrics that compare against it (lost, duplicates, order, unread rooms, ...) are not judged and
    read 0; the hypothesis after the method judges them over the whole run."""
    v = verdict(configuration)
    if metric not in v:
        known = ", ".join(sorted(k for k, x in v.items()
                                 if isinstance(x, (int, float)) and not isinstance(x, bool)))
        raise ActivityFailed(f"unknown verdict metric {metric!r} (known: {known})")
    value = v[metric]
    if metric in READ_BACK and run_of(configuration).verdict is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ActivityFailed(f"verdict metric {metric!r} is not a number: {value!r}")
    return value


# judged only against the final read, which exists once the traffic control stopped the run
READ_BACK = frozenset({"lost", "recovered", "unexpected", "failed_present", "duplicates",
                       "order_violations", "delivery_missing", "delivery_unexpected",
                       "unread_rooms"})
