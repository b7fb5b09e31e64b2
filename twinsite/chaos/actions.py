"""chaostoolkit actions: build a fault, resolve it against the target's topology, apply it.

Thin on purpose (as chaosk8s's actions): the meaning of a fault is `twinsite.faults`'s, the way it
is realised is the driver's (configuration `target`: `lab` default, `k8s`). Each action returns
what it did — the fault, its resolved effect, the driver's own account (processes killed, links cut,
objects created) and the faults it ended — so the journal is the evidence. Start and stop markers
go into the running traffic's history through the run context (`twinsite.chaos.run`).
"""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from twinsite import faults

from .drivers import get_driver
from .run import run_of

__all__ = ["kill_zone", "kill_leader_zone", "cut_power", "restore", "throttle_link",
           "partition_link", "heal_links", "move_stream_leader"]


def _build(cls, **kwargs) -> faults.Fault:
    try:
        return cls(**kwargs)
    except faults.FaultError as e:
        raise ActivityFailed(str(e)) from None


def _apply(fault: faults.Fault, configuration, secrets, driver=None) -> dict[str, Any]:
    driver = driver or get_driver(configuration, secrets)
    topo = driver.topology()
    run = run_of(configuration)
    down = frozenset(z for e in (run.active if run else ()) for z in e.zones
                     if e.action is faults.Action.DOWN)
    try:
        effect = faults.resolve(fault, topo, down)
    except faults.FaultError as e:
        raise ActivityFailed(str(e)) from None
    done = driver.apply(effect)
    ended = run.record(effect) if run is not None else []
    return {"fault": faults.to_dict(fault), "effect": effect.summary(), "done": done,
            "faults_ended": ended}


def kill_zone(zone: str, mode: str = "power", configuration: Configuration = None,
              secrets: Secrets = None) -> dict[str, Any]:
    """A zone loses power (mode "power": links silent first, processes SIGKILLed, unsynced writes
    lost) or its processes crash (mode "crash": kill -9, resets). Ended by `restore(zone)`."""
    return _apply(_build(faults.ZoneOutage, zone=zone, mode=mode), configuration, secrets)


def kill_leader_zone(stream: str = "TALK", mode: str = "power",
                     configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """The zone whose server leads `stream` loses power (or crashes): the fault that forces a Raft
    election. Ended by `restore(zone)` or `restore(site)`."""
    fault_mode = _build(faults.ZoneOutage, zone="?", mode=mode).mode  # a bad mode fails first
    driver = get_driver(configuration, secrets)
    zone = driver.stream_leader(stream)
    return {**_apply(faults.ZoneOutage(zone, fault_mode), configuration, secrets, driver),
            "stream": stream}


def move_stream_leader(site: str, stream: str = "TALK", configuration: Configuration = None,
                       secrets: Secrets = None) -> dict[str, Any]:
    """Set-up, not a fault: make `site`'s replica lead `stream`, so the fault that follows hits
    the leader (the worst case) whatever the placement happened to be."""
    return get_driver(configuration, secrets).move_stream_leader(site, stream)


def cut_power(site: str, configuration: Configuration = None,
              secrets: Secrets = None) -> dict[str, Any]:
    """A whole site loses power silently (the Pangyo fire); site "all": the whole grid goes dark.
    Ended by `restore(site)` / `restore("all")`."""
    return _apply(_build(faults.SitePowerLoss, site=site), configuration, secrets)


def restore(target: str = "all", timeout_s: float = 60.0, configuration: Configuration = None,
            secrets: Secrets = None) -> dict[str, Any]:
    """Power back for a zone, a site, or "all" (which also heals every link); returns once the
    target reports every replica current. After a grid-wide loss this is a black start."""
    return _apply(_build(faults.Restore, target=target, timeout_s=timeout_s), configuration,
                  secrets)


def throttle_link(a: str, b: str, latency_ms: float, bandwidth_kbit: int | None = None,
                  jitter_ms: float = 0, configuration: Configuration = None,
                  secrets: Secrets = None) -> dict[str, Any]:
    """Degrade the links between two sites (or zones): added latency, jitter, a bandwidth cap."""
    return _apply(_build(faults.LinkShape, a=a, b=b, latency_ms=latency_ms, jitter_ms=jitter_ms,
                         bandwidth_kbit=bandwidth_kbit), configuration, secrets)


def partition_link(a: str, b: str, configuration: Configuration = None,
                   secrets: Secrets = None) -> dict[str, Any]:
    """Silently partition two sites (or zones): bytes stop both ways, connections stay open."""
    return _apply(_build(faults.LinkPartition, a=a, b=b), configuration, secrets)


def heal_links(a: str | None = None, b: str | None = None, configuration: Configuration = None,
               secrets: Secrets = None) -> dict[str, Any]:
    """The links between a and b (every link, with neither) back to their declared shape: ends
    the throttles and partitions on them."""
    return _apply(_build(faults.Heal, a=a, b=b), configuration, secrets)
