"""The NATS edge of the gateway: one connection, the shard streams, publishes, consistent reads.

Rooms are spread over `shards` streams (`TALK-00` ..., `twinsite.shards`: a stable hash of the room
name); a room is one subject of its shard (`talk.room.07.<room>`), `seq` is that stream's sequence,
so per room it keeps its meaning (increasing, gaps are other rooms of the shard). Reads are "read-your-acknowledged-writes": the stream *leader* first says which
sequence is the room's last (STREAM.MSG.GET last_by_subj), then a batched direct get (served by any
replica, cheap) fetches the page, and anything a lagging follower did not return is filled in from
the leader. So a read never misses a message acknowledged before the read began.

Everything that talks to NATS raises `Unavailable` (→ 503) on any NATS failure or timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import nats
import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from .. import capacity, natsconf, shards as shardmap
from ..natsclient import connect_options
from ..topology import Messaging
from . import model

log = logging.getLogger("twinsite.talk")

API = "$JS.API"
ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
ERR_NO_MESSAGE = 10037
BRING_UP_INFO_TIMEOUT_S = 0.25  # STREAM.INFO while a gateway starts (see Backend._bring_up)


class Unavailable(Exception):
    """JetStream cannot serve this request now (no connection, no leader, timeout)."""


_M = Messaging()  # the messaging defaults have one home: the topology model


@dataclass(frozen=True)
class Settings:
    site: str
    nats_urls: tuple[str, ...]
    shards: int = 1
    subject_prefix: str = "talk.room"
    replicas: int = _M.stream_replicas
    duplicate_window_s: float = _M.duplicate_window_s
    max_body_bytes: int = _M.max_body_bytes
    publish_timeout_s: float = 2.0
    read_timeout_s: float = 2.0
    ping_interval_s: float = _M.ping_interval_s
    ping_max: int = _M.ping_max
    reconnect_wait_s: float = 0.25
    ready_cache_s: float = 0.5
    ready_timeout_s: float = 0.75
    balancer: object = None  # a shards.BalancePolicy (+ topology) when this gateway balances leaders
    topology: object = None
    nats_auth: object = None  # a natsclient.NatsAuth (user, password, CA); None: open test cluster
    inbox_prefix: str = natsconf.GATEWAY_INBOX  # the gateway user may subscribe only below it

    @classmethod
    def from_topology(cls, topo, site: str, nats_urls, **overrides) -> "Settings":
        m = topo.messaging
        base = dict(site=site, nats_urls=tuple(nats_urls), replicas=m.stream_replicas,
                    duplicate_window_s=m.duplicate_window_s, max_body_bytes=m.max_body_bytes,
                    ping_interval_s=m.ping_interval_s, ping_max=m.ping_max,
                    shards=capacity.shard_count(topo), topology=topo,
                    balancer=shardmap.BalancePolicy(site) if topo.site(site).is_primary else None)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def shard(self, room: str) -> int:
        return shardmap.shard_of(room, self.shards)

    def stream(self, room: str) -> str:
        return shardmap.stream_name(self.shard(room))

    def streams(self) -> list[str]:
        return [shardmap.stream_name(i) for i in range(self.shards)]

    def subject(self, room: str) -> str:
        return f"{self.subject_prefix}.{self.shard(room):02d}.{room}"


def stream_config(s: Settings, name: str) -> StreamConfig:
    """A shard stream's configuration (the gateways create it; so does the lab as it boots)."""
    # Placement one replica per site comes from the servers' `unique_tag: "site:"`.
    return StreamConfig(
        name=name, subjects=[f"{s.subject_prefix}.{shardmap.shard_index(name):02d}.*"],
        num_replicas=s.replicas,
        storage=StorageType.FILE, retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD,
        duplicate_window=s.duplicate_window_s, allow_direct=True,
        max_msg_size=s.max_body_bytes + 1024)


@dataclass
class Hooks:
    """Metric callbacks (the app wires Prometheus here; the backend stays metric-library-free)."""

    connected: Callable[[bool], None] = lambda up: None
    reconnected: Callable[[], None] = lambda: None
    published: Callable[[str, float], None] = lambda outcome, seconds: None


NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


@dataclass
class Backend:
    settings: Settings
    hooks: Hooks = field(default_factory=Hooks)
    nc: nats.NATS | None = None
    stream_ready: bool = False
    _task: asyncio.Task | None = None
    _ready_cache: tuple[float, bool, str] = (0.0, False, "starting")
    _ready_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closing: bool = False
    _balancer: object = None
    _ready_shard: int = 0  # the shard the readiness probe found writable last

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and create the stream in the background, retrying forever (readyz says when)."""
        self._task = asyncio.get_running_loop().create_task(self._bring_up())

    async def _bring_up(self) -> None:
        s = self.settings
        while not self._closing and self.nc is None:
            nc = nats.NATS()
            try:
                await nc.connect(
                    servers=list(s.nats_urls), name=f"talk-{s.site}",
                    dont_randomize=True,  # own site's servers first, as listed
                    allow_reconnect=True, max_reconnect_attempts=-1,
                    reconnect_time_wait=s.reconnect_wait_s, connect_timeout=1,
                    ping_interval=s.ping_interval_s, max_outstanding_pings=s.ping_max,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected, inbox_prefix=s.inbox_prefix,
                    **connect_options(s.nats_auth),
                    skip_subject_validation=True)  # rooms are validated before use (hot path)
                self.nc = nc
                self.hooks.connected(True)
            except Exception as e:  # noqa: BLE001 - servers not up yet: keep trying
                log.info("nats connect failed (%s); retrying", e or type(e).__name__)
                try:
                    await nc.close()
                except Exception:  # noqa: BLE001
                    pass
                await asyncio.sleep(0.5)
        pending = s.streams()
        while not self._closing and pending:
            # A stream whose creation is electing its leader answers nobody: at a lab boot the
            # gateways ask while the supervisor's creations run, and a 0.75 s timeout held them
            # up to ~1 s after the streams existed. A healthy leader answers in milliseconds.
            results = await asyncio.gather(
                *(self.ensure_stream(name, info_timeout=BRING_UP_INFO_TIMEOUT_S)
                  for name in pending),
                return_exceptions=True)
            failed = [n for n, r in zip(pending, results) if isinstance(r, BaseException)]
            if failed:  # JetStream not ready yet (no meta leader, an election): retry those
                log.info("streams %s not ready (%s); retrying", ",".join(failed),
                         next(r for r in results if isinstance(r, BaseException)))
                await asyncio.sleep(0.1)
            pending = failed
        self.stream_ready = not pending
        self._ready_cache = (0.0, False, "starting")  # the cached "not created yet" is stale now
        if self.stream_ready and s.balancer is not None and s.topology is not None:
            from .balancer import Balancer
            self._balancer = Balancer(self, s.balancer, s.topology)
            await self._balancer.run()

    async def _on_error(self, e) -> None:
        log.debug("nats error: %s", e)

    async def _on_disconnected(self) -> None:
        self.hooks.connected(False)
        self._ready_cache = (0.0, False, "disconnected")

    async def _on_reconnected(self) -> None:
        self.hooks.connected(True)
        self.hooks.reconnected()

    async def close(self) -> None:
        self._closing = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001
                pass
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=5)
            except Exception:  # noqa: BLE001 - best effort on the way out
                await self.nc.close()
            log.warning("NATS connection drained; gateway stopped")
        self.hooks.connected(False)

    # --- stream ----------------------------------------------------------------------------------

    def stream_config(self, name: str) -> StreamConfig:
        return stream_config(self.settings, name)

    async def ensure_stream(self, name: str, info_timeout: float = 2.0) -> None:
        """Create the stream if absent. Idempotent and safe when many gateways race.

        While another gateway's create is still electing the stream's leader, nobody answers
        STREAM.INFO: at start-up a short timeout and a quick retry beat one long wait."""
        nc = self._conn()
        cfg = self.stream_config(name).as_dict()
        resp = await self._api(f"STREAM.INFO.{name}", b"", timeout=info_timeout)
        err = resp.get("error")
        if not err:
            return
        if err.get("err_code") != ERR_STREAM_NOT_FOUND:
            raise Unavailable(err.get("description", "stream info failed"))
        resp = json.loads((await nc.request(f"{API}.STREAM.CREATE.{name}",
                                            json.dumps(cfg).encode(), timeout=5.0)).data)
        err = resp.get("error")
        if err and err.get("err_code") != ERR_STREAM_NAME_IN_USE:
            raise Unavailable(err.get("description", "stream create failed"))

    # --- helpers ---------------------------------------------------------------------------------

    def _conn(self) -> nats.NATS:
        nc = self.nc
        if nc is None or not nc.is_connected:
            raise Unavailable("not connected to NATS")
        return nc

    async def _api(self, what: str, payload: bytes, timeout: float) -> dict:
        try:
            msg = await self._conn().request(f"{API}.{what}", payload, timeout=timeout)
            return json.loads(msg.data)
        except Unavailable:
            raise
        except nats.errors.NoRespondersError:
            raise Unavailable("JetStream did not answer (no responders)") from None
        except NATS_ERRORS as e:
            raise Unavailable(f"JetStream request failed: {type(e).__name__}") from None
        except ValueError:
            raise Unavailable("JetStream answered garbage") from None

    # --- publish ---------------------------------------------------------------------------------

    async def publish(self, room: str, msg: model.MessageIn) -> tuple[int, bool]:
        """(seq, duplicate) once JetStream has acknowledged (quorum-replicated) the message."""
        s = self.settings
        t0 = time.perf_counter()
        try:
            nc = self._conn()
            reply = await nc.request(
                s.subject(room), model.encode(msg, time.time()), timeout=s.publish_timeout_s,
                headers={"Nats-Msg-Id": model.msg_id_header(room, msg.id),
                         "Nats-Expected-Stream": s.stream(room)})
            ack = json.loads(reply.data)
            if "error" in ack:
                raise Unavailable(ack["error"].get("description", "publish rejected"))
            seq, dup = int(ack["seq"]), bool(ack.get("duplicate"))
        except Unavailable:
            self._publish_failed(t0)
            raise
        except nats.errors.NoRespondersError:
            self._publish_failed(t0)
            raise Unavailable("no stream leader answered") from None
        except NATS_ERRORS as e:
            self._publish_failed(t0)
            raise Unavailable(f"publish failed: {type(e).__name__}") from None
        except (ValueError, KeyError):
            self._publish_failed(t0)
            raise Unavailable("bad publish ack") from None
        self.hooks.published("duplicate" if dup else "created", time.perf_counter() - t0)
        return seq, dup

    def _publish_failed(self, t0: float) -> None:
        self.hooks.published("unavailable", time.perf_counter() - t0)
        self._ready_cache = (0.0, False, "a publish just failed")  # force a fresh probe

    # --- reads -----------------------------------------------------------------------------------

    async def _leader_get(self, stream: str, req: dict) -> tuple[int, bytes] | None:
        resp = await self._api(f"STREAM.MSG.GET.{stream}", json.dumps(req).encode(),
                               timeout=self.settings.read_timeout_s)
        err = resp.get("error")
        if err:
            if err.get("err_code") == ERR_NO_MESSAGE or err.get("code") == 404:
                return None
            raise Unavailable(err.get("description", "message get failed"))
        m = resp["message"]
        return int(m["seq"]), base64.b64decode(m.get("data") or "")

    async def _direct_batch(self, stream: str, subject: str, start: int,
                            batch: int) -> list[tuple[int, bytes]]:
        """Up to `batch` messages of `subject` from `start`, from whichever replica answers."""
        nc = self._conn()
        inbox = nc.new_inbox()
        out: list[tuple[int, bytes]] = []
        try:
            sub = await nc.subscribe(inbox)
        except NATS_ERRORS as e:
            raise Unavailable(f"subscribe failed: {type(e).__name__}") from None
        try:
            req = {"seq": start, "next_by_subj": subject, "batch": batch}
            await nc.publish(f"{API}.DIRECT.GET.{stream}", json.dumps(req).encode(),
                             reply=inbox)
            deadline = time.monotonic() + self.settings.read_timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break  # partial is fine: the leader fills the rest in
                try:
                    m = await sub.next_msg(timeout=left)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    break
                hdrs = m.headers or {}
                if hdrs.get("Status"):  # 204 end of batch, 404 nothing (more), 408...
                    break
                out.append((int(hdrs["Nats-Sequence"]), m.data))
                if len(out) >= batch or hdrs.get("Nats-Num-Pending") == "0":
                    break
        except Unavailable:
            raise
        except NATS_ERRORS as e:
            raise Unavailable(f"direct get failed: {type(e).__name__}") from None
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass
        return out

    async def read(self, room: str, after: int, limit: int) -> list[dict]:
        """Messages of `room` with seq > after, oldest first, at most `limit`."""
        subject, stream = self.settings.subject(room), self.settings.stream(room)
        last = await self._leader_get(stream, {"last_by_subj": subject})
        if last is None or last[0] <= after:
            return []
        last_seq = last[0]
        got: list[tuple[int, bytes]] = []
        try:
            got = [(q, d) for q, d in await self._direct_batch(stream, subject, after + 1, limit)
                   if q <= last_seq]
        except Unavailable:
            got = []
        cursor = got[-1][0] if got else after
        while len(got) < limit and cursor < last_seq:  # a lagging replica answered: ask the leader
            m = await self._leader_get(stream, {"seq": cursor + 1, "next_by_subj": subject})
            if m is None or m[0] > last_seq:
                break
            got.append(m)
            cursor = m[0]
        return [d for q, data in got if (d := model.decode(data, q)) is not None]

    # --- readiness -------------------------------------------------------------------------------

    async def ready(self) -> tuple[bool, str]:
        """Would a write succeed now? Cached briefly so probes from many clients stay cheap."""
        t, ok, why = self._ready_cache
        if time.monotonic() - t < self.settings.ready_cache_s:
            return ok, why
        async with self._ready_lock:
            t, ok, why = self._ready_cache
            if time.monotonic() - t < self.settings.ready_cache_s:
                return ok, why
            ok, why = await self._probe()
            self._ready_cache = (time.monotonic(), ok, why)
            return ok, why

    async def _probe(self) -> tuple[bool, str]:
        """Ready while some shard takes writes: a shard without a leader (its site burnt, an
        election) turns away only its own rooms' writes (503 on those), not the gateway."""
        if self.nc is None or not self.nc.is_connected:
            return False, "not connected to NATS"
        if not self.stream_ready:
            return False, "shard streams not created yet"
        s = self.settings
        ok, why = await self._shard_writable(s.streams()[self._ready_shard])
        if ok:
            return True, why
        results = await asyncio.gather(*(self._shard_writable(n) for n in s.streams()))
        good = [i for i, (w, _) in enumerate(results) if w]
        if not good:
            return False, f"no shard writable ({results[0][1]})"
        self._ready_shard = good[0]
        return True, f"{len(good)} of {s.shards} shards writable"

    async def _shard_writable(self, name: str) -> tuple[bool, str]:
        try:
            info = await self._api(f"STREAM.INFO.{name}", b"", timeout=self.settings.ready_timeout_s)
        except Unavailable as e:
            return False, str(e)
        if info.get("error"):
            return False, info["error"].get("description", "stream info failed")
        cluster = info.get("cluster") or {}
        if self.settings.replicas > 1:
            if not cluster.get("leader"):
                return False, f"{name} has no leader"
            current = 1 + sum(1 for r in cluster.get("replicas") or []
                              if r.get("current") and not r.get("offline"))
            quorum = self.settings.replicas // 2 + 1
            if current < quorum:
                return False, f"{name}: only {current} of {self.settings.replicas} replicas current"
        return True, f"{name} leader {cluster.get('leader', '-')}"
