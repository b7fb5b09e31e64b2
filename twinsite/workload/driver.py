"""The traffic driver (Jepsen's *generator* + client): open-loop senders, SSE subscribers, final read.

- Senders are open-loop: message k is due at t0 + k/rate whatever the service does. In-flight
  messages are bounded, in all and per room (each room's clients are other people: a room whose
  shard is electing a leader must not starve the others of connections); a message due while a
  bound is hit is recorded as invoke + fail "client-overload" without being sent, so the history
  says what the driver could not send.
- Each message is one logical operation with a fixed id. Its room's home site is tried first (unless
  it failed in the last 2 s - and no attempt sent after the failed one has succeeded there since:
  one slow old request must not send a healthy site's traffic to a dead one - then it goes last); on a
  timeout, 5xx or connection error the next attempt goes to the other site with the SAME id (the
  gateway deduplicates), until acknowledged, refused with a 4xx, or the per-message deadline
  (default 8 s: bridges a 4-9 s JetStream election) passes. Every attempt is an invoke and an
  outcome: ok (with seq), fail (4xx, refused before sending, overload), info (timeout, reset, 5xx).
- Subscribers follow rooms over the gateway's SSE subscribe endpoint from seq 0, resume from their
  last seq on the other site after a disconnect or a silence, and log every delivery.
- At the end: wait for in-flight messages, settle, read every room back (paging, across sites until
  it succeeds), let subscribers catch up with what was read, and append the final read.

Hand-written (no library): load generators (locust, k6) are closed-loop or cannot record per-
operation outcomes with the retry-same-id semantics the checker needs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass, field

import aiohttp

from ..history import HistoryWriter
from ..shards import shard_of
from ..talk import auth

SUBSCRIBER_PROCESS_BASE = 1000
SUSPECT_S = 2.0  # a site that just timed out / refused / 5xx'd is tried last for this long


@dataclass(frozen=True)
class DriverConfig:
    endpoints: dict[str, list[str]]   # site -> gateway base URLs
    rate: float                       # messages per second (open loop)
    rooms: int
    subscribers: int = 2              # subscriber processes, one room each (rooms 0, 1, ...)
    request_timeout_s: float = 1.5
    max_in_flight: int = 256
    settle_s: float = 2.0
    final_read_timeout_s: float = 30
    message_deadline_s: float = 8.0   # stop retrying a message this long after its first invoke
    senders: int = 16                 # logical client processes (order is checked per process)
    subscriber_idle_s: float = 3.0    # silence on a subscribe stream that counts as a dead link
    body_bytes: int = 64
    run_id: str | None = None         # room/id prefix; random by default so runs never mix
    # A room's home site is the one leading its shard (`twinsite.shards.room_home`), as a real
    # client would be routed: {room index -> site} is computed from these; empty: round robin.
    shards: int = 0
    primaries: tuple[str, ...] = ()
    token: str = field(default="", repr=False)  # the gateways' API bearer token (talk.auth)

    def validate(self) -> None:
        if not self.endpoints or not any(self.endpoints.values()):
            raise ValueError("no client endpoints: is the lab up? (or pass --endpoint SITE=URL)")
        if not self.token:
            raise ValueError("no API token for the gateways (the lab's is in its state dir; "
                             f"else set {auth.ENV_FILE})")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.rooms < 1:
            raise ValueError(f"rooms must be >= 1, got {self.rooms}")
        if self.subscribers < 0 or self.max_in_flight < 1 or self.senders < 1:
            raise ValueError("subscribers must be >= 0, max_in_flight and senders >= 1")
        if self.request_timeout_s <= 0 or self.message_deadline_s <= 0:
            raise ValueError("timeouts must be > 0")


@dataclass
class DriverStats:
    scheduled: int = 0
    sent: int = 0          # messages that got at least one real attempt
    overload: int = 0
    acked: int = 0
    failed: int = 0
    indeterminate: int = 0
    attempts: int = 0
    deliveries: int = 0
    workload_s: float = 0.0
    max_schedule_lag_ms: float = 0.0
    rooms_read: int = 0
    rooms_unread: list = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.workload_s if self.workload_s else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["achieved_rate"] = round(self.achieved_rate, 1)
        return d


class _Refused(Exception):
    """The request certainly never reached the service."""


class TrafficDriver:
    def __init__(self, config: DriverConfig, history: HistoryWriter):
        config.validate()
        self.config = config
        self.history = history
        self.stats = DriverStats()
        self.run_id = config.run_id or "t" + secrets.token_hex(4)
        self.sites = sorted(s for s, urls in config.endpoints.items() if urls)
        self.rooms = [f"{self.run_id}-r{i}" for i in range(config.rooms)]
        self._stop = asyncio.Event()  # not bound to a loop until first awaited (3.10+)
        self._in_flight = 0
        self._room_in_flight = [0] * config.rooms
        self._room_limit = max(1, -(-config.max_in_flight // config.rooms))
        self._tasks: set[asyncio.Task] = set()
        self._cursors: dict[int, int] = {}
        self._rr = itertools.count()
        # site (or, with shards, (site, room): a site's gateways fail one shard's rooms while its
        # leader is elected, not the others) -> loop time until which it is tried last
        self._suspect: dict = {}
        # same keys -> loop time at which the newest attempt that succeeded there was sent: a
        # failure of an attempt sent before that is stale news and makes nothing suspect
        self._last_ok_sent: dict = {}

    # --- public ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """End the workload early (call from the driver's own loop)."""
        self._stop.set()

    async def run(self, duration_s: float | None) -> None:
        """Workload for `duration_s` (None: until request_stop), then settle, then final read."""
        c = self.config
        conn = aiohttp.TCPConnector(limit=c.max_in_flight + c.subscribers + 16,
                                    enable_cleanup_closed=True)
        async with aiohttp.ClientSession(connector=conn, raise_for_status=False,
                                         headers=auth.header(c.token)) as session:
            self._session = session
            subs = [asyncio.create_task(self._subscriber(j)) for j in range(c.subscribers)]
            try:
                await self._workload(duration_s)
                if self._tasks:  # each message gives up by its deadline
                    await asyncio.wait(list(self._tasks), timeout=c.message_deadline_s + 5)
                await asyncio.sleep(c.settle_s)
                last = await self._final_read()
                await self._catch_up(last)
            finally:
                for t in subs:
                    t.cancel()
                await asyncio.gather(*subs, return_exceptions=True)
                for t in list(self._tasks):
                    t.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- senders ---------------------------------------------------------------------------------

    async def _workload(self, duration_s: float | None) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        total = max(1, round(duration_s * c.rate)) if duration_s is not None else None
        while not self._stop.is_set() and (total is None or k < total):
            due = int((loop.time() - start) * c.rate) + 1
            if total is not None:
                due = min(due, total)
            now = loop.time()
            if due > k:  # how late the oldest due message goes out: the open loop's health
                self.stats.max_schedule_lag_ms = max(self.stats.max_schedule_lag_ms,
                                                     round((now - start - k / c.rate) * 1000, 1))
            while k < due:  # catch up in a burst if the loop fell behind: open loop
                self._issue(k)
                k += 1
            if total is not None and k >= total:
                break
            # sleep until the next message is due (at least a 2 ms tick: bursts beat timer churn)
            await asyncio.sleep(max(0.002, start + k / c.rate - loop.time()))
        self.stats.workload_s = max(loop.time() - start, k / c.rate)

    def _issue(self, k: int) -> None:
        c = self.config
        self.stats.scheduled += 1
        room_i = k % c.rooms
        room = self.rooms[room_i]
        mid = f"{self.run_id}-{k}"
        proc = k % c.senders
        if self._in_flight >= c.max_in_flight or self._room_in_flight[room_i] >= self._room_limit:
            self.stats.overload += 1
            self.stats.failed += 1
            base = self._op(proc, room, mid, None)
            self.history.write({**base, "type": "invoke", "time": self._now()})
            self.history.write({**base, "type": "fail", "error": "client-overload",
                                "time": self._now()})
            return
        self._in_flight += 1
        self._room_in_flight[room_i] += 1
        self.stats.sent += 1
        t = asyncio.ensure_future(self._send(proc, room_i, room, mid))
        self._tasks.add(t)
        t.add_done_callback(lambda t, i=room_i: self._done(t, i))

    def _done(self, t: asyncio.Task, room_i: int) -> None:
        self._tasks.discard(t)
        self._in_flight -= 1
        self._room_in_flight[room_i] -= 1

    def _now(self) -> float:
        return round(self.history.now(), 6)

    @staticmethod
    def _op(proc, room, mid, site) -> dict:
        return {"process": proc, "f": "send", "room": room, "id": mid, "site": site,
                "seq": None, "error": None}

    def _site_order(self, room_i: int) -> list[str]:
        c = self.config
        home = room_i % len(self.sites)
        if c.shards and c.primaries:
            site = c.primaries[shard_of(self.rooms[room_i], c.shards) % len(c.primaries)]
            home = self.sites.index(site) if site in self.sites else home
        return self.sites[home:] + self.sites[:home]

    def _url(self, site: str) -> str:
        urls = self.config.endpoints[site]
        return urls[next(self._rr) % len(urls)]

    async def _send(self, proc: int, room_i: int, room: str, mid: str) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + c.message_deadline_s
        body = json.dumps({"id": mid, "sender": f"p{proc}",
                           "body": ("m" * c.body_bytes)}).encode()
        # home site first, unless it failed recently: like a real client, don't keep paying a
        # 1.5 s timeout per message to a site that has just gone silent
        now = loop.time()
        key = (lambda s: (s, room_i)) if self.config.shards else (lambda s: s)
        sites = sorted(self._site_order(room_i), key=lambda s: self._suspect.get(key(s), 0.0) > now)
        info_seen = False
        for attempt in itertools.count():
            remaining = deadline - loop.time()
            if remaining <= 0.05:
                break
            site = sites[attempt % len(sites)]
            base = self._op(proc, room, mid, site)
            self.stats.attempts += 1
            self.history.write({**base, "type": "invoke", "time": self._now()})
            sent = loop.time()
            typ, seq, err, retry = await self._post(self._url(site), room, body,
                                                    min(c.request_timeout_s, remaining))
            self.history.write({**base, "type": typ, "seq": seq, "error": err, "time": self._now()})
            if typ == "ok":
                self.stats.acked += 1
                self._suspect.pop(key(site), None)
                self._last_ok_sent[key(site)] = max(sent, self._last_ok_sent.get(key(site), sent))
                return
            if retry and self._last_ok_sent.get(key(site), float("-inf")) < sent:
                self._suspect[key(site)] = loop.time() + SUSPECT_S
            info_seen = info_seen or typ == "info"
            if not retry:
                break
            # a quick hop to the other site; back off once every site failed this round
            if attempt % len(sites) == len(sites) - 1:
                await asyncio.sleep(min(0.5, 0.05 * 2 ** (attempt // len(sites))))
        if info_seen:
            self.stats.indeterminate += 1
        else:
            self.stats.failed += 1

    async def _post(self, base_url: str, room: str, body: bytes, timeout: float):
        """-> (type, seq, error, retry?)"""
        url = f"{base_url}/v1/rooms/{room}/messages"
        try:
            async with self._session.post(
                    url, data=body, headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                if r.status in (200, 201):
                    data = await r.json(content_type=None)
                    return "ok", int(data["seq"]), None, False
                if 400 <= r.status < 500 and r.status not in (408, 429):
                    return "fail", None, f"http {r.status}", False
                return "info", None, f"http {r.status}", True
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, (ConnectionRefusedError,)) or "refused" in str(e).lower():
                return "fail", None, "connection refused", True
            return "info", None, f"connect: {type(e.os_error).__name__}", True
        except (asyncio.TimeoutError, TimeoutError):
            return "info", None, "timeout", True
        except aiohttp.ClientError as e:
            return "info", None, type(e).__name__, True
        except (ValueError, KeyError, TypeError) as e:  # a 2xx without a usable seq
            return "info", None, f"bad response: {type(e).__name__}", True

    # --- subscribers -----------------------------------------------------------------------------

    async def _subscriber(self, j: int) -> None:
        c = self.config
        proc = SUBSCRIBER_PROCESS_BASE + j
        room_i = j % c.rooms
        room = self.rooms[room_i]
        sites = self._site_order(room_i)
        self._cursors[proc] = 0
        self.history.write({"process": proc, "type": "invoke", "f": "subscribe", "room": room,
                            "seq": 0, "time": self._now()})
        for attempt in itertools.count():
            site = sites[attempt % len(sites)]
            url = f"{self._url(site)}/v1/rooms/{room}/subscribe"
            got_any = False
            try:
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=c.request_timeout_s,
                                                sock_read=c.subscriber_idle_s)
                async with self._session.get(url, params={"after": str(self._cursors[proc])},
                                             timeout=timeout) as r:
                    if r.status != 200:
                        raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
                    data = None
                    async for raw in r.content:
                        line = raw.decode("utf-8", "replace").rstrip("\r\n")
                        if line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data is not None:
                            got_any = self._deliver(proc, room, data) or got_any
                            data = None
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError):
                pass
            if not got_any:  # a dead site or nothing to read: don't spin
                await asyncio.sleep(0.2)

    def _deliver(self, proc: int, room: str, data: str) -> bool:
        try:
            m = json.loads(data)
            seq, mid = int(m["seq"]), m["id"]
        except (ValueError, KeyError, TypeError):
            return False
        if seq <= self._cursors[proc]:
            return False  # a resume overlap: already delivered
        self._cursors[proc] = seq
        self.stats.deliveries += 1
        self.history.write({"process": proc, "type": "ok", "f": "deliver", "room": room, "id": mid,
                            "seq": seq, "time": self._now()})
        return True

    async def _catch_up(self, last_seq: dict[str, int]) -> None:
        """Give subscribers the time to deliver everything the final read found (bounded)."""
        c = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(5.0, c.final_read_timeout_s / 3)
        for j in range(c.subscribers):
            proc = SUBSCRIBER_PROCESS_BASE + j
            want = last_seq.get(self.rooms[j % c.rooms], 0)
            while self._cursors.get(proc, 0) < want and loop.time() < deadline:
                await asyncio.sleep(0.05)

    # --- final read ------------------------------------------------------------------------------

    async def _final_read(self) -> dict[str, int]:
        results = await asyncio.gather(*(self._read_room(i, room)
                                         for i, room in enumerate(self.rooms)))
        return {room: last for room, last in zip(self.rooms, results) if last is not None}

    async def _read_room(self, room_i: int, room: str) -> int | None:
        c = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + c.final_read_timeout_s
        sites = self._site_order(room_i)
        ids: list[str] = []
        cursor = 0
        last_error = "no attempt"
        limit = 1000
        for attempt in itertools.count():
            if loop.time() >= deadline:
                self.stats.rooms_unread.append(room)
                self.history.write({"type": "fail", "f": "final-read", "room": room,
                                    "error": last_error, "time": self._now()})
                return None
            site = sites[attempt % len(sites)]
            url = f"{self._url(site)}/v1/rooms/{room}/messages"
            try:
                while True:  # page until a short page; a failure resumes from the cursor elsewhere
                    async with self._session.get(
                            url, params={"after": str(cursor), "limit": str(limit)},
                            timeout=aiohttp.ClientTimeout(total=max(2.0, c.request_timeout_s))) as r:
                        if r.status != 200:
                            raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
                        msgs = (await r.json(content_type=None))["messages"]
                    for m in msgs:
                        ids.append(m["id"])
                        cursor = int(m["seq"])
                    if len(msgs) < limit:
                        self.stats.rooms_read += 1
                        self.history.write({"type": "ok", "f": "final-read", "room": room,
                                            "ids": ids, "time": self._now()})
                        return cursor
            except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError,
                    KeyError, TypeError) as e:
                last_error = f"{site}: {type(e).__name__} {getattr(e, 'status', '')}".strip()
                await asyncio.sleep(0.2)
