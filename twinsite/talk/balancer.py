"""The shard-leader balancer every primary-site gateway runs: leaders where the traffic is.

Each gateway of site S watches the shards that prefer S (`twinsite.shards.preferred_site`) and,
less often, every other shard; when one is led elsewhere while S's replica is current and stays so
for `hold_s`, it asks the leader to step down with placement `preferred: <S's server>` (JetStream's
own STREAM.LEADER.STEPDOWN). The decision is `shards.BalancePolicy` (pure); this is its loop.

It runs in the gateways because they are deployed in every primary site, by the lab and by the
Pulumi program alike: nothing that balances leadership lives in one site and burns with it.
Several gateways of one site may nudge the same shard in the same instant; the second request
finds the leader already in S (no replica of S left to prefer) and JetStream refuses it harmlessly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

from .. import shards as shardmap
from ..topology import Topology

log = logging.getLogger("twinsite.talk.balancer")
OTHERS_EVERY = 5  # ticks between looks at the shards another site prefers (tie-breaker rule)
MOVES_PER_TICK = 8  # a returning site takes its shards back a few at a time: elections cost CPU


def view_of(stream: str, info: dict, topo: Topology) -> shardmap.ShardView:
    """A STREAM.INFO answer as the policy sees it (servers are named after their zones)."""
    cluster = info.get("cluster") or {}

    def site(server):
        try:
            return topo.site_of(server)
        except KeyError:
            return None
    reps = tuple(shardmap.Replica(r.get("name", ""), site(r.get("name")),
                                  bool(r.get("current")) and not r.get("offline")
                                  and not r.get("lag"))
                 for r in cluster.get("replicas") or [])
    leader = cluster.get("leader")
    return shardmap.ShardView(stream, site(leader) if leader else None, reps)


class Balancer:
    def __init__(self, backend, policy: shardmap.BalancePolicy, topo: Topology):
        self.backend, self.policy, self.topo = backend, policy, topo
        n = backend.settings.shards
        self.mine = shardmap.preferred_shards(policy.site, n, topo)
        self.others = tuple(i for i in range(n) if i not in self.mine)
        self.tiebreakers = frozenset(s.name for s in topo.sites if not s.is_primary)
        self.since: dict[str, float] = {}
        self.last_move: dict[str, float] = {}
        self.moves = 0
        self._budget = MOVES_PER_TICK

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, self.policy.interval_s))  # stagger the site's gateways
        tick = 0
        while not self.backend._closing:
            which = self.mine + (self.others if tick % OTHERS_EVERY == 0 else ())
            self._budget = MOVES_PER_TICK
            try:
                await asyncio.gather(*(self.check(i) for i in which))
            except Exception as e:  # noqa: BLE001 - never let balancing take the gateway down
                log.info("balancer tick failed: %s", e)
            tick += 1
            await asyncio.sleep(self.policy.interval_s)

    async def check(self, shard: int) -> None:
        from .backend import Unavailable
        stream = shardmap.stream_name(shard)
        try:
            info = await self.backend._api(f"STREAM.INFO.{stream}", b"", timeout=1.0)
        except Unavailable:
            self.since.pop(stream, None)
            return
        if info.get("error"):
            return
        view = view_of(stream, info, self.topo)
        target = self.policy.target(view, shardmap.preferred_site(shard, self.topo), self.tiebreakers)
        now = time.monotonic()
        if target is None:
            self.since.pop(stream, None)
            return
        self.since.setdefault(stream, now)
        if not self.policy.due(self.since[stream], self.last_move.get(stream), now) \
                or self._budget <= 0:
            return
        self._budget -= 1
        self.last_move[stream] = now
        self.since.pop(stream, None)
        body = json.dumps({"placement": {"preferred": target}}).encode()
        try:
            resp = await self.backend._api(f"STREAM.LEADER.STEPDOWN.{stream}", body, timeout=2.0)
        except Unavailable as e:
            log.info("balancer: stepdown of %s failed: %s", stream, e)
            return
        if resp.get("error"):
            log.info("balancer: %s stepdown refused: %s", stream, resp["error"].get("description"))
            return
        self.moves += 1
        log.warning("balancer: %s leader %s -> %s (%s)", stream, view.leader_site, target,
                    self.policy.site)
