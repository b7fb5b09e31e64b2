"""chaostoolkit actions: the one fault vocabulary of twinsite.

Every fault records a start marker in the running traffic's history (restore/heal record the
stop marker of the fault they end), so the checker and the report know the fault window.
The configuration key `target` (default `lab`) selects the driver that realizes the fault.
"""

from __future__ import annotations

from typing import Any

from chaoslib.types import Configuration, Secrets

from .drivers import get_driver

__all__ = ["kill_zone", "kill_leader_zone", "cut_power", "restore", "throttle_link",
           "partition_link", "heal_links", "move_stream_leader"]

# fault name -> what ends it; one process runs one experiment, so module state is the run's state
_active: dict[str, str] = {}


def _mark(name: str, phase: str) -> None:
    from twinsite.workload import current  # no traffic running (e.g. a bare action): no marker
    traffic = current()
    if traffic is not None:
        traffic.mark_fault(name, phase)


def _start(name: str, ends_with: str) -> None:
    _active[name] = ends_with
    _mark(name, "start")


def _stop(matches) -> list[str]:
    ended = [name for name, key in list(_active.items()) if matches(key)]
    for name in ended:
        del _active[name]
        _mark(name, "stop")
    return ended


def _link(a: str, b: str) -> str:
    return "<->".join(sorted((a, b)))


def kill_zone(zone: str, mode: str = "power", configuration: Configuration = None,
              secrets: Secrets = None) -> dict[str, Any]:
    """A zone loses power (mode "power": processes SIGKILLed and its links silent) or its
    processes crash (mode "crash": kill -9, the kernel answers with resets). Ended by
    `restore(zone)`."""
    result = get_driver(configuration).kill_zone(zone, mode=mode)
    _start(f"zone-{mode}:{zone}", f"zone:{zone}")
    return result


def kill_leader_zone(stream: str = "TALK", mode: str = "power",
                     configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """The zone whose server leads `stream` loses power (or crashes): the fault that forces a Raft
    election. Ended by `restore(zone)` or `restore(site)`."""
    driver = get_driver(configuration)
    zone = driver.stream_leader(stream)
    return {**kill_zone(zone, mode=mode, configuration=configuration), "stream": stream}


def move_stream_leader(site: str, stream: str = "TALK", configuration: Configuration = None,
                       secrets: Secrets = None) -> dict[str, Any]:
    """Set-up, not a fault: make `site`'s replica lead `stream`, so the fault that follows hits
    the leader (the worst case) whatever the placement happened to be."""
    return get_driver(configuration).move_stream_leader(site, stream)


def cut_power(site: str, configuration: Configuration = None,
              secrets: Secrets = None) -> dict[str, Any]:
    """A whole site loses power silently (the Pangyo fire). Ended by `restore(site)`."""
    result = get_driver(configuration).cut_power(site)
    _start(f"site-power:{site}", f"site:{site}")
    return result


def restore(target: str = "all", configuration: Configuration = None,
            secrets: Secrets = None) -> dict[str, Any]:
    """Power/processes back for a zone, a site, or "all" (which also heals every link); returns
    once the lab reports it converged."""
    driver = get_driver(configuration)
    result = driver.restore(target)
    if target == "all":
        ended = _stop(lambda key: True)
    else:
        zones = _zones_of(driver, target)
        ended = _stop(lambda key: key == f"site:{target}" or key == f"zone:{target}"
                      or (key.startswith("zone:") and key[5:] in zones))
    return {**result, "faults_ended": ended}


def throttle_link(a: str, b: str, latency_ms: float, bandwidth_kbit: int | None = None,
                  jitter_ms: float = 0, configuration: Configuration = None,
                  secrets: Secrets = None) -> dict[str, Any]:
    """Degrade the link between two sites (or zones): added latency, jitter, bandwidth cap."""
    result = get_driver(configuration).throttle_link(a, b, latency_ms, bandwidth_kbit, jitter_ms)
    _start(f"throttle:{_link(a, b)}", "link")
    return result


def partition_link(a: str, b: str, configuration: Configuration = None,
                   secrets: Secrets = None) -> dict[str, Any]:
    """Silently partition two sites (or zones): bytes stop both ways, connections stay open."""
    result = get_driver(configuration).partition_link(a, b)
    _start(f"partition:{_link(a, b)}", "link")
    return result


def heal_links(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Every link back to its declared characteristics (ends throttles and partitions)."""
    result = get_driver(configuration).heal_links()
    return {**result, "faults_ended": _stop(lambda key: key == "link")}


def _zones_of(driver, site: str) -> set[str]:
    """The zones of a site (restoring a site ends the zone faults inside it too)."""
    try:
        nodes = driver.status().get("nodes", [])
    except Exception:  # noqa: BLE001 - markers are best effort; the restore itself succeeded
        return set()
    return {n["zone"] for n in nodes if n.get("site") == site and n.get("zone")}
