"""The link fabric on its own: real relays on loopback in front of plain echo/sink servers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time

import pytest
import uvloop

from twinsite import procs
from twinsite.lab.fabric import Fabric
from twinsite.topology import LinkSpec

HOST = "127.0.0.1"


class Servers:
    """Threaded echo and sink servers (the sink answers with the byte count and a timestamp)."""

    def __init__(self):
        self.socks: list[socket.socket] = []
        self.conns: list[socket.socket] = []
        self.echo_port = self._serve(self._echo)
        self.sink_port = self._serve(self._sink)

    def _serve(self, handler) -> int:
        srv = socket.socket()
        srv.bind((HOST, 0))
        srv.listen(16)
        self.socks.append(srv)

        def accept():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                self.conns.append(c)
                threading.Thread(target=handler, args=(c,), daemon=True).start()
        threading.Thread(target=accept, daemon=True).start()
        return srv.getsockname()[1]

    @staticmethod
    def _echo(c: socket.socket):
        try:
            while data := c.recv(65536):
                c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    @staticmethod
    def _sink(c: socket.socket):
        n, first, last = 0, None, None
        try:
            while data := c.recv(65536):
                now = time.monotonic()
                first = first or now
                last = now
                n += len(data)
            c.sendall(f"{n} {(last or 0) - (first or 0):.6f}".encode())
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        for s in self.socks + self.conns:
            try:
                s.close()
            except OSError:
                pass


class FabricThread:
    """A Fabric on its own uvloop in a thread, as in the supervisor."""

    def __init__(self):
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fabric = Fabric()

    def run(self, fn, *args):
        async def call():
            r = fn(*args)
            return await r if asyncio.iscoroutine(r) else r
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def relay(self, port: int, shape: LinkSpec = LinkSpec(), name: str = "l"):
        link = self.run(self.fabric.link, name, shape)
        relay = self.run(self.fabric.relay, f"r{port}", link, (HOST, port))
        return link, relay.port

    def close(self):
        self.run(self.fabric.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.close()


@pytest.fixture
def fab():
    f = FabricThread()
    yield f
    f.close()


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> float:
    t = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed during a round trip"
        got += chunk
    assert got == payload
    return time.monotonic() - t


def test_relay_passes_bytes_intact_both_ways(servers, fab):
    _, port = fab.relay(servers.echo_port)
    data = os.urandom(3 << 20)
    with socket.create_connection((HOST, port), timeout=10) as s:
        got = bytearray()
        sender = threading.Thread(target=s.sendall, args=(data,))
        sender.start()
        while len(got) < len(data):
            chunk = s.recv(1 << 16)
            assert chunk
            got += chunk
        sender.join()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_throttle_latency_raises_round_trip(servers, fab):
    link, port = fab.relay(servers.echo_port)
    with socket.create_connection((HOST, port), timeout=5) as s:
        base = min(roundtrip(s) for _ in range(5))
        fab.run(link.set_shape, LinkSpec(latency_ms=40))
        rtts = [roundtrip(s) for _ in range(5)]
        # one-way delay per direction: a round trip crosses the link twice
        assert min(rtts) >= 0.080, rtts
        assert base < 0.040, base
        fab.run(link.set_shape, LinkSpec())
        assert min(roundtrip(s) for _ in range(5)) < 0.040


def test_bandwidth_is_honoured_within_ten_percent(servers, fab):
    kbit = 4000  # 500 kB/s
    _, port = fab.relay(servers.sink_port, LinkSpec(bandwidth_kbit=kbit))
    payload = b"x" * 600_000
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        n, span = s.recv(100).decode().split()
    assert int(n) == len(payload)
    rate_kbit = len(payload) * 8 / 1000 / float(span)
    assert abs(rate_kbit - kbit) <= 0.10 * kbit, rate_kbit


def test_partition_is_silent_and_heal_resumes(servers, fab):
    link, port = fab.relay(servers.echo_port)
    with socket.create_connection((HOST, port), timeout=5) as s:
        roundtrip(s)
        fab.run(link.set_silent, True)
        s.settimeout(0.5)
        s.sendall(b"held")
        with pytest.raises(socket.timeout):  # no bytes, and no reset or close either
            s.recv(100)
        # a new connection across a cut link is accepted, then hears nothing
        late = socket.create_connection((HOST, port), timeout=0.5)
        late.sendall(b"late")
        with pytest.raises(socket.timeout):
            late.recv(100)
        fab.run(link.set_silent, False)
        s.settimeout(5)
        late.settimeout(5)
        assert s.recv(100) == b"held"  # held bytes are delivered on heal, in order
        assert late.recv(100) == b"late"
        late.close()
        assert roundtrip(s) < 1.0


def test_refused_upstream_gives_a_reset(fab):
    dead = procs.free_port()
    _, port = fab.relay(dead)
    t0 = time.monotonic()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):  # a reset, not a timeout
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"anyone?")
            s.recv(100)
            s.sendall(b"anyone?")
    assert time.monotonic() - t0 < 2


def test_upstream_close_is_forwarded(servers, fab):
    _, port = fab.relay(servers.echo_port, LinkSpec(latency_ms=1))
    with socket.create_connection((HOST, port), timeout=5) as s:
        roundtrip(s)
        deadline = time.monotonic() + 5
        while not servers.conns and time.monotonic() < deadline:
            time.sleep(0.01)
        servers.conns[-1].shutdown(socket.SHUT_RDWR)  # the echo server hangs up
        assert s.recv(100) == b""
