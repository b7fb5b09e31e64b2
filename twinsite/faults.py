"""The one fault vocabulary of twinsite: faults as small frozen values, resolved against a topology.

Pure: no sockets, no processes, no clocks. A fault names what an operator means ("pangyo loses
power", "throttle pangyo<->ansan to 80 ms"); `resolve(fault, topology)` turns it into an `Effect`:
which zones (and so which NATS servers and gateways) go down or come back, which zone pairs and site
pairs are shaped, cut or healed, the marker the history records, and whether power loss drops unsynced
writes. Every driver (the lab supervisor, the Kubernetes driver) realises effects; nobody re-parses
names. `to_dict`/`from_dict` are the one wire format (the lab's control API and CLI use them), and
`settle` is the bookkeeping of which active faults a restore or heal ends.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from enum import Enum
from itertools import combinations
from typing import Union

from .topology import LinkSpec, Topology

ALL = "all"


class FaultError(ValueError):
    """A fault that cannot be built or resolved; the message is one line naming the bad value."""


class Mode(str, Enum):
    """How a zone goes down. Power: silent (links black-holed first, no FIN/RST escapes), SIGKILL,
    and what was never fsynced is lost. Crash: kill -9; the kernel answers with resets and the page
    cache survives, so nothing written is lost."""
    POWER = "power"
    CRASH = "crash"


class Action(str, Enum):
    DOWN = "down"        # zones lose power or crash
    SHAPE = "shape"      # links get latency / jitter / a bandwidth cap
    CUT = "cut"          # links silently partitioned
    RESTORE = "restore"  # zones come back (and, for "all", every link heals)
    HEAL = "heal"        # links back to their declared characteristics


# --- the faults ----------------------------------------------------------------------------------


def _number(name: str, value, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum:
        raise FaultError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    return value


def _name(what: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise FaultError(f"{what} must be a name, got {value!r}")
    return value


@dataclass(frozen=True)
class ZoneOutage:
    """One zone loses power (mode power) or its processes crash (mode crash)."""
    zone: str
    mode: Mode = Mode.POWER
    KIND: typing.ClassVar[str] = "kill-zone"

    def __post_init__(self):
        _name("zone", self.zone)
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise FaultError(f"mode must be one of {', '.join(m.value for m in Mode)}, "
                             f"got {self.mode!r}") from None


@dataclass(frozen=True)
class SitePowerLoss:
    """Every zone of a site loses power at once (the Pangyo fire); site "all": the whole grid."""
    site: str
    KIND: typing.ClassVar[str] = "cut-power"

    def __post_init__(self):
        _name("site", self.site)


@dataclass(frozen=True)
class LinkShape:
    """The links between two sites or zones get added latency, jitter and a bandwidth cap
    (bandwidth_kbit 0 = no cap)."""
    a: str
    b: str
    latency_ms: float
    jitter_ms: float = 0.0
    bandwidth_kbit: int = 0
    KIND: typing.ClassVar[str] = "throttle"

    def __post_init__(self):
        _name("a", self.a), _name("b", self.b)
        _number("latency_ms", self.latency_ms)
        _number("jitter_ms", self.jitter_ms)
        if self.bandwidth_kbit is None:
            object.__setattr__(self, "bandwidth_kbit", 0)
        elif isinstance(self.bandwidth_kbit, bool) or not isinstance(self.bandwidth_kbit, int) \
                or self.bandwidth_kbit < 0:
            raise FaultError(f"bandwidth_kbit must be a whole number >= 0 (0 = no cap), "
                             f"got {self.bandwidth_kbit!r}")

    @property
    def spec(self) -> LinkSpec:
        return LinkSpec(float(self.latency_ms), float(self.jitter_ms), int(self.bandwidth_kbit))


@dataclass(frozen=True)
class LinkPartition:
    """The links between two sites or zones go silent both ways; connections stay open."""
    a: str
    b: str
    KIND: typing.ClassVar[str] = "partition"

    def __post_init__(self):
        _name("a", self.a), _name("b", self.b)


@dataclass(frozen=True)
class Restore:
    """Power back for a zone, a site or "all"; "all" also heals every link. With every site down
    this is a black start: everything starts, then the whole cluster converges once."""
    target: str = ALL
    timeout_s: float = 60.0
    KIND: typing.ClassVar[str] = "restore"

    def __post_init__(self):
        _name("target", self.target)
        _number("timeout_s", self.timeout_s, minimum=1)


@dataclass(frozen=True)
class Heal:
    """The links between a and b (or every link, with neither) back to their declared shape."""
    a: str | None = None
    b: str | None = None
    KIND: typing.ClassVar[str] = "heal"

    def __post_init__(self):
        if (self.a is None) != (self.b is None):
            raise FaultError("heal: name both ends of a link, or none to heal every link")


Fault = Union[ZoneOutage, SitePowerLoss, LinkShape, LinkPartition, Restore, Heal]
FAULTS: tuple[type, ...] = (ZoneOutage, SitePowerLoss, LinkShape, LinkPartition, Restore, Heal)
BY_KIND: dict[str, type] = {f.KIND: f for f in FAULTS}


# --- what a fault does -----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ZonePair:
    """An undirected link between two zones (the same whichever way round)."""
    a: str
    b: str

    @staticmethod
    def of(x: str, y: str) -> "ZonePair":
        a, b = sorted((x, y))
        return ZonePair(a, b)

    @property
    def key(self) -> str:
        return f"{self.a}~{self.b}"


@dataclass(frozen=True)
class Effect:
    """What a fault does to a topology; drivers realise it, the run context records it."""
    fault: Fault
    action: Action
    zones: tuple[str, ...] = ()               # going down (DOWN) or coming back (RESTORE)
    sites: tuple[str, ...] = ()               # the sites those zones or links belong to
    gateway_zones: tuple[str, ...] = ()       # zones among `zones` that run gateways
    links: tuple[ZonePair, ...] = ()          # shaped, cut or healed
    site_pairs: tuple[tuple[str, str], ...] = ()  # the same links, by site (for per-site drivers)
    mode: Mode | None = None
    shape: LinkSpec | None = None
    marker: str | None = None                 # the history's fault name; None: ends, not starts
    black_start: bool = False                 # restore with every zone of the grid down

    @property
    def silent(self) -> bool:
        """Peers see timeouts, not resets (power loss, partition)."""
        return self.action is Action.CUT or (self.action is Action.DOWN and self.mode is Mode.POWER)

    @property
    def drops_unsynced(self) -> bool:
        return self.action is Action.DOWN and self.mode is Mode.POWER

    def summary(self) -> dict:
        """The effect as plain data (for a journal, a dry-run plan, the lab's answer)."""
        out = {"action": self.action.value, "fault": to_dict(self.fault)}
        for name in ("zones", "sites", "gateway_zones"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.links:
            out["links"] = [p.key for p in self.links]
            out["site_pairs"] = [list(p) for p in self.site_pairs]
        if self.mode is not None:
            out["mode"] = self.mode.value
            out["drops_unsynced"] = self.drops_unsynced
        if self.shape is not None:
            out["shape"] = dataclasses.asdict(self.shape)
        if self.marker:
            out["marker"] = self.marker
        if self.black_start:
            out["black_start"] = True
        return out


POWER_MARKERS = ("zone-power:", "site-power:", "grid-power")


def is_power_marker(name: str) -> bool:
    """Whether a history fault marker (Effect.marker) names a power loss (zone, site or grid)."""
    return str(name).startswith(POWER_MARKERS)


def valid_sites(topo: Topology) -> str:
    return ", ".join(s.name for s in topo.sites)


def valid_names(topo: Topology) -> str:
    return ", ".join([s.name for s in topo.sites] + [z.name for z in topo.zones])


def zones_of(topo: Topology, name: str) -> tuple[str, ...]:
    """A site's zones, the zone itself, or every zone for "all"."""
    if name == ALL:
        return tuple(z.name for z in topo.zones)
    for s in topo.sites:
        if s.name == name:
            return s.zone_names
    for z in topo.zones:
        if z.name == name:
            return (z.name,)
    raise FaultError(f"unknown site or zone '{name}' (valid: {valid_names(topo)}, or all)")


def all_links(topo: Topology) -> tuple[ZonePair, ...]:
    return tuple(sorted(ZonePair.of(x, y)
                        for x, y in combinations([z.name for z in topo.zones], 2)))


def links_between(topo: Topology, a: str, b: str) -> tuple[ZonePair, ...]:
    """The zone pairs between everything named a and everything named b (a site with itself:
    its intra-site links)."""
    za, zb = zones_of(topo, a), zones_of(topo, b)
    pairs = sorted({ZonePair.of(x, y) for x in za for y in zb if x != y})
    if not pairs:
        raise FaultError(f"no link between '{a}' and '{b}' (name two different zones or sites)")
    return tuple(pairs)


def _sites_of(topo: Topology, zones) -> tuple[str, ...]:
    wanted = set(zones)
    return tuple(s.name for s in topo.sites if wanted & set(s.zone_names))


def _site_pairs(topo: Topology, links) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({tuple(sorted((topo.site_of(p.a), topo.site_of(p.b)))) for p in links}))


def _gateway_zones(topo: Topology, zones) -> tuple[str, ...]:
    gz = {z for s in topo.primary_sites for z in s.gateway_zones}
    return tuple(z for z in zones if z in gz)


def _down(fault: Fault, topo: Topology, zones: tuple[str, ...], mode: Mode, marker: str) -> Effect:
    return Effect(fault, Action.DOWN, zones=zones, sites=_sites_of(topo, zones),
                  gateway_zones=_gateway_zones(topo, zones), mode=mode, marker=marker)


def _links(fault: Fault, topo: Topology, action: Action, links, marker=None, shape=None) -> Effect:
    return Effect(fault, action, links=tuple(links), site_pairs=_site_pairs(topo, links),
                  sites=tuple(s.name for s in topo.sites
                              if any(topo.site_of(z) == s.name for p in links for z in (p.a, p.b))),
                  shape=shape, marker=marker)


def resolve(fault: Fault, topo: Topology, down: frozenset[str] = frozenset()) -> Effect:
    """The effect of `fault` on `topo`. `down`: zones already down (a restore of every zone while
    all are down is a black start). Unknown names raise FaultError listing the valid ones."""
    if isinstance(fault, ZoneOutage):
        if fault.zone not in {z.name for z in topo.zones}:
            raise FaultError(f"unknown zone '{fault.zone}' (valid: "
                             f"{', '.join(z.name for z in topo.zones)})")
        return _down(fault, topo, (fault.zone,), fault.mode, f"zone-{fault.mode.value}:{fault.zone}")
    if isinstance(fault, SitePowerLoss):
        if fault.site != ALL and fault.site not in {s.name for s in topo.sites}:
            raise FaultError(f"unknown site '{fault.site}' (valid: {valid_sites(topo)}, or all)")
        marker = "grid-power" if fault.site == ALL else f"site-power:{fault.site}"
        return _down(fault, topo, zones_of(topo, fault.site), Mode.POWER, marker)
    if isinstance(fault, LinkShape):
        links = links_between(topo, fault.a, fault.b)
        return _links(fault, topo, Action.SHAPE, links, shape=fault.spec,
                      marker=f"throttle:{'<->'.join(sorted((fault.a, fault.b)))}")
    if isinstance(fault, LinkPartition):
        links = links_between(topo, fault.a, fault.b)
        return _links(fault, topo, Action.CUT, links,
                      marker=f"partition:{'<->'.join(sorted((fault.a, fault.b)))}")
    if isinstance(fault, Restore):
        zones = zones_of(topo, fault.target)
        every = tuple(z.name for z in topo.zones)
        links = all_links(topo) if fault.target == ALL else ()
        return Effect(fault, Action.RESTORE, zones=zones, sites=_sites_of(topo, zones),
                      gateway_zones=_gateway_zones(topo, zones), links=links,
                      site_pairs=_site_pairs(topo, links),
                      black_start=fault.target == ALL and set(every) <= set(down))
    if isinstance(fault, Heal):
        links = all_links(topo) if fault.a is None else links_between(topo, fault.a, fault.b)
        return _links(fault, topo, Action.HEAL, links)
    raise FaultError(f"not a fault: {fault!r}")


# --- which faults are active, and what ends them -----------------------------------------------------


def settle(active: tuple[Effect, ...], effect: Effect) -> tuple[tuple[Effect, ...], tuple[Effect, ...]]:
    """(still active, ended) after `effect`. A restore ends the zone faults whose zones all came
    back; a heal (or restore all) ends the link faults whose links all healed; a fault that starts
    is added (replacing an active one with the same marker)."""
    if effect.marker:
        kept = tuple(e for e in active if e.marker != effect.marker)
        return kept + (effect,), ()
    back, healed = set(effect.zones), set(effect.links)
    ended = tuple(e for e in active
                  if (e.action is Action.DOWN and effect.action is Action.RESTORE
                      and set(e.zones) <= back)
                  or (e.action in (Action.SHAPE, Action.CUT) and set(e.links) <= healed
                      and healed))
    return tuple(e for e in active if e not in ended), ended


# --- the wire format ------------------------------------------------------------------------------


def to_dict(fault: Fault) -> dict:
    out = {"kind": fault.KIND}
    for f in dataclasses.fields(fault):
        v = getattr(fault, f.name)
        out[f.name] = v.value if isinstance(v, Enum) else v
    return out


def from_dict(doc) -> Fault:
    """A fault from its wire form {"kind": ..., fields...}; unknown kinds or keys are one line."""
    if not isinstance(doc, dict):
        raise FaultError(f"a fault is a JSON object with a 'kind', got {doc!r}")
    kind = doc.get("kind")
    cls = BY_KIND.get(kind)
    if cls is None:
        raise FaultError(f"unknown fault kind {kind!r} (valid: {', '.join(BY_KIND)})")
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(doc) - names - {"kind"})
    if extra:
        raise FaultError(f"{kind}: unknown argument(s) {', '.join(extra)} "
                         f"(valid: {', '.join(sorted(names))})")
    try:
        return cls(**{k: v for k, v in doc.items() if k != "kind"})
    except TypeError as e:
        raise FaultError(f"{kind}: {e}") from None


def fields_of(cls: type) -> list[tuple[str, type, object]]:
    """(name, type, default or MISSING) of a fault class, for generated command lines."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.default) for f in dataclasses.fields(cls)]


__all__ = ["ALL", "Action", "BY_KIND", "Effect", "FAULTS", "Fault", "FaultError", "Heal", "is_power_marker",
           "LinkPartition", "LinkShape", "Mode", "Restore", "SitePowerLoss", "ZoneOutage",
           "ZonePair", "all_links", "fields_of", "from_dict", "links_between", "resolve", "settle",
           "to_dict", "valid_names", "valid_sites", "zones_of"]
