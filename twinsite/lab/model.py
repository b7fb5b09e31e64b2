"""The lab's pure bookkeeping: which processes and links a topology needs, and what a fault name means.

No sockets, no processes: the supervisor does the I/O. Names on the command line (`a`, `b`,
`restore TARGET`) may be a site or a zone; `zones_of` resolves them or raises `LabError` with one
line listing the valid names.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from ..topology import LinkSpec, Topology


class LabError(Exception):
    """A lab operation that cannot be done; the message is one line meant for a human."""


@dataclass(frozen=True)
class GatewayPlan:
    name: str
    site: str
    zone: str


def gateway_plans(topo: Topology) -> tuple[GatewayPlan, ...]:
    """Gateways in each primary site's gateway zones (`replicasPerZone` each)."""
    n = topo.gateway.replicas_per_zone
    return tuple(GatewayPlan(f"gw-{z}" if n == 1 else f"gw-{z}-{i + 1}", s.name, z)
                 for s in topo.primary_sites for z in s.gateway_zones for i in range(n))


def pair_key(a: str, b: str) -> str:
    """The name of the undirected link between two zones (same whichever way round)."""
    x, y = sorted((a, b))
    return f"{x}~{y}"


def zone_pairs(topo: Topology) -> list[tuple[str, str]]:
    return [tuple(sorted(p)) for p in combinations([z.name for z in topo.zones], 2)]


def valid_names(topo: Topology) -> str:
    return ", ".join([s.name for s in topo.sites] + [z.name for z in topo.zones])


def zones_of(topo: Topology, name: str) -> tuple[str, ...]:
    """A site's zones, or the zone itself."""
    for s in topo.sites:
        if s.name == name:
            return s.zone_names
    for z in topo.zones:
        if z.name == name:
            return (z.name,)
    raise LabError(f"unknown site or zone '{name}' (valid: {valid_names(topo)})")


def pairs_between(topo: Topology, a: str, b: str) -> list[str]:
    """Link keys between everything named `a` and everything named `b` (a site with itself:
    its intra-site links)."""
    za, zb = zones_of(topo, a), zones_of(topo, b)
    keys = sorted({pair_key(x, y) for x in za for y in zb if x != y})
    if not keys:
        raise LabError(f"no link between '{a}' and '{b}' (name two different zones or sites)")
    return keys


def link_state(spec: LinkSpec, default: LinkSpec, partitioned: bool, down: bool) -> str:
    if down:
        return "down"
    if partitioned:
        return "partitioned"
    return "ok" if spec == default else "throttled"


MODES = ("power", "crash")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise LabError(f"unknown mode '{mode}' (valid: {', '.join(MODES)})")
    return mode


def check_shape(latency_ms, bandwidth_kbit, jitter_ms) -> LinkSpec:
    try:
        latency, jitter = float(latency_ms), float(jitter_ms or 0)
        bandwidth = int(bandwidth_kbit or 0)
    except (TypeError, ValueError):
        raise LabError("throttle: latency_ms, jitter_ms and bandwidth_kbit must be numbers") from None
    if latency < 0 or jitter < 0 or bandwidth < 0:
        raise LabError("throttle: latency_ms, jitter_ms and bandwidth_kbit must be >= 0")
    return LinkSpec(latency_ms=latency, jitter_ms=jitter, bandwidth_kbit=bandwidth)
