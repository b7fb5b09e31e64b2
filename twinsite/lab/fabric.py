"""The link fabric: asyncio TCP relays on loopback that give lab links real WAN and outage semantics.

Written by hand because nothing in reach does it: toxiproxy (the usual tool) is a Go binary that
cannot be installed here (no apt, no Docker, no release downloads), and no maintained pure-Python
equivalent exists. The job is small: one relay per directed link, shaping and faults per link.

Semantics, per `Link` (shared by every relay and connection that crosses it):
- latency/jitter: each chunk is delivered `latency ± jitter` after it was read, per direction (so
  a round trip costs 2 x latency, like netem on both ends). Chunks wait in a timestamped queue and
  never overtake each other, so a delay does not serialize the stream and throughput is kept.
- bandwidth: paced per direction (a token bucket with a small burst), in kbit/s; 0 = unlimited.
- silence (partition, power loss): bytes stop both ways and nothing is closed or reset. Relays stop
  reading (so senders fill their TCP windows and block, as with a cut fibre) and hold what they
  already read; new connections are accepted and held. On heal, held bytes flow in order: TCP
  would have retransmitted them, so endpoints see delay, not loss, unless they gave up meanwhile.
- a crashed endpoint (a process killed on a live link) passes through: an upstream that refuses
  or resets makes the relay reset the other side (RST via SO_LINGER 0), a close is forwarded.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time
from collections import deque
from typing import Awaitable, Callable

from ..topology import LinkSpec

HOST = "127.0.0.1"
QUEUE_LIMIT = 4 << 20  # bytes held per direction before the relay stops reading (backpressure)
WRITE_HIGH_WATER = 512 * 1024
_EOF, _CLOSE, _RESET = "eof", "close", "reset"


class Link:
    """One link's shaping and silence; every pipe crossing it follows changes immediately."""

    def __init__(self, name: str, shape: LinkSpec = LinkSpec()):
        self.name = name
        self.shape = shape
        self.silent = False
        self.pipes: set[_Pipe] = set()
        self.pending: set[_Conn] = set()  # accepted while silent, upstream not yet dialled

    def set_shape(self, shape: LinkSpec) -> None:
        self.shape = shape
        for p in list(self.pipes):
            p.kick()

    def set_silent(self, silent: bool) -> None:
        if silent == self.silent:
            return
        self.silent = silent
        for p in list(self.pipes):
            p.set_blocked("silent", silent)
        if not silent:
            for c in list(self.pending):
                self.pending.discard(c)
                c.dial()


