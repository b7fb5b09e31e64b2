"""NATS in the lab: routes that cannot bypass the link fabric.

Pure plumbing for the supervisor: `LabNatsCluster` (configs whose advertised route address is a
relay) and `SocketTable` (which server dialled a relay: the owner of the source port, via netlink
and /proc). Ports that stay bindable while a server is down: `procs.stable_ports`.
"""

from __future__ import annotations

import os
import socket
import struct

from .. import natsconf
from ..natscluster import HOST, LocalNatsCluster


def _diag_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the loopback TCP socket local_port -> remote_port, asked of the kernel by
    netlink sock_diag (one exact lookup, ~50 us; /proc/net/tcp lists every socket)."""
    lo = socket.inet_aton(HOST) + b"\0" * 12
    sockid = (struct.pack("!HH16s16s", local_port, remote_port, lo, lo)
              + struct.pack("=I2I", 0, 0xFFFFFFFF, 0xFFFFFFFF))  # any interface, no cookie
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    msg = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as s:
        s.settimeout(1.0)
        s.send(msg)
        data = s.recv(65536)
    if struct.unpack_from("=IH", data)[1] != _SOCK_DIAG_BY_FAMILY:
        return None  # an error message: no such socket
    return struct.unpack_from("=5I", data, 16 + 4 + 48)[4] or None  # inet_diag_msg.idiag_inode


_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY = 4, 20


class SocketTable:
    """Who owns a loopback TCP socket: its inode from the kernel, then the process holding it."""

    def owner(self, port: int, remote_port: int, pids: dict[int, str]) -> str | None:
        try:
            inode = _diag_inode(port, remote_port)
        except (OSError, struct.error):
            return None
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
            n.write_config(natsconf.render(doc))
