"""Who leads a JetStream stream, and moving its leadership (JetStream's own API over NATS).

Drills are only as strong as the fault they inject: a zone that holds no leader can die without
anyone noticing. These helpers let an experiment put the stream leader where the fault will hit,
so every run exercises a Raft election instead of depending on where the leader happened to be.
"""

from __future__ import annotations

import asyncio
import json
import time

import nats

from twinsite.natsclient import NatsAuth, connect_options

API = "$JS.API"


class JetStreamError(RuntimeError):
    """A JetStream API call that failed; one line."""


class _Transient(JetStreamError):
    """A view that cannot be trusted yet (asked again until the deadline)."""


async def _request(nc, subject: str, body: dict | None = None, timeout: float = 3.0) -> dict:
    msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=timeout)
    doc = json.loads(msg.data or b"{}")
    if doc.get("error"):
        raise JetStreamError(doc["error"].get("description") or str(doc["error"]))
    return doc


async def _connect(urls: list[str], auth: NatsAuth | None = None):
    """As the operations user (`twinsite.natsconf.OPS_USER`) over TLS, where `auth` says so."""
    return await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=1,
                              allow_reconnect=False, **connect_options(auth))


def stream_placement(urls: list[str], stream: str, auth: NatsAuth | None = None) -> dict:
    """{"leader": server, "replicas": [servers...]} of a stream."""
    async def go():
        nc = await _connect(urls, auth)
        try:
            doc = await _request(nc, f"{API}.STREAM.INFO.{stream}")
        finally:
            await nc.close()
        cluster = doc.get("cluster") or {}
        return {"leader": cluster.get("leader"),
                "replicas": [r["name"] for r in cluster.get("replicas") or []]}
    return asyncio.run(go())


def stream_leaders(urls: list[str], streams: list[str], auth: NatsAuth | None = None,
                   timeout: float = 2.0) -> dict[str, str | None]:
    """{stream: leading server, or None (no leader now, or no answer)} for many streams at once."""
    async def go():
        nc = await _connect(urls, auth)
        try:
            async def one(name):
                try:
                    doc = await _request(nc, f"{API}.STREAM.INFO.{name}", timeout=timeout)
                except (JetStreamError, nats.errors.Error, asyncio.TimeoutError):
                    return None
                return (doc.get("cluster") or {}).get("leader")
            return dict(zip(streams, await asyncio.gather(*(one(n) for n in streams))))
        finally:
            await nc.close()
    return asyncio.run(go())


def placement_view(doc: dict) -> tuple[str | None, list[str], bool]:
    """(leader, every server holding a replica, consistent?) from a STREAM.INFO answer.

    JetStream lists the leader under `cluster.leader` and the other peers under
    `cluster.replicas`. An answer given mid leader-transition can be inconsistent: the leader
    repeated among the replicas (so one real replica is missing from the view), or fewer
    distinct servers than the stream's replica count. Only a consistent view may be used to
    conclude that a server holds no replica."""
    cluster = doc.get("cluster") or {}
    leader = cluster.get("leader")
    others = [r.get("name") for r in cluster.get("replicas") or []]
    servers = ([leader] if leader else []) + others
    distinct = set(servers)
    want = (doc.get("config") or {}).get("num_replicas")
    consistent = (None not in distinct and len(distinct) == len(servers)
                  and (not isinstance(want, int) or len(distinct) >= want))
    return leader, list(dict.fromkeys(s for s in servers if s)), consistent


def move_leader(urls: list[str], stream: str, candidates: list[str], timeout: float = 15.0,
                auth: NatsAuth | None = None) -> str:
    """Make one of `candidates` (server names) the stream's leader; returns the new leader.
    The candidate must hold a replica; no-op when one already leads. A placement view that is
    inconsistent (`placement_view`) is asked again until the deadline."""
    async def go():
        nc = await _connect(urls, auth)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    doc = await _request(nc, f"{API}.STREAM.INFO.{stream}")
                    leader, replicas, consistent = placement_view(doc)
                    target = next((c for c in candidates if c in replicas), None)
                    if target is None:
                        why = (f"stream {stream} has no replica on {', '.join(candidates)} "
                               f"(replicas: {', '.join(replicas)})")
                        if consistent:
                            raise JetStreamError(why)
                        # mid-transition view: ask again; at the deadline say what was seen
                        raise _Transient(why + " in an inconsistent view (mid leader change)")
                    if leader == target:
                        return leader
                    if leader:  # no leader: an election is running, ask again after it
                        await _request(nc, f"{API}.STREAM.LEADER.STEPDOWN.{stream}",
                                       {"placement": {"preferred": target}})
                except (JetStreamError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
                    if isinstance(e, JetStreamError) and not isinstance(e, _Transient) \
                            and "no replica" in str(e):
                        raise
                    if time.monotonic() > deadline:
                        raise JetStreamError(f"could not move the {stream} leader to "
                                             f"{'/'.join(candidates)}: {e}") from None
                if time.monotonic() > deadline:
                    raise JetStreamError(f"the {stream} leader did not move to "
                                         f"{'/'.join(candidates)} within {timeout:.0f}s")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()
    return asyncio.run(go())


def all_current(urls: list[str], auth: NatsAuth | None = None) -> bool:
    """Every stream has a leader and every replica is current with no lag."""
    async def go():
        nc = await _connect(urls, auth)
        try:
            names = (await _request(nc, f"{API}.STREAM.NAMES")).get("streams") or []
            for name in names:
                cluster = (await _request(nc, f"{API}.STREAM.INFO.{name}")).get("cluster") or {}
                if not cluster.get("leader"):
                    return False
                if not all(r.get("current") and not r.get("lag")
                           for r in cluster.get("replicas") or []):
                    return False
            return True
        finally:
            await nc.close()
    return asyncio.run(go())
