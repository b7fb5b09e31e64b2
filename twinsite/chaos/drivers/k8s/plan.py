"""What a fault effect means on the clusters of a stack, as a list of API operations. Pure.

The driver reads each site's cluster into a `SiteView` (nodes by zone, twinsite pods, the chaos
objects and node marks of runs), `plan()` turns an effect into `Op`s, and the driver executes
them — or, in a dry run, prints them. Semantics (as AWS FIS's AZ power interruption, and Chaos Mesh):
- zone power loss: first silent (a partition isolating the zone's twinsite pods, so peers see
  timeouts, not resets), then the zone's nodes cordoned and tainted `twinsite.io/power=off:NoExecute`
  (nothing is rescheduled into the dead zone), then its pods force-deleted (grace 0);
- zone crash: the zone's pods deleted with grace 0, nothing else (they come back);
- link shape / partition between two sites: one NetworkChaos in *each* site's cluster selecting the
  local twinsite pods, aimed at the other site's addresses; inside a site: pods of one zone against
  the pods of the other;
- restore / heal: exactly undo what this run did (its objects carry the run label, its node marks
  the run's annotation), then wait until every workload is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

from twinsite import faults
from twinsite.faults import Action, Effect
from twinsite.topology import Topology

from . import chaosmesh as cm

TAINT_KEY, TAINT_VALUE, TAINT_EFFECT = "twinsite.io/power", "off", "NoExecute"
CORDONED_BY, TAINTED_BY = "twinsite.io/cordoned-by", "twinsite.io/tainted-by"


class Verb(str, Enum):
    CREATE_CHAOS = "create NetworkChaos"
    DELETE_CHAOS = "delete NetworkChaos"
    CORDON = "cordon node"
    TAINT = "taint node"
    UNTAINT = "untaint node"
    UNCORDON = "uncordon node"
    DELETE_POD = "force-delete pod"
    WAIT_READY = "wait until ready"


@dataclass(frozen=True)
class Op:
    verb: Verb
    site: str
    name: str                       # the object: a node, a pod, a NetworkChaos, or the namespace
    body: Mapping | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"{self.site}: {self.verb.value} {self.name}"


@dataclass(frozen=True)
class Node:
    name: str
    zone: str | None
    unschedulable: bool = False
    cordoned_by: str | None = None   # the run that cordoned it (an annotation), if any
    tainted_by: str | None = None


@dataclass(frozen=True)
class Pod:
    name: str
    node: str | None


@dataclass(frozen=True)
class Chaos:
    name: str
    run: str | None
    fault: str | None
    zone: str | None
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteView:
    """One site's cluster as the driver read it (twinsite's namespace only)."""
    site: str
    namespace: str
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()
    chaos: tuple[Chaos, ...] = ()
    addresses: tuple[str, ...] = ()  # how other sites reach this one (hosts, IPs, CIDRs)

    def zone_nodes(self, zone: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.zone == zone)

    def zone_pods(self, zone: str) -> tuple[Pod, ...]:
        names = {n.name for n in self.zone_nodes(zone)}
        return tuple(p for p in self.pods if p.node in names)


class PlanError(ValueError):
    """The effect cannot be realised on these clusters; one line."""


def plan(effect: Effect, topo: Topology, views: Mapping[str, SiteView], run: str) -> tuple[Op, ...]:
    if effect.action is Action.DOWN:
        return tuple(op for z in effect.zones for op in _zone_down(effect, topo, views, run, z))
    if effect.action in (Action.SHAPE, Action.CUT):
        return _links(effect, topo, views, run)
    if effect.action is Action.RESTORE:
        return _restore(effect, topo, views, run)
    return _heal(effect, views, run)


def _zone_down(effect: Effect, topo: Topology, views, run: str, zone: str) -> list[Op]:
    site = topo.site_of(zone)
    v = views[site]
    if not v.zone_nodes(zone):
        raise PlanError(f"site {site}: no node labelled {cm.ZONE_KEY}={zone} in its cluster")
    ops: list[Op] = []
    if effect.mode is faults.Mode.POWER:
        ns = v.namespace
        ops.append(Op(Verb.CREATE_CHAOS, site, cm.object_name(run, "power", zone), cm.network_chaos(
            cm.object_name(run, "power", zone), ns, run, "zone-power", selector=cm.pods(ns, zone),
            direction="both", target=cm.pods(ns), zone=zone)))
        external = _external(topo, views, exclude=site)
        if external:
            name = cm.object_name(run, "power", zone, "wan")
            ops.append(Op(Verb.CREATE_CHAOS, site, name, cm.network_chaos(
                name, ns, run, "zone-power", selector=cm.pods(ns, zone), direction="to",
                external=external, zone=zone)))
        for n in v.zone_nodes(zone):
            if not n.unschedulable:
                ops.append(Op(Verb.CORDON, site, n.name))
            ops.append(Op(Verb.TAINT, site, n.name))
    ops += [Op(Verb.DELETE_POD, site, p.name) for p in v.zone_pods(zone)]
    return ops


def _external(topo: Topology, views, exclude: str, only: str | None = None) -> tuple[str, ...]:
    """The addresses of the other sites (or of site `only`)."""
    return tuple(sorted({a for s, v in views.items() if s != exclude and (only is None or s == only)
                         for a in v.addresses}))


def _links(effect: Effect, topo: Topology, views, run: str) -> tuple[Op, ...]:
    fault = "link"
    ops: list[Op] = []
    by_side: dict[tuple[str, str], list[faults.ZonePair]] = {}
    for pair in effect.links:
        sa, sb = topo.site_of(pair.a), topo.site_of(pair.b)
        if sa == sb:
            ns = views[sa].namespace
            name = cm.object_name(run, "link", pair.key)
            ops.append(Op(Verb.CREATE_CHAOS, sa, name, cm.network_chaos(
                name, ns, run, fault, selector=cm.pods(ns, pair.a), target=cm.pods(ns, pair.b),
                direction="both", shape=effect.shape, links=(pair.key,))))
        else:
            by_side.setdefault((sa, sb), []).append(pair)
            by_side.setdefault((sb, sa), []).append(pair)
    for (local, remote), pairs in sorted(by_side.items()):
        external = _external(topo, views, exclude=local, only=remote)
        if not external:
            raise PlanError(f"link {local}<->{remote}: no address of site {remote} is known "
                            f"(declare its routeAddresses, gatewayUrl or externalCidrs in the stack)")
        local_zones = sorted({z for p in pairs for z in (p.a, p.b) if topo.site_of(z) == local})
        whole = set(local_zones) == set(topo.site(local).zone_names)
        ns = views[local].namespace
        for zone in ([None] if whole else local_zones):
            keys = tuple(sorted(p.key for p in pairs if zone is None or zone in (p.a, p.b)))
            name = cm.object_name(run, "link", local, remote, zone or "")
            ops.append(Op(Verb.CREATE_CHAOS, local, name, cm.network_chaos(
                name, ns, run, fault, selector=cm.pods(ns, zone), direction="to",
                external=external, shape=effect.shape, links=keys)))
    return tuple(ops)


def _restore(effect: Effect, topo: Topology, views, run: str) -> tuple[Op, ...]:
    zones = set(effect.zones)
    healed = {p.key for p in effect.links}
    ops: list[Op] = []
    for site, v in views.items():
        for c in v.chaos:
            if c.run != run:
                continue
            if (c.fault == "zone-power" and c.zone in zones) or \
                    (c.fault == "link" and healed and set(c.links) <= healed):
                ops.append(Op(Verb.DELETE_CHAOS, site, c.name))
        for n in v.nodes:
            if n.zone not in zones:
                continue
            if n.tainted_by == run:
                ops.append(Op(Verb.UNTAINT, site, n.name))
            if n.cordoned_by == run:
                ops.append(Op(Verb.UNCORDON, site, n.name))
    ops += [Op(Verb.WAIT_READY, s, views[s].namespace) for s in effect.sites if s in views]
    return tuple(ops)


def _heal(effect: Effect, views, run: str) -> tuple[Op, ...]:
    healed = {p.key for p in effect.links}
    return tuple(Op(Verb.DELETE_CHAOS, site, c.name) for site, v in views.items() for c in v.chaos
                 if c.run == run and c.fault == "link" and set(c.links) <= healed)
