"""twinsite's chaostoolkit extension: one fault vocabulary (actions), probes on the lab and on the
checker's verdict, and a control that drives traffic around each experiment.

    twinsite.chaos.actions            kill_zone, cut_power, restore, throttle_link, ...
    twinsite.chaos.probes             lab_healthy, verdict, verdict_metric
    twinsite.chaos.controls.traffic   the workload + history + final read around a run

`chaos discover twinsite --no-install` calls `discover()` (re-exported by `twinsite`).
"""

from __future__ import annotations

__all__ = ["discover"]

EXTENSION = "twinsite"


def discover(discover_system: bool = True) -> dict:
    """The extension's activities (and, if asked, what lab is running) for `chaos discover`."""
    from importlib.metadata import PackageNotFoundError, version

    from chaoslib.discovery.discover import discover_actions, discover_probes, \
        initialize_discovery_result
    try:
        ver = version(EXTENSION)
    except PackageNotFoundError:
        ver = "unknown"
    discovery = initialize_discovery_result(EXTENSION, ver, "twinsite")
    discovery["activities"].extend(discover_actions("twinsite.chaos.actions"))
    discovery["activities"].extend(discover_probes("twinsite.chaos.probes"))
    if discover_system:
        discovery["system"] = _system()
    return discovery


def _system() -> dict:
    """What the default target (the lab) looks like now; empty when it is not running."""
    try:
        from .drivers import get_driver
        status = get_driver(None).status()
    except Exception as e:  # noqa: BLE001 - discovery must work without a running lab
        return {"target": "lab", "running": False, "reason": str(e).splitlines()[0] if str(e) else ""}
    return {"target": "lab", "running": True, "stack": status.get("stack"),
            "sites": status.get("sites"),
            "zones": [n.get("zone") for n in status.get("nodes", [])],
            "links": status.get("links")}
