"""Lab benchmarks: time for `lab up` to be ready (goal <= 3 s) and link-fabric throughput vs direct
loopback TCP (goal >= 0.8x).

Throughput: one bulk TCP stream from a sender to a sink (threads in this process, blocking sockets),
direct and through a relay running in its own process (`python -m twinsite.lab.fabric`), as the
supervisor runs it; trials alternate so machine noise hits both sides alike.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
BULK = 256 << 20
CHUNK = 1 << 18


def _sink() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return

            def drain(c=c):
                buf, n = bytearray(1 << 20), 0
                while k := c.recv_into(buf):
                    n += k
                c.sendall(str(n).encode())
                c.close()
            threading.Thread(target=drain, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _push(port: int, total: int = BULK) -> float:
    """MB/s of one bulk stream, counted when the sink confirms it received everything."""
    chunk = b"x" * CHUNK
    with socket.create_connection((HOST, port)) as s:
        t0 = time.monotonic()
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += CHUNK
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
        dt = time.monotonic() - t0
    assert got == total, (got, total)
    return total / dt / 1e6


def _relay(target: int, *shape: str) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "twinsite.lab.fabric", str(target), *shape],
                         stdout=subprocess.PIPE)
    return p, int(p.stdout.readline())


def fabric_throughput(trials: int = 5) -> None:
    srv, port = _sink()
    for label, shape in (("no shaping", ()), ("intra-site shape, 0.5 ms", ("0.5",))):
        relay, rport = _relay(port, *shape)
        try:
            _push(port, 32 << 20), _push(rport, 32 << 20)  # warm up
            direct, via = [], []
            for _ in range(trials):
                direct.append(_push(port))
                via.append(_push(rport))
        finally:
            relay.kill()
            relay.wait()
        ratios = [v / d for v, d in zip(via, direct)]
        print(f"fabric throughput ({label}): direct median {statistics.median(direct):.0f} MB/s, "
              f"relay median {statistics.median(via):.0f} MB/s, ratio median "
              f"{statistics.median(ratios):.2f} (best {max(ratios):.2f}, worst {min(ratios):.2f}; "
              f"goal >= 0.8)")
    srv.close()


def lab_up_time(runs: int = 3) -> None:
    from twinsite import lab

    times = []
    phases = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            d = f"{tmp}/lab{i}"
            t0 = time.monotonic()
            try:
                lab.up(state_dir=d, timeout=90, die_with_parent=True)
                times.append(time.monotonic() - t0)
            finally:
                lab.down(d)
            log = open(f"{d}/supervisor.log").read().strip().splitlines()
            phases.append(next((ln.split("lab ready in ", 1)[1] for ln in log[::-1]
                                if "lab ready in" in ln), "?"))
    for t, ph in zip(times, phases):
        print(f"  lab up: {t:.2f}s (supervisor: {ph})")
    print(f"lab up (lab stack, {runs} runs): median {statistics.median(times):.2f}s, "
          f"best {min(times):.2f}s, worst {max(times):.2f}s (goal <= 3 s)")


def main() -> None:
    fabric_throughput()
    lab_up_time()


if __name__ == "__main__":
    main()
