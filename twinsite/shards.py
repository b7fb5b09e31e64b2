"""Rooms over stream shards, and where each shard's leader belongs (pure).

Rooms are spread over `N` JetStream streams `TALK-00` ... by a stable hash of the room name
(CRC-32 of its UTF-8 bytes: the same in every process, language and release, unlike Python's
`hash()`), so a room's messages stay in one stream and `seq` keeps its per-room meaning. Each
shard is its own Raft group: a site that burns stalls only the shards it led.

Shard `i` prefers primary site `i mod P` (P primary sites, in the stack's order), so leadership is
split between the data centers and the tie-breaker leads nothing while a primary replica is
current. `BalancePolicy` is the pure decision the gateways' balancer loop (`talk.balancer`) runs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .topology import Topology

PREFIX = "TALK"


def stream_name(shard: int) -> str:
    return f"{PREFIX}-{shard:02d}"


def shard_of(room: str, shards: int) -> int:
    return zlib.crc32(room.encode()) % shards


def stream_of(room: str, shards: int) -> str:
    return stream_name(shard_of(room, shards))


def shard_index(stream: str) -> int | None:
    """The index of a shard stream's name (`TALK-07` -> 7), None for any other stream."""
    head, _, tail = stream.rpartition("-")
    return int(tail) if head == PREFIX and tail.isdigit() else None


def preferred_site(shard: int, topo: Topology) -> str:
    primaries = topo.primary_sites
    return primaries[shard % len(primaries)].name


def preferred_shards(site: str, shards: int, topo: Topology) -> tuple[int, ...]:
    return tuple(i for i in range(shards) if preferred_site(i, topo) == site)


def room_home(room: str, shards: int, topo: Topology) -> str:
    """The site whose gateways a client of `room` should use: the one its shard's leader prefers,
    so a write does not cross the WAN twice and a burning site stalls only its own rooms."""
    return preferred_site(shard_of(room, shards), topo)


# --- the balancer's decision ---------------------------------------------------------------------

@dataclass(frozen=True)
class Replica:
    server: str
    site: str
    current: bool  # in sync with the leader (JetStream's `current`, not offline, no lag)


@dataclass(frozen=True)
class ShardView:
    """One observation of a shard's placement (from STREAM.INFO)."""

    stream: str
    leader_site: str | None
    replicas: tuple[Replica, ...]  # the followers


@dataclass(frozen=True)
class BalancePolicy:
    """When a gateway of `site` moves a shard's leader to its own site.

    Hysteresis: a move happens only after the condition held for `hold_s` (the replica is current
    and stays so: it caught up, it is not merely back), at most once per `cooldown_s` per shard,
    and only *towards* the preferred site (or out of the tie-breaker): nothing ever moves a leader
    away from where it belongs, so two balancers cannot pull one shard back and forth.
    """

    site: str
    hold_s: float = 3.0
    cooldown_s: float = 10.0
    interval_s: float = 1.0

    def target(self, view: ShardView, preferred: str, tiebreakers: frozenset[str]) -> str | None:
        """The server of this site to hand leadership to now (ignoring time), or None."""
        if view.leader_site is None or view.leader_site == preferred:
            return None  # an election is running, or the shard is where it belongs
        mine = next((r for r in view.replicas if r.site == self.site and r.current), None)
        if mine is None:
            return None
        if preferred == self.site:
            return mine.server
        # Not ours to lead, but never left in the tie-breaker while a primary replica is current:
        # take it only when the preferred site has no current replica.
        preferred_current = any(r.site == preferred and r.current for r in view.replicas)
        if view.leader_site in tiebreakers and not preferred_current:
            return mine.server
        return None

    def due(self, since: float | None, last_move: float | None, now: float) -> bool:
        """The condition has held since `since`; the last move of this shard was `last_move`."""
        return (since is not None and now - since >= self.hold_s
                and (last_move is None or now - last_move >= self.cooldown_s))
