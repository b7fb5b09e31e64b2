"""Acknowledged messages/s through one talk gateway vs direct JetStream publishes (same cluster).

Both sides: C concurrent writers, ~200-byte bodies, a fixed duration, every message carrying a
Nats-Msg-Id, each counted only once JetStream acknowledged it. Goal: gateway/direct >= 0.6.
Run: `python -m bench gateway` (env BENCH_SECONDS, BENCH_CONCURRENCY to change the defaults).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import nats
import uvloop

from twinsite import procs, topology
from twinsite.natscluster import LocalNatsCluster
from twinsite.talk import auth

SECONDS = float(os.environ.get("BENCH_SECONDS", 5))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 32))
BODY = "x" * 200
ROOMS = 8
SETTINGS = None  # the gateway's Settings (shard count and subjects), set in main()


async def _run_workers(worker, seconds: float) -> tuple[int, int, list[float]]:
    ok, failed, lat = [0], [0], []
    stop = time.monotonic() + seconds

    async def loop(w: int):
        n = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                await worker(w, n)
                ok[0] += 1
                lat.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 - counted, the bench goes on
                failed[0] += 1
            n += 1

    await asyncio.gather(*(loop(w) for w in range(CONCURRENCY)))
    return ok[0], failed[0], lat


class HttpConn:
    """A minimal keep-alive HTTP/1.1 client connection. Written by hand because the load generator
    shares 2 cores with the gateway and 7 servers: aiohttp/httpx spend ~0.3 ms of CPU per request,
    which would measure the client, not the gateway. Handles only what the gateway answers:
    Content-Length framed responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                 token: str):
        self.reader, self.writer, self.host = reader, writer, host
        self.auth = f"Authorization: Bearer {token}\r\n".encode()

    @classmethod
    async def open(cls, host: str, port: int, token: str) -> "HttpConn":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}", token)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"%sContent-Length: %d\r\n\r\n%s"
                          % (path.encode(), self.host.encode(), self.auth, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def bench_gateway(base: str, tag: str, token: str) -> tuple[int, int, list[float]]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conns = [await HttpConn.open(host, int(port), token) for _ in range(CONCURRENCY)]
    try:
        async def post(w: int, n: int):
            body = json.dumps({"id": f"{tag}-{w}-{n}", "sender": f"u{w}", "body": BODY}).encode()
            status, _ = await conns[w].post(f"/v1/rooms/bench{w % ROOMS}/messages", body)
            if status != 201:
                raise RuntimeError(status)
        return await _run_workers(post, SECONDS)
    finally:
        for c in conns:
            c.close()


async def bench_gateway_aiohttp(base: str, tag: str, token: str) -> tuple[int, int, list[float]]:
    """The same load through aiohttp, for reference (its client CPU is part of the number)."""
    conn = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(base, connector=conn, headers=auth.header(token)) as s:
        async def post(w: int, n: int):
            async with s.post(f"/v1/rooms/bench{w % ROOMS}/messages",
                              json={"id": f"{tag}-{w}-{n}", "sender": f"u{w}", "body": BODY}) as r:
                await r.read()
                if r.status != 201:
                    raise RuntimeError(r.status)
        return await _run_workers(post, SECONDS)


async def bench_direct(urls: list[str], tag: str) -> tuple[int, int, list[float]]:
    nc = await nats.connect(urls, dont_randomize=True)
    js = nc.jetstream(timeout=5)
    try:
        async def pub(w: int, n: int):
            mid = f"{tag}-{w}-{n}"
            payload = f'{{"id":"{mid}","sender":"u{w}","body":"{BODY}","ts":{time.time()}}}'
            room = f"bench{w % ROOMS}"  # the same room -> shard subject as the gateway's
            ack = await js.publish(SETTINGS.subject(room), payload.encode(),
                                   headers={"Nats-Msg-Id": f"{room}:{mid}"})
            if ack.duplicate:
                raise RuntimeError("duplicate")
        return await _run_workers(pub, SECONDS)
    finally:
        await nc.close()


def _pct(lat: list[float], p: float) -> float:
    if not lat:
        return float("nan")
    s = sorted(lat)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(base: str) -> bool:
    with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
        return r.status == 200


def main() -> None:
    global SETTINGS
    from twinsite.talk.backend import Settings

    topo = topology.load_stack("lab")
    SETTINGS = Settings.from_topology(topo, "pangyo", ())
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as d:
        cluster = LocalNatsCluster(topo, Path(d))
        gw = None
        try:
            cluster.start(timeout=60)
            urls = cluster.client_urls("pangyo") + [u for u in cluster.client_urls()
                                                    if u not in cluster.client_urls("pangyo")]
            port = procs.free_port()
            base = f"http://127.0.0.1:{port}"
            token_file = auth.write(Path(d) / "talk-token")
            token = auth.read_token(token_file)
            gw = procs.spawn([sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site",
                              "pangyo", "--nats", ",".join(urls), "--listen",
                              f"127.0.0.1:{port}", "--token-file", str(token_file)],
                             log=Path(d) / "gateway.log")
            procs.wait_until(lambda: _ready(base), 60, what="gateway ready")
            tag = str(int(time.time()))
            # warm up both paths briefly, then measure (direct first, then gateway)
            results = {}
            for name, fn in (("direct", lambda: bench_direct(urls, tag + "d")),
                             ("gateway", lambda: bench_gateway(base, tag + "g", token)),
                             ("gateway (aiohttp client)",
                              lambda: bench_gateway_aiohttp(base, tag + "a", token))):
                cpu0 = _cpu_seconds(gw.pid)
                ok, failed, lat = uvloop.run(fn())  # the gateway runs uvloop too
                gw_cpu_ms = (_cpu_seconds(gw.pid) - cpu0) * 1000 / max(ok, 1)
                results[name] = ok / SECONDS
                print(f"{name:25s} {ok / SECONDS:8.0f} acked msgs/s  (C={CONCURRENCY}, "
                      f"{SECONDS:.0f}s, {len(BODY)} B body, failed {failed}, "
                      f"p50 {_pct(lat, .5):.1f} ms, p99 {_pct(lat, .99):.1f} ms"
                      + (f", gateway CPU {gw_cpu_ms:.3f} ms/msg" if name != "direct" else "")
                      + ")", flush=True)
            ratio = results["gateway"] / results["direct"] if results["direct"] else float("nan")
            print(f"ratio gateway/direct = {ratio:.2f} (goal >= 0.6); with the aiohttp client "
                  f"{results['gateway (aiohttp client)'] / results['direct']:.2f}")
        finally:
            if gw is not None:
                procs.reap(gw)
            cluster.stop()


if __name__ == "__main__":
    main()
