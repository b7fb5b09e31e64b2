"""Capacity model (pure): how many gateway replicas each primary site runs, and how many stream
shards the message engine needs.

The lesson of a data center lost to fire is N+1 at the *site* level: either primary site alone must
carry the surge peak (baseline x surge), because the day a site burns may be the day of the final.
So every primary site's HPA may grow to the whole surge on its own (max), while in normal times
it runs only its share of the baseline (min). The per-replica capacity is a measured number
(`twinsite:gateway.capacityMsgsPerS`), not a guess; see README "Capacity model".

The engine is counted the same way: one R3 stream with fsync before ack is one Raft group, bounded
by its leader (`twinsite:messaging.streamCapacityMsgsPerS`, measured by bench/bench_shards.py). When
a site burns, the other leads every shard, so the shards together must carry the surge peak:
shards = ceil(surge / per-shard capacity), at least one per primary site (each leads one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .topology import Topology


@dataclass(frozen=True)
class SitePlan:
    site: str
    gateway_zones: tuple[str, ...]
    min_replicas: int  # HPA min and the Deployment's initial replicas: the site's baseline share
    max_replicas: int  # HPA max: the surge peak carried by this site alone (or a declared cap)
    capped: bool  # max comes from the site's maxGatewayReplicas, not from the model

    def max_capacity_msgs_per_s(self, per_replica: float) -> float:
        return self.max_replicas * per_replica


@dataclass(frozen=True)
class CapacityPlan:
    per_replica_msgs_per_s: float
    baseline_msgs_per_s: float
    surge_peak_msgs_per_s: float
    new_year_peak_msgs_per_s: float
    sites: tuple[SitePlan, ...]
    per_shard_msgs_per_s: float = 0.0
    shards: int = 1          # the streams the stack runs (declared, else shards_needed)
    shards_needed: int = 1   # ceil(surge / per-shard), >= one per primary site
    shards_declared: bool = False

    @property
    def engine_msgs_per_s(self) -> float:
        """What the message engine carries when one site leads every shard (the other burnt)."""
        return self.shards * self.per_shard_msgs_per_s

    def engine_shortfall(self) -> float:
        """msgs/s the shards lack to carry the surge peak from one site (0 when they do)."""
        return max(0.0, self.surge_peak_msgs_per_s - self.engine_msgs_per_s)

    def site(self, name: str) -> SitePlan:
        for s in self.sites:
            if s.site == name:
                return s
        raise KeyError(name)

    def shortfalls(self) -> dict[str, float]:
        """msgs/s each primary site lacks to carry the surge peak alone (only sites that lack)."""
        return {s.site: self.surge_peak_msgs_per_s - s.max_capacity_msgs_per_s(self.per_replica_msgs_per_s)
                for s in self.sites
                if s.max_capacity_msgs_per_s(self.per_replica_msgs_per_s) < self.surge_peak_msgs_per_s}


def replicas_for(msgs_per_s: float, per_replica: float) -> int:
    return max(1, math.ceil(msgs_per_s / per_replica))


def plan(topo: Topology) -> CapacityPlan:
    t, gw = topo.traffic, topo.gateway
    primaries = topo.primary_sites
    c = gw.capacity_msgs_per_s
    surge = t.surge_peak_msgs_per_s
    sites = []
    for s in primaries:
        # At least replicasPerZone in each gateway zone, so a zone loss never empties the site.
        floor = gw.replicas_per_zone * len(s.gateway_zones)
        baseline_share = replicas_for(t.baseline_msgs_per_s / len(primaries), c)
        surge_alone = replicas_for(surge, c)
        max_replicas = s.max_gateway_replicas or max(surge_alone, floor)
        min_replicas = min(max(baseline_share, floor), max_replicas)
        sites.append(SitePlan(s.name, s.gateway_zones, min_replicas, max_replicas,
                              capped=s.max_gateway_replicas is not None))
    m = topo.messaging
    needed = max(replicas_for(surge, m.stream_capacity_msgs_per_s), len(primaries))
    return CapacityPlan(c, t.baseline_msgs_per_s, surge, t.baseline_msgs_per_s * t.new_year_factor,
                        tuple(sites), m.stream_capacity_msgs_per_s, m.stream_shards or needed,
                        needed, m.stream_shards is not None)


def lab_shard_count(topo: Topology) -> int:
    """The shards the local lab runs (`messaging.labStreamShards`, else the deployed count)."""
    return topo.messaging.lab_stream_shards or shard_count(topo)


def shard_count(topo: Topology) -> int:
    """The number of stream shards the deployment runs (`twinsite.shards` spreads rooms over them)."""
    return plan(topo).shards


def explain(topo: Topology) -> str:
    """The arithmetic in words, for humans (render prints it, README quotes it)."""
    p = plan(topo)
    n = len(p.sites)
    lines = [
        f"per-gateway capacity {p.per_replica_msgs_per_s:g} msgs/s; baseline {p.baseline_msgs_per_s:g}, "
        f"surge peak {p.surge_peak_msgs_per_s:g} (x{topo.traffic.surge_factor:g}), "
        f"New Year {p.new_year_peak_msgs_per_s:g} (x{topo.traffic.new_year_factor:g})",
    ]
    for s in p.sites:
        cap = s.max_capacity_msgs_per_s(p.per_replica_msgs_per_s)
        how = "declared cap" if s.capped else \
            f"ceil({p.surge_peak_msgs_per_s:g}/{p.per_replica_msgs_per_s:g})"
        ok = "carries the surge alone" if cap >= p.surge_peak_msgs_per_s else \
            f"SHORT by {p.surge_peak_msgs_per_s - cap:g} msgs/s"
        lines.append(
            f"  {s.site}: min {s.min_replicas} = ceil({p.baseline_msgs_per_s:g}/{n}/"
            f"{p.per_replica_msgs_per_s:g}) (>= 1 per gateway zone), max {s.max_replicas} = {how} "
            f"-> {cap:g} msgs/s, {ok}")
    how = "declared (messaging.streamShards)" if p.shards_declared else "from the model"
    ok = "carries the surge from either site" if not p.engine_shortfall() else \
        f"SHORT by {p.engine_shortfall():g} msgs/s (needs {p.shards_needed} shards)"
    lines.append(
        f"  engine: per-shard capacity {p.per_shard_msgs_per_s:g} msgs/s; shards needed "
        f"ceil({p.surge_peak_msgs_per_s:g}/{p.per_shard_msgs_per_s:g}) = {p.shards_needed} "
        f"(>= 1 per primary site); runs {p.shards} {how}; one site leading all {p.shards} -> "
        f"{p.engine_msgs_per_s:g} msgs/s, {ok}")
    if topo.messaging.lab_stream_shards:
        lines.append(f"  lab: drills {topo.messaging.lab_stream_shards} shards on one machine "
                     f"(messaging.labStreamShards); deployments run {p.shards}")
    return "\n".join(lines)
