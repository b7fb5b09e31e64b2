"""The lab's pure bookkeeping: which gateway processes a topology needs, and a link's state.

No sockets, no processes: the supervisor does the I/O. What a fault means is `twinsite.faults`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from ..faults import ZonePair
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
    """The fabric's name of the undirected link between two zones."""
    return ZonePair.of(a, b).key


def link_state(spec: LinkSpec, default: LinkSpec, partitioned: bool, down: bool) -> str:
    if down:
        return "down"
    if partitioned:
        return "partitioned"
    return "ok" if spec == default else "throttled"


def boot_dialler(zones: tuple[str, ...], a: str, b: str) -> str:
    """Of two zones, the one whose server dials the other's routes while the lab boots: the later
    in topology order. Both keep every route configured (nats-server sizes a fresh meta group
    from its configured routes); only the dialling is one-sided, so no pair races two
    simultaneous route handshakes (see `Supervisor.boot_nats`)."""
    return a if zones.index(a) > zones.index(b) else b
