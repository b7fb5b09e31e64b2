"""A stretched NATS JetStream cluster as local processes: one `nats-server` per zone of a topology.

Used by the test suite (direct routes; open unless `security` is given) and by the lab (routes
through the link fabric, via `route_address`; always `security`). Ports are chosen free on
loopback; every server is a child that dies with us.
With `lazy_stores`, every store_dir is a lazy store (twinsite/lab/lazystore.py): `power_loss`
then takes back what the server never fsynced, as a real power cut would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import natsconf, procs
from .topology import Topology

HOST = "127.0.0.1"


@dataclass
class NatsNode:
    zone: str
    site: str
    client_port: int
    cluster_port: int
    http_port: int
    config_path: Path
    log_path: Path
    store_dir: Path
    proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self, text: str) -> None:
        """Mode 0600 before a byte is written: the config may carry the route password."""
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def monitor(self, path: str, timeout: float = 1.0) -> dict:
        with urllib.request.urlopen(self.monitor_url + path, timeout=timeout) as r:
            return json.loads(r.read())


RouteAddress = Callable[[str, str], str]  # (from_zone, to_zone) -> host:port of to_zone's routes


@dataclass
class LocalNatsCluster:
    topo: Topology
    base_dir: Path
    route_address: RouteAddress | None = None
    nodes: dict[str, NatsNode] = field(default_factory=dict)
    lazy_stores: bool = False
    stores: object | None = None  # lazystore.LazyStores once mounted
    # zone -> natsconf.Security (users, route credentials, TLS); None: an open cluster, which only
    # the test suite runs (the lab always sets it: twinsite/lab/credentials.py)
    security: Callable[[str], natsconf.Security] | None = None

    def __post_init__(self):
        self.base_dir = Path(self.base_dir)
        if not self.nodes:
            zones = self.topo.zones
            ports = procs.stable_ports(3 * len(zones))  # servers restart on them
            for i, z in enumerate(zones):
                d = self.base_dir / z.name
                self.nodes[z.name] = NatsNode(
                    zone=z.name, site=z.site,
                    client_port=ports[3 * i], cluster_port=ports[3 * i + 1],
                    http_port=ports[3 * i + 2],
                    config_path=d / "nats.conf", log_path=d / "nats.log", store_dir=d / "jetstream")

    # --- configuration ---------------------------------------------------------------------------

    def _route(self, src: str, dst: str) -> str:
        if self.route_address:
            return self.route_address(src, dst)
        return f"{HOST}:{self.nodes[dst].cluster_port}"

    def plan(self, zone: str) -> natsconf.ServerPlan:
        n = self.nodes[zone]
        return natsconf.ServerPlan(
            zone=zone,
            client_listen=f"{HOST}:{n.client_port}",
            cluster_listen=f"{HOST}:{n.cluster_port}",
            http_listen=f"{HOST}:{n.http_port}",
            store_dir=str(n.store_dir),
            routes=tuple(self._route(zone, other) for other in self.nodes if other != zone),
            security=self.security(zone) if self.security else None,
        )

    def write_configs(self) -> None:
        for zone, n in self.nodes.items():
            n.write_config(natsconf.server_config(self.topo, self.plan(zone)))

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.write_configs()
        try:
            if self.lazy_stores:
                self.mount_stores()
            for zone in self.nodes:
                self.start_node(zone)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def start_node(self, zone: str) -> NatsNode:
        n = self.nodes[zone]
        if n.running:
            return n
        if self.stores is not None:
            self.stores.wait_fresh(zone)  # the kernel's cache from before a power loss expired
        n.proc = procs.spawn([procs.nats_server_binary(), "-c", str(n.config_path)], log=n.log_path)
        return n

    def kill_node(self, zone: str, sig: int = signal.SIGKILL) -> None:
        n = self.nodes[zone]
        if n.proc is not None:
            procs.reap(n.proc, sig=sig)

    def stop(self) -> None:
        for n in self.nodes.values():
            if n.proc is not None:
                procs.reap(n.proc, timeout=3.0, sig=signal.SIGTERM)
        self.unmount_stores()

    # --- lazy stores (power loss drops what was not fsynced) --------------------------------------

    def mount_stores(self, timeout: float = 15.0) -> None:
        """Mount a lazy store on every store_dir, before any server starts. Raises
        lazystore.FuseUnavailable naming the cause (no /dev/fuse, no fuse3, ...)."""
        from .lab import lazystore  # lazy: FUSE is the lab's business, not every importer's

        if self.stores is None:
            self.stores = lazystore.mount_node_stores(self.nodes.values(), timeout)

    def unmount_stores(self) -> None:
        """After every server is stopped."""
        if self.stores is not None:
            self.stores.stop()
            self.stores = None

    def power_loss(self, zone: str):
        """SIGKILL, then every unsynced write of the server's store is lost: a DropReport (None
        without lazy stores). A crash is `kill_node` alone: the page cache survives it."""
        self.kill_node(zone, signal.SIGKILL)
        if self.stores is None:
            return None
        return self.stores.drop(zone, wait=False)  # start_node waits for the mount to be fresh

    def wipe_store(self, zone: str) -> None:
        """Empty a (stopped) server's store on purpose: nothing for a later drop to bring back."""
        if self.stores is not None:
            self.stores.wait_fresh(zone)
        shutil.rmtree(self.nodes[zone].store_dir, ignore_errors=True)  # a mountpoint itself stays
        if self.stores is not None:
            self.stores.commit(zone)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- readiness -------------------------------------------------------------------------------

    def node_healthy(self, zone: str) -> bool:
        try:
            return self.nodes[zone].monitor("/healthz").get("status") == "ok"
        except (OSError, ValueError):
            return False

    @staticmethod
    def _alive_or_raise(n: NatsNode) -> bool:
        if n.proc is not None and n.proc.poll() is not None:
            tail = n.log_path.read_text(errors="replace").strip().splitlines()[-1:] \
                if n.log_path.exists() else []
            raise procs.ChildExited(f"nats-server {n.zone} exited ({n.proc.returncode}): "
                                    f"{tail[0] if tail else 'no log'}")
        return True

    def meta_leader(self) -> str | None:
        for n in self.nodes.values():
            if not n.running:
                continue
            try:
                leader = n.monitor("/jsz").get("meta_cluster", {}).get("leader")
            except (OSError, ValueError):
                continue
            if leader:
                return leader
        return None

    def wait_ready(self, timeout: float = 30.0, zones: list[str] | None = None) -> None:
        zones = zones or [z for z, n in self.nodes.items() if n.running]
        for z in zones:
            n = self.nodes[z]
            procs.wait_until(lambda n=n: self._alive_or_raise(n) and
                             n.monitor("/healthz").get("status") == "ok",
                             timeout, what=f"nats-server {z} /healthz")
        procs.wait_until(lambda: self.meta_leader() is not None, timeout,
                         what="a JetStream meta leader")

    # --- addresses -------------------------------------------------------------------------------

    def client_urls(self, site: str | None = None) -> list[str]:
        return [n.client_url for n in self.nodes.values() if site is None or n.site == site]
