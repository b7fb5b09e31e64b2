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


@dataclass(frozen=True)
class MetaView:
    """One server's view of the JetStream meta group (its /raftz): what a split is judged on."""

    zone: str
    state: str  # LEADER, FOLLOWER, CANDIDATE, ...
    term: int
    voted_for: str  # node id, "" if none this term
    leader: str  # node id, "" if none
    size: int  # the group size it expects


def meta_split(views: list[MetaView], servers: int) -> bool:
    """True when the first meta election can no longer elect anybody in its term.

    On a fresh cluster every log is empty, and nats-server then makes a candidate leader only
    when *every* member of its expected group (`size`) granted its vote. Votes are cast once per
    term, so a candidate (or a server yet to campaign) can at best win the votes already cast for
    it plus those not cast yet; below `size` for everyone, only a Raft election timeout (4-9 s)
    starts a new term. Servers that did not answer count as not having voted (never a false
    split: a stale view can only show fewer votes cast than there are)."""
    if not views or any(v.leader or v.state == "LEADER" for v in views):
        return False
    term = max(v.term for v in views)
    if term < 1 or any(v.term not in (0, term) for v in views):
        return False  # not started, or terms moving on: judged by time instead
    cast = [v.voted_for for v in views if v.term == term and v.voted_for]
    uncast = servers - len(cast)
    best = max((cast.count(c) for c in set(cast)), default=0)
    return best + uncast < min(v.size for v in views)


def meta_request_lost(views: list[MetaView]) -> bool:
    """True when a candidate's vote request visibly missed a server: somebody campaigns in term
    1 or later while another server that answers is still in term 0.

    nats-server sends a vote request once, over the system account's route to each peer; a
    server without that route yet never sees it (7 of 9 split first elections in debug logs of
    20 boots: the first candidate campaigned before the route mesh was complete). Its grant is
    then missing for good, and on empty logs every grant is needed. Only meaningful once a vote
    round trip has passed since the campaign (the caller waits `REQUEST_LOST_AFTER_S`): a
    request still in flight looks the same."""
    if not views or any(v.leader or v.state == "LEADER" for v in views):
        return False
    campaigning = any(v.state == "CANDIDATE" and v.term >= 1 for v in views)
    return campaigning and any(v.term == 0 for v in views)
