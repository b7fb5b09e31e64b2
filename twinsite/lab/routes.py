"""NATS in the lab: routes that cannot bypass the link fabric, and ports that stay bindable.

Pure plumbing for the supervisor: `LabNatsCluster` (configs whose advertised route address is a
relay), `SocketTable` (which server dialled a relay: the owner of the source port, from /proc),
`stable_ports` (ports outside the ephemeral range, so a restored process can bind its old port).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time

from .. import natsconf, procs
from ..natscluster import HOST, LocalNatsCluster


def stable_ports(n: int) -> list[int]:
    """n free loopback ports *below* the kernel's ephemeral range.

    A process's port must stay free while it is down (power loss, crash) so that `restore` can
    bind it again; a port from the ephemeral range could meanwhile be taken as the source port
    of any outgoing connection (the relays make hundreds).
    """
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = random.sample(range(max(1024, low - 16384), low), min(4 * n + 64, low - 1024))
    socks, ports = [], []
    try:
        for port in candidates:
            s = socket.socket()
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
            if len(ports) == n:
                return ports
    finally:
        for s in socks:
            s.close()
    return ports + procs.free_ports(n - len(ports))


class SocketTable:
    """Who owns a loopback TCP socket, from /proc (Linux). Reading /proc/net/tcp costs tens of
    ms when the machine holds thousands of sockets, so one read serves a burst of lookups."""

    def __init__(self, max_age: float = 0.2):
        self.max_age = max_age
        self.read_at = 0.0
        self.table: dict[tuple[int, int], str] = {}  # (local port, remote port) -> inode
        self.lock = threading.Lock()

    def _read(self) -> None:
        table = {}
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[9] != "0" and cols[1].startswith("0100007F:"):
                    table[(int(cols[1][9:], 16), int(cols[2][9:], 16))] = cols[9]
        self.table, self.read_at = table, time.monotonic()

    def owner(self, port: int, remote_port: int, pids: dict[int, str]) -> str | None:
        with self.lock:
            inode = self.table.get((port, remote_port))
            if inode is None:
                if time.monotonic() - self.read_at > 0.005:  # stale for this one: read again
                    try:
                        self._read()
                    except (OSError, IndexError, ValueError):
                        return None
                inode = self.table.get((port, remote_port))
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for pid, name in pids.items():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return name
                except OSError:
                    continue
        return None


class LabNatsCluster(LocalNatsCluster):
    """The local cluster with routes that cannot bypass the fabric.

    `no_advertise` only hides servers from *clients*. Between servers, NATS dials the address a
    peer advertises for its routes: for pooled route connections and for routes learnt by
    gossip (measured: a third of all route connections). So every server advertises its own
    "advertised route" relay, which finds out which server dialled it (the owner of the source
    port, from /proc) and relays across the link between the two zones.
    """

    advertise: dict[str, str] | None = None  # zone -> host:port of its advertised relay

    def write_configs(self) -> None:
        for zone, n in self.nodes.items():
            doc = natsconf.server_document(self.topo, self.plan(zone))
            if self.advertise:
                doc["cluster"]["advertise"] = self.advertise[zone]
            n.config_path.parent.mkdir(parents=True, exist_ok=True)
            n.config_path.write_text(natsconf.render(doc))
