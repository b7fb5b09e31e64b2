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

from twinsite import faults, shards

from .drivers import config_value, get_driver
from .run import run_of

__all__ = ["kill_zone", "kill_leader_zone", "cut_power", "restore", "throttle_link",
           "partition_link", "heal_links", "move_stream_leader", "balance_leaders"]


def _build(cls, **kwargs) -> faults.Fault:
    try:
        return cls(**kwargs)
    except faults.FaultError as e:
        raise ActivityFailed(str(e)) from None


def dry_run(configuration) -> bool:
    """Configuration `dry_run` (env TWINSITE_DRY_RUN): plan every fault, touch nothing."""
    value = config_value(configuration, "dry_run", "TWINSITE_DRY_RUN", False)
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
    if dry_run(configuration):
        plan = driver.plan(effect) if hasattr(driver, "plan") else ()
        return {"fault": faults.to_dict(fault), "effect": effect.summary(), "dry_run": True,
                "plan": [op.describe() for op in plan]}
    leaders = _room_leaders(driver, topo, run) if effect.marker else None
    done = driver.apply(effect)
    ended = run.record(effect, leaders) if run is not None else []
    return {"fault": faults.to_dict(fault), "effect": effect.summary(), "done": done,
            "faults_ended": ended}


def _room_leaders(driver, topo, run) -> dict[str, str | None] | None:
    """room -> the site leading its shard now (just before a fault), for the leaders marker."""
    rooms = run.room_names() if run is not None else []
    if not rooms:
        return None
    try:
        by_stream = driver.shard_leaders()
    except ActivityFailed:
        return None  # the marker is evidence, not a precondition of the fault
    n = len(by_stream)  # the shards the target runs (the lab may run fewer than deployed)
    if not n:
        return None
    return {room: by_stream.get(shards.stream_of(room, n)) for room in rooms}


def balance_leaders(timeout_s: float = 90.0, settle_s: float = 0.0,
                    configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Set-up, not a fault: wait until every shard is led by the primary site it prefers (the
    gateways' balancer puts them there; this only waits and checks), so a fault that follows
    hits balanced leadership. With `settle_s`, the balanced placement must also have held
    unchanged that long: a fault that lands during a leader move hits the move's 503s and the
    clients' fail-over from them, not the steady state the experiment means. Returns the
    placement (shards led per site), the wait, and how long it was seen settled."""
    import time
    if dry_run(configuration):
        return {"dry_run": True, "plan": ["wait until every shard is led by its preferred site"
                                          + (f" for {settle_s:g}s" if settle_s else "")]}
    driver = get_driver(configuration, secrets)
    topo = driver.topology()
    t0 = time.monotonic()
    seen, since = None, None
    while True:
        got = driver.shard_leaders()
        n = len(got)  # the shards the target runs
        want = {shards.stream_name(i): shards.preferred_site(i, topo) for i in range(n)}
        astray = sorted(name for name, site in want.items() if got.get(name) != site)
        now = time.monotonic()
        if n and not astray:
            since = since if got == seen else now
            if now - since >= float(settle_s):
                break
        else:
            since = None
        seen = got
        if now - t0 > float(timeout_s):
            if not astray:
                raise ActivityFailed(f"leadership balanced but not settled for {settle_s:g}s "
                                     f"within {timeout_s:g}s")
            shown = ", ".join(f"{a} led by {got.get(a) or 'nobody'}" for a in astray[:5])
            raise ActivityFailed(f"leadership not balanced after {timeout_s:g}s: {len(astray)} of "
                                 f"{n} shards away from their preferred site ({shown})")
        time.sleep(0.25 if settle_s else 0.5)  # a settle is judged on finer polls
    placement: dict[str, int] = {}
    for site in got.values():
        placement[site] = placement.get(site, 0) + 1
    return {"shards": n, "placement": placement, "waited_s": round(time.monotonic() - t0, 1),
            "settled_s": round(time.monotonic() - since, 1)}


def kill_zone(zone: str, mode: str = "power", configuration: Configuration = None,
              secrets: Secrets = None) -> dict[str, Any]:
    """A zone loses power (mode "power": links silent first, processes SIGKILLed, unsynced writes
    lost) or its processes crash (mode "crash": kill -9, resets). Ended by `restore(zone)`."""
    return _apply(_build(faults.ZoneOutage, zone=zone, mode=mode), configuration, secrets)


def kill_leader_zone(site: str | None = None, stream: str | None = None, mode: str = "power",
                     configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """The zone whose server leads a shard loses power (or crashes): the fault that forces a Raft
    election. The shard is `stream`, else the shard of the first room of the running traffic that
    `site` leads (so the fault surely hits rooms the drill writes to), else shard 0. Ended by
    `restore(zone)` or `restore(site)`."""
    fault_mode = _build(faults.ZoneOutage, zone="?", mode=mode).mode  # a bad mode fails first
    driver = get_driver(configuration, secrets)
    stream = stream or _stream_led_by(driver, site, run_of(configuration))
    zone = driver.stream_leader(stream)
    return {**_apply(faults.ZoneOutage(zone, fault_mode), configuration, secrets, driver),
            "stream": stream}


def _stream_led_by(driver, site: str | None, run) -> str:
    leaders = driver.shard_leaders()
    n = len(leaders)
    for room in (run.room_names() if run is not None and n else []):
        name = shards.stream_of(room, n)
        if site is None or leaders.get(name) == site:
            return name
    for name, led in sorted(leaders.items()):
        if led == site:
            return name
    if site:
        raise ActivityFailed(f"no shard is led by {site} now")
    return shards.stream_name(0)


def move_stream_leader(site: str, stream: str = "TALK-00", configuration: Configuration = None,
                       secrets: Secrets = None) -> dict[str, Any]:
    """Set-up, not a fault: make `site`'s replica lead `stream`, so the fault that follows hits
    the leader (the worst case) whatever the placement happened to be."""
    if dry_run(configuration):
        return {"stream": stream, "site": site, "dry_run": True,
                "plan": [f"{site}: move the {stream} leader to a server of {site}"]}
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
