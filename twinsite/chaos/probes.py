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
    group = metric.split(".", 1)[0]
    if "." in metric and group not in v and not _leaders_marked(configuration):
        return 0  # split by leader site: no fault has begun yet, so nothing to split
    value = _lookup(v, metric, configuration)
    if metric.rsplit(".", 1)[-1] in READ_BACK and run_of(configuration).verdict is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ActivityFailed(f"verdict metric {metric!r} is not a number: {value!r}")
    return value


def _lookup(v: dict, metric: str, configuration=None):
    """`metric` is a key of the verdict or a dotted path into its nested maps, e.g.
    `by_leader_site.ansan.room_unavailable_max_s` (the rooms whose shard ansan led as the fault
    began). A site of the stack that led none of the rooms has no group: nothing of it stalled, 0."""
    parts, node = metric.split("."), v
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if i == 1 and len(parts) == 3 and isinstance(node, dict) and part in _site_names(configuration):
            return 0
        where = ".".join(parts[:i])
        known = ", ".join(sorted(k for k, x in (node.items() if isinstance(node, dict) else ())
                                 if isinstance(x, (int, float, dict)) and not isinstance(x, bool)))
        raise ActivityFailed(f"unknown verdict metric {metric!r} (known"
                             f"{' under ' + where if where else ''}: {known})")
    return node


def _leaders_marked(configuration) -> bool:
    run = run_of(configuration)
    return any(e.get("type") == "leaders" for e in run.traffic.events())


def _site_names(configuration) -> set[str]:
    try:
        return {s.name for s in get_driver(configuration).topology().sites}
    except ActivityFailed:
        return set()


# judged only against the final read, which exists once the traffic control stopped the run
READ_BACK = frozenset({"lost", "recovered", "unexpected", "failed_present", "duplicates",
                       "order_violations", "delivery_missing", "delivery_unexpected",
                       "unread_rooms"})