class _Pipe:
    """One direction of one relayed connection: read from `src`, deliver to `dst` in order."""

    def __init__(self, conn: "_Conn", link: Link):
        self.conn, self.link = conn, link
        self.loop = conn.loop
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.queue: deque = deque()  # (due, bytes | control)
        self.queued = 0
        self.last_due = 0.0
        self.next_free = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.blocked: set[str] = set()  # reasons the source must not be read
        self.dst_paused = False
        self.src_reading = True
        self.done = False

    # --- reading side ------------------------------------------------------------------------

    def set_blocked(self, reason: str, on: bool) -> None:
        (self.blocked.add if on else self.blocked.discard)(reason)
        want = not self.blocked
        if self.src is not None and want != self.src_reading and not self.src.is_closing():
            self.src_reading = want
            (self.src.resume_reading if want else self.src.pause_reading)()
        if not on:
            self.kick()

    def _due(self) -> float:
        s = self.link.shape
        delay = s.latency_ms
        if s.jitter_ms:
            delay += random.uniform(-s.jitter_ms, s.jitter_ms)
        due = time.monotonic() + max(0.0, delay) / 1000.0  # not loop.time(): that is cached
        due = max(due, self.last_due)  # TCP never reorders: jitter only stretches gaps
        self.last_due = due
        return due

    def feed(self, data: bytes) -> None:
        if self.done:
            return  # the other side is gone: nothing can be delivered
        s = self.link.shape
        if (not self.queue and not self.link.silent and not self.dst_paused and not s.latency_ms
                and not s.jitter_ms and not s.bandwidth_kbit and self.dst is not None):
            if not self.dst.is_closing():
                self.dst.write(data)  # fast path: an unshaped, quiet link is a plain relay
            return
        self.queue.append((self._due(), data))
        self.queued += len(data)
        if self.queued > QUEUE_LIMIT:
            self.set_blocked("queue", True)
        self.kick()

    def feed_control(self, what: str) -> None:
        if self.done:
            return
        self.queue.append((self._due(), what))
        self.kick()

    # --- writing side ------------------------------------------------------------------------

    def kick(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_soon(self.flush)

    def _later(self, when: float) -> None:
        # relative to the loop's cached clock, which lags: flush re-checks and waits the rest
        self.timer = self.loop.call_later(max(0.0, when - time.monotonic()), self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.done or self.dst is None or self.link.silent or self.dst_paused:
            return
        s = self.link.shape
        while self.queue:
            now = time.monotonic()
            due, item = self.queue[0]
            if due > now:
                return self._later(due)
            if isinstance(item, str):
                self.queue.popleft()
                self.conn.control(self, item)
                if self.done:
                    return
                continue
            if s.bandwidth_kbit:
                if self.next_free > now:
                    return self._later(self.next_free)
                rate = s.bandwidth_kbit * 125.0  # bytes per second
                piece_max = max(1024, int(rate * 0.005))
                piece = item[:piece_max]
                if len(piece) < len(item):
                    self.queue[0] = (due, item[piece_max:])
                else:
                    self.queue.popleft()
                self.next_free = max(self.next_free, now) + len(piece) / rate
            else:
                piece = item
                self.queue.popleft()
            self.queued -= len(piece)
            if self.dst.is_closing():
                return self.close()
            self.dst.write(piece)
            if self.dst_paused:
                break
        if self.queued < QUEUE_LIMIT // 2 and "queue" in self.blocked:
            self.set_blocked("queue", False)

    def set_dst_paused(self, paused: bool) -> None:
        self.dst_paused = paused
        self.set_blocked("dst", paused)

    def close(self) -> None:
        self.done = True
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.link.pipes.discard(self)


def _reset(transport: asyncio.BaseTransport | None) -> None:
    """Close with RST instead of FIN, as a kernel does for a socket of a dead process."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass
    transport.abort()


def _peer_gone(transport: asyncio.BaseTransport) -> bool:
    """True when the accepted socket was closed by its peer while we held it (peek for EOF)."""
    try:
        fd = transport.get_extra_info("socket").fileno()
        with socket.socket(fileno=os.dup(fd)) as s:  # uvloop's pseudo-socket has no recv
            return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, AttributeError):
        return True


class _Side(asyncio.Protocol):
    def __init__(self, conn: "_Conn", out: _Pipe, inp: _Pipe, on_made=None):
        self.conn, self.out, self.inp = conn, out, inp  # out: we are its src; inp: we are its dst
        self.on_made = on_made
        self.got_eof = False

    def connection_made(self, transport):
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.out.src = transport
        self.inp.dst = transport
        if self.out.blocked:
            self.out.src_reading = False
            transport.pause_reading()
        self.inp.kick()
        if self.on_made:
            self.on_made()

    def data_received(self, data):
        self.out.feed(data)

    def eof_received(self):
        if not self.got_eof:  # uvloop may report EOF again after pause/resume_reading
            self.got_eof = True
            self.out.feed_control(_EOF)
        return True  # keep our sending half open: the peer may still be talking (half-close)

    def connection_lost(self, exc):
        if self.inp.dst is not None:
            self.inp.close()  # nothing more can be written to us
        self.out.feed_control(_RESET if isinstance(exc, OSError) else _CLOSE)

    def pause_writing(self):
        self.inp.set_dst_paused(True)

    def resume_writing(self):
        self.inp.set_dst_paused(False)
        self.inp.kick()


class _Conn:
    """One accepted client connection and its upstream: two pipes over one link."""

    def __init__(self, relay: "Relay"):
        self.relay = relay
        self.loop = relay.loop
        self.link = link = relay.link  # a resolving relay rebinds it once the peer is known
        self.up_pipe = _Pipe(self, link)  # client -> upstream
        self.down_pipe = _Pipe(self, link)  # upstream -> client
        self.client = _Side(self, self.up_pipe, self.down_pipe, on_made=self.accepted)
        self.upstream: asyncio.Transport | None = None
        self.eofs = 0
        self.closed = False
        self.up_pipe.blocked.add("dial")  # don't read the client before upstream exists
        if link.silent:
            self.up_pipe.blocked.add("silent")
            self.down_pipe.blocked.add("silent")
        link.pipes.update((self.up_pipe, self.down_pipe))
        relay.conns.add(self)

    def accepted(self) -> None:
        if self.relay.resolve is not None:
            self.loop.create_task(self._resolve())
            return
        self._route()

    async def _resolve(self) -> None:
        peer = self.down_pipe.dst.get_extra_info("peername")
        link = await self.relay.resolve(peer)
        if self.closed:
            return
        if link is None:
            return self.shutdown(reset=True)  # nobody we know: refuse
        self.rebind(link)
        self._route()

    def _route(self) -> None:
        if self.link.silent:
            self.link.pending.add(self)  # held: dialled when the link comes back
        else:
            self.loop.create_task(self._dial())

    def rebind(self, link: Link) -> None:
        self.link = link
        for p in (self.up_pipe, self.down_pipe):
            p.link.pipes.discard(p)
            p.link = link
            link.pipes.add(p)
            p.set_blocked("silent", link.silent)

    def dial(self) -> None:
        """Dial a held connection, unless its client gave up while the link was silent."""
        if self.closed:
            return
        if self.down_pipe.dst is None or _peer_gone(self.down_pipe.dst):
            return self.shutdown(reset=False)
        self.loop.create_task(self._dial())

    async def _dial(self) -> None:
        host, port = self.relay.target
        side = _Side(self, self.down_pipe, self.up_pipe)
        give_up = self.loop.time() + self.relay.dial_grace
        while True:
            try:
                await self.loop.create_connection(lambda: side, host, port)
                break
            except OSError:
                if self.loop.time() >= give_up or self.closed:
                    return self.shutdown(reset=True)  # refused upstream = crashed process: reset
                await asyncio.sleep(0.005)  # still starting: hold the client, as a SYN would wait
        if self.closed:
            _reset(self.down_pipe.src)
            return
        self.up_pipe.set_blocked("dial", False)

    def control(self, pipe: _Pipe, what: str) -> None:
        dst = pipe.dst
        if what == _EOF:
            if dst is not None and dst.can_write_eof() and not dst.is_closing():
                dst.write_eof()
            self.eofs += 1
            if self.eofs >= 2:
                self.shutdown(reset=False)
        elif what == _CLOSE:
            self.shutdown(reset=False)
        else:
            self.shutdown(reset=True)

    def shutdown(self, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.conns.discard(self)
        self.link.pending.discard(self)
        for pipe in (self.up_pipe, self.down_pipe):
            t = pipe.dst
            pipe.close()
            if t is not None and not t.is_closing():
                _reset(t) if reset else t.close()


class Relay:
    """Listens on HOST:port and relays each connection to `target` across `link`."""

    def __init__(self, name: str, link: Link, target: tuple[str, int] | None, port: int = 0):
        self.name, self.link, self.target, self.port = name, link, target, port
        self.conns: set[_Conn] = set()
        self.dial_grace = 0.0  # seconds to keep retrying a refusing upstream (lab start-up)
        # (host, port) of an accepted peer -> the link it crosses (None: reset it); for a
        # listener that many peers dial, like an advertised route address
        self.resolve: Callable[[tuple], Awaitable[Link | None]] | None = None
        self.server: asyncio.AbstractServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> "Relay":
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(lambda: _Conn(self).client, HOST, self.port, backlog=256,
                                                    reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            c.shutdown(reset=False)
        if self.server is not None:
            await self.server.wait_closed()


class Fabric:
    """A set of links and the relays that cross them."""

    def __init__(self):
        self.links: dict[str, Link] = {}
        self.relays: dict[str, Relay] = {}

    def link(self, name: str, shape: LinkSpec = LinkSpec()) -> Link:
        if name not in self.links:
            self.links[name] = Link(name, shape)
        return self.links[name]

    async def relay(self, name: str, link: Link, target: tuple[str, int] | None,
                    port: int = 0) -> Relay:
        """A relay listening now; `target` may be set later, before the first connection."""
        r = await Relay(name, link, target, port).start()
        self.relays[name] = r
        return r

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.relays.values()))
        self.relays.clear()


def _main(argv: list[str]) -> None:
    """`python -m twinsite.lab.fabric PORT [LATENCY_MS [BANDWIDTH_KBIT]]`: one relay to PORT
    (for benchmarks); prints the relay's port, runs until killed."""
    import sys

    import uvloop

    async def run():
        f = Fabric()
        shape = LinkSpec(float(argv[1]) if len(argv) > 1 else 0.0, 0.0,
                      int(argv[2]) if len(argv) > 2 else 0)
        r = await f.relay("bench", f.link("bench", shape), (HOST, int(argv[0])))
        print(r.port, flush=True)
        await asyncio.Event().wait()

    try:
        uvloop.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    import sys
    _main(sys.argv[1:])
