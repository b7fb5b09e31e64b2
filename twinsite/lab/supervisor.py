"""The lab supervisor: one process owning the NATS servers, the gateways and the link fabric.

`python -m twinsite.lab --stack lab --state-dir DIR` (started by `twinsite lab up`).
Everything runs on one asyncio loop in the main thread; NATS servers and the gateways'
forkserver are spawned from that thread only, because PR_SET_PDEATHSIG fires when the *spawning
thread* exits (gateways are forked by the forkserver, so any thread may ask for one).
Blocking waits (monitor polling) go to worker threads. Faults are serialized by one lock. The control API is a tiny JSON
over HTTP/1.1 server on a loopback port recorded in `state.json`:

  GET /status                      -> status document
  POST /op/apply {"fault": {...}}  -> what was done (the fault as `twinsite.faults.to_dict`)
  POST /shutdown                   -> {"ok": true}, then everything stops
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import capacity, faults, natsconf, procs, shards
from ..natscluster import HOST, NatsNode
from ..talk import auth
from ..topology import LinkSpec, Topology, TopologyError, load_stack
from . import credentials, model, state
from .fabric import Fabric, Link
from .forker import ForkedChild, GatewayForker
from .lazystore import FuseUnavailable
from .model import LabError
from .routes import LabNatsCluster, SocketTable

log = logging.getLogger("twinsite.lab")
PROBE_STREAM = "LAB_PROBE"
CONVERGE_TIMEOUT_S = 60.0
SPLIT_AFTER_S = 1.0  # a vote round takes ms; a term without a leader after this has split
# A vote request crosses two relays and one store write each way: 20-35 ms measured at boot on
# an idle machine; a server still in term 0 this long after a campaign never got it.
REQUEST_LOST_AFTER_S = 0.3
BOOT_ATTEMPTS = 5  # a restart costs ~1 s, the Raft timeout that ends a split 4-9 s
LOOP_LATE_S = 0.2  # the fabric loop relays every cross-zone byte: a pause this long is logged


async def watch_loop_lag(period: float = 0.05) -> None:
    """Log every pause of this loop longer than LOOP_LATE_S (wall time in the log line), so a
    whole-lab stall in a drill can be told apart from a stall of NATS itself."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(period)
        late = loop.time() - t - period
        if late > LOOP_LATE_S:
            log.warning("fabric loop paused %.3fs", late)


class Supervisor:
    def __init__(self, topo: Topology, state_dir: Path):
        self.topo, self.dir = topo, state_dir
        self.fabric = Fabric()
        self.sockets = SocketTable()
        self.lock = asyncio.Lock()
        self.cluster: LabNatsCluster | None = None  # after the relays hold their ports
        self.gateways = model.gateway_plans(topo)
        self.gw_port: dict[str, int] = {}
        self.gw_proc: dict[str, ForkedChild | None] = {g.name: None for g in self.gateways}
        self.forker = GatewayForker()
        self.route_relay: dict[tuple[str, str], str] = {}  # (from, to) -> host:port
        self.client_relay: dict[tuple[str, str], str] = {}  # (gateway zone, nats zone) -> host:port
        self.edge: dict[str, str] = {}  # gateway name -> client-facing host:port
        self.zone_links: dict[str, Link] = {}
        self.edge_links: dict[str, Link] = {}  # gateway name -> its client edge
        self.partitioned: set[str] = set()
        self.powered_off: set[str] = set()
        self.crashed: set[str] = set()
        self.ready = False
        self.api_port = 0
        self.stopping = asyncio.Event()
        self.creds: credentials.LabCredentials | None = None  # at start: every hop authenticated
        self.token_file = state_dir / auth.LAB_TOKEN_FILE  # this lab's API token (start writes it)
        self.booted = asyncio.Event()  # set once the first meta leader is elected: see boot_nats
        self.boot_t0 = time.monotonic()
        self.boot_marks: dict[str, float] = {}  # phase -> seconds since boot_t0 (the ready line)
        self.splits = 0  # split first meta elections at boot

    # --- wiring ----------------------------------------------------------------------------------

    def _route_address(self, src: str, dst: str) -> str:
        return self.route_relay[(src, dst)]

    def default_spec(self, key: str) -> LinkSpec:
        a, b = key.split("~")
        return self.topo.link_between_zones(a, b)

    def allocate_ports(self) -> None:
        """Every process port in one batch, chosen while the relays already hold theirs: no two
        listeners can be handed the same free port."""
        zones = [z for z in self.topo.zones]
        ports = procs.stable_ports(3 * len(zones) + len(self.gateways))
        nodes = {}
        for i, z in enumerate(zones):
            d = self.dir / "nats" / z.name
            nodes[z.name] = NatsNode(zone=z.name, site=z.site, client_port=ports[3 * i],
                                     cluster_port=ports[3 * i + 1], http_port=ports[3 * i + 2],
                                     config_path=d / "nats.conf", log_path=d / "nats.log",
                                     store_dir=d / "jetstream")
        self.cluster = LabNatsCluster(self.topo, self.dir / "nats",
                                      route_address=self._route_address, nodes=nodes)
        self.gw_port = {g.name: p for g, p in zip(self.gateways, ports[3 * len(zones):])}

    async def build_fabric(self) -> None:
        for pair in faults.all_links(self.topo):
            key = pair.key
            self.zone_links[key] = self.fabric.link(key, self.default_spec(key))
        zones = [z.name for z in self.topo.zones]
        relays = []  # (relay, kind, src, dst): bound first, targets filled in below
        for src in zones:
            for dst in zones:
                if src != dst:
                    link = self.zone_links[model.pair_key(src, dst)]
                    r = await self.fabric.relay(f"route:{src}>{dst}", link, None)
                    r.resolve = lambda peer, src=src, dst=dst: self._boot_gate(src, dst)
                    self.route_relay[(src, dst)] = r.address
                    relays.append((r, "route", src, dst))
        for gz in sorted({g.zone for g in self.gateways}):
            for dst in zones:
                if dst != gz:
                    link = self.zone_links[model.pair_key(gz, dst)]
                    r = await self.fabric.relay(f"client:{gz}>{dst}", link, None)
                    self.client_relay[(gz, dst)] = r.address
                    relays.append((r, "client", gz, dst))
        advertise = {}
        for dst in zones:  # see LabNatsCluster: whoever dials it is looked up, then relayed
            r = await self.fabric.relay(f"advertised:{dst}", self.fabric.link("unresolved"), None)
            r.resolve = lambda peer, dst=dst: self._resolve_route_peer(peer, dst)
            advertise[dst] = r.address
            relays.append((r, "route", None, dst))
        for g in self.gateways:  # clients are outside the sites: an unshaped edge per gateway
            link = self.edge_links[g.name] = self.fabric.link(f"edge~{g.name}")
            r = await self.fabric.relay(f"edge:{g.name}", link, None)
            self.edge[g.name] = r.address
            relays.append((r, "edge", g.name, None))
        self.allocate_ports()
        self.cluster.advertise = advertise
        nodes = self.cluster.nodes
        for r, kind, src, dst in relays:
            port = (nodes[dst].cluster_port if kind == "route" else
                    nodes[dst].client_port if kind == "client" else self.gw_port[src])
            r.target = (HOST, port)

    async def _resolve_route_peer(self, peer: tuple, dst: str) -> Link | None:
        pids = {n.proc.pid: z for z, n in self.cluster.nodes.items() if n.running}
        # ~1 ms (a netlink lookup and a scan of seven fd tables): cheaper inline than a thread
        src = self.sockets.owner(peer[1], int(self.cluster.advertise[dst].rsplit(":", 1)[1]), pids)
        if src is None or src == dst:
            # typically a dialler that already gave up (FIN_WAIT2, no owner): nothing to relay
            log.info("advertised route of %s dialled by an unknown peer %s: refused", dst, peer)
            return None
        return await self._boot_gate(src, dst)

    async def _boot_gate(self, src: str, dst: str) -> Link | None:
        """The link a route connection src -> dst crosses; while the lab boots, a dial by the side
        of the pair that must not dial (`model.boot_dialler`) is held, then reset once the first
        meta leader is elected (its server then retries into the settled cluster)."""
        zones = tuple(self.cluster.nodes)
        if not self.booted.is_set() and model.boot_dialler(zones, src, dst) != src:
            await self.booted.wait()
            return None
        return self.zone_links[model.pair_key(src, dst)]

    def gateway_nats_urls(self, g: model.GatewayPlan) -> list[str]:
        """The topology's preference (`Topology.gateway_nats_zones`); its own zone's server
        directly, the others through the fabric."""
        return [self.cluster.nodes[z].client_url if z == g.zone else
                f"nats://{self.client_relay[(g.zone, z)]}"
                for z in self.topo.gateway_nats_zones(g.site)]

    # --- processes ---------------------------------------------------------------------------

    def start_gateway(self, g: model.GatewayPlan) -> None:
        p = self.gw_proc.get(g.name)
        if p is not None and p.poll() is None:
            return
        logdir = self.dir / "gateways"
        logdir.mkdir(parents=True, exist_ok=True)
        argv = ["serve", "--site", g.site, "--nats", ",".join(self.gateway_nats_urls(g)),
                "--listen", f"{HOST}:{self.gw_port[g.name]}", "--stack", self.topo.stack,
                "--shards", str(capacity.lab_shard_count(self.topo)),
                # a password *file*: argv is world-readable (ps)
                "--nats-user", natsconf.GATEWAY_USER,
                "--nats-password-file",
                str(self.creds.password_file(natsconf.GATEWAY_USER)),
                "--nats-ca", self.creds.pki.ca_file,
                "--token-file", str(self.token_file)]  # the path, never the token: ps shows argv
        self.gw_proc[g.name] = self.forker.spawn(argv, log=logdir / f"{g.name}.log")

    def start_gateways(self) -> None:
        for g in self.gateways:
            self.start_gateway(g)

    def start_zone(self, zone: str) -> None:
        self.cluster.start_node(zone)
        for g in self.gateways:
            if g.zone == zone:
                self.start_gateway(g)
        self.write_state()

    def kill_zone_procs(self, zone: str) -> list[str]:
        killed = []
        for g in self.gateways:
            p = self.gw_proc.get(g.name)
            if g.zone == zone and p is not None and p.poll() is None:
                procs.reap(p, sig=signal.SIGKILL)
                killed.append(g.name)
        if self.cluster.nodes[zone].running:
            self.cluster.kill_node(zone, signal.SIGKILL)
            killed.append(zone)
        self.write_state()
        return killed

    def children(self) -> dict[str, subprocess.Popen]:
        out = {f"nats:{z}": n.proc for z, n in self.cluster.nodes.items() if n.proc is not None}
        out.update({f"gateway:{k}": p for k, p in self.gw_proc.items() if p is not None})
        return out

    def write_state(self) -> None:
        doc = {
            "stack": self.topo.stack,
            "supervisor": state.record(os.getpid()),
            "api": f"http://{HOST}:{self.api_port}",
            "ready": self.ready,
            "children": {k: state.record(p.pid) for k, p in self.children().items()
                         if p.poll() is None},
        }
        if self.forker.server_pid() is not None:
            doc["children"]["forkserver"] = state.record(self.forker.server_pid())
        state.write_json(self.dir / state.STATE_FILE, doc)

    async def stop_children(self) -> None:
        procs_ = [p for p in self.children().values() if p.poll() is None]
        for p in procs_:
            procs.kill_group(p, signal.SIGTERM)
        # A second, then SIGKILL: the lab is scratch (the next one starts empty), so a gateway's
        # graceful drain of SSE streams and NATS (up to 3 + 5 s) buys nothing here; measured, it
        # made `lab down` after a drill take 3.4 s instead of 0.5 s.
        deadline = time.monotonic() + 1.0
        while any(p.poll() is None for p in procs_) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for p in procs_:
            procs.reap(p, timeout=2.0, sig=signal.SIGKILL)

    # --- links -------------------------------------------------------------------------------

    def refresh_links(self) -> None:
        """Apply silence: partitioned links and every link of a powered-off zone."""
        for key, link in self.zone_links.items():
            a, b = key.split("~")
            link.set_silent(key in self.partitioned or a in self.powered_off
                            or b in self.powered_off)
        for g in self.gateways:
            self.edge_links[g.name].set_silent(g.zone in self.powered_off)

    def heal_keys(self, keys) -> None:
        for key in keys:
            self.partitioned.discard(key)
            self.zone_links[key].set_shape(self.default_spec(key))
        self.refresh_links()

    # --- readiness ---------------------------------------------------------------------------

    async def probe_write(self, timeout: float) -> None:
        """The shard streams created and one write stored: the lab takes writes."""
        import nats

        nc = await nats.connect(self.cluster.client_urls(), connect_timeout=1,
                                allow_reconnect=True, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.1, **self.creds.auth().options())
        try:
            await asyncio.gather(self._probe_write(nc, timeout), self.create_shards(nc, timeout))
        finally:
            await nc.close()

    async def create_shards(self, nc, timeout: float) -> None:
        """Create the gateways' shard streams the moment the meta leader exists, with their own
        configuration (`talk.backend.stream_config`): each creation costs a stream leader
        election, and gateways get there only after their fork, app and connection (~0.5-1 s
        later); they then find the streams made (creating one twice is harmless)."""
        from ..talk.backend import ERR_STREAM_NAME_IN_USE, Settings, stream_config

        settings = Settings.from_topology(self.topo, self.topo.primary_sites[0].name, (),
                                          shards=capacity.lab_shard_count(self.topo))
        js = nc.jetstream(timeout=2)
        deadline = time.monotonic() + timeout

        async def create(name: str) -> None:
            while True:
                try:
                    await js.add_stream(stream_config(settings, name))
                    return
                except Exception as e:  # noqa: BLE001 - an election in progress: retry
                    if getattr(e, "err_code", None) == ERR_STREAM_NAME_IN_USE:  # a gateway was first
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"shard stream {name} not created: {e!r}") from None
                    await asyncio.sleep(0.1)
        await asyncio.gather(*(create(n) for n in settings.streams()))
        self.mark("shard streams")

    async def _probe_write(self, nc, timeout: float) -> None:
        js = nc.jetstream(timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                try:
                    await js.stream_info(PROBE_STREAM)
                except Exception:  # noqa: BLE001 - not there yet: create it
                    await js.add_stream(name=PROBE_STREAM, subjects=["_lab.probe"],
                                        num_replicas=self.topo.messaging.stream_replicas,
                                        max_msgs=100)
                self.mark("probe stream")
                await js.publish("_lab.probe", b"probe", timeout=2)
                self.mark("probe write")
                return
            except Exception as e:  # noqa: BLE001 - elections in progress: retry
                if time.monotonic() > deadline:
                    raise TimeoutError(f"probe stream not writable: {e!r}") from None
                await asyncio.sleep(0.1)

    def gateways_ready(self) -> bool:
        for g in self.gateways:
            p = self.gw_proc.get(g.name)
            if p is not None and p.poll() is not None:
                raise procs.ChildExited(f"gateway {g.name} exited ({p.returncode}); see "
                                        f"{self.dir / 'gateways' / (g.name + '.log')}")
            if p is None or procs.http_status(f"http://{HOST}:{self.gw_port[g.name]}/readyz") != 200:
                return False
        return True

    def converged(self) -> bool:
        """Every node healthy, a meta leader, every stream replica current, every gateway ready."""
        nodes = self.cluster.nodes
        if not all(n.running for n in nodes.values()):
            return False
        for n in nodes.values():
            if n.monitor("/healthz").get("status") != "ok":
                return False
        leader = self.cluster.meta_leader()
        if not leader:
            return False
        meta = nodes[leader].monitor("/jsz").get("meta_cluster", {})
        if not all(r.get("current") for r in meta.get("replicas", [])):
            return False
        for s in self.leader_views().values():
            if s is None:
                return False  # no leader, or its leader does not report it as leading
            reps = (s.get("cluster") or {}).get("replicas", []) or []
            want = self.topo.messaging.stream_replicas  # every stream here (shards, probe) is R<n>
            if len(reps) < want - 1:
                return False
            if not all(r.get("current") and not r.get("lag") for r in reps):
                return False
        return self.gateways_ready()

    def leader_views(self) -> dict[str, dict | None]:
        """Every stream any running server hosts -> its detail as its leader reports it (None while
        it has no leader that says so). One /jsz per server, whatever the number of shards."""
        views: dict[str, dict | None] = {}
        for zone, n in self.cluster.nodes.items():
            if not n.running:
                continue
            for acc in n.monitor("/jsz?streams=true").get("account_details", []) or []:
                for st in acc.get("stream_detail", []) or []:
                    views.setdefault(st["name"], None)
                    if (st.get("cluster") or {}).get("leader") == zone:
                        views[st["name"]] = st
        return views

    def shard_leaders(self) -> dict[str, dict]:
        """The shard streams' leaders: {stream: {"leader": zone, "site": site, "preferred": site}}."""
        out = {}
        try:
            views = self.leader_views()
        except OSError:
            views = {}
        for name, st in sorted(views.items()):
            i = shards.shard_index(name)
            if i is None:
                continue
            leader = (st.get("cluster") or {}).get("leader") if st else None
            out[name] = {"leader": leader, "site": self.topo.site_of(leader) if leader else None,
                         "preferred": shards.preferred_site(i, self.topo)}
        return out

    async def wait_converged(self, timeout: float) -> None:
        # 0.3 s: each check parses every server's /jsz (~0.5 MB with 180 shards) in this process,
        # which also runs the fabric's relays
        await asyncio.to_thread(procs.wait_until, self.converged, timeout, 0.3,
                                "the cluster to converge (every replica current)")

    # --- start / stop ------------------------------------------------------------------------

    async def boot_nats(self, attempts: int = BOOT_ATTEMPTS) -> None:
        """Wait for the first meta leader; restart a fresh cluster if the first election split.

        nats-server 2.15 counts the vote of a server with an empty log towards the first meta
        leader only when *every* member of the expected group (6 here: its configured routes)
        grants it, and each server campaigns 0.1-0.8 s after JetStream starts, as soon as it has
        one route. So the route mesh must be complete before the second-earliest campaign, or
        every server is a candidate of term 1 and nobody leads until a Raft election timeout
        (4-9 s). Through the relays, both sides of a pair used to dial at once (a relay holds an
        early dial until the peer listens), and nats-server resolves two simultaneous route
        handshakes by closing one or both, then retries a second later: meshing took 0.3-0.7 s
        and the first election split in most boots. Now only one side of each pair dials while
        the lab boots (`_boot_gate`); every server still has every route configured, so every
        server expects the same group size. The gate opens once the first meta leader exists.

        A split is still possible (a campaign timer shorter than the mesh takes to form: on a busy
        machine a route handshake waits for the scheduler). It is seen in /raftz as soon as no
        server can collect the votes it needs (`model.meta_split`), or a second after the first
        campaign, and answered with a fresh restart (~1 s; empty stores, nothing is lost) rather
        than a Raft election timeout; the last attempt waits for the timeout. Until then the zone
        links are unshaped: a route handshake, its interest and the vote cross the relays several
        times, and each shaped hop waits for a timer of the supervisor's loop (on a busy machine
        late); the modelled distances apply from the first meta leader on.
        """
        for link in self.zone_links.values():
            link.set_shape(LinkSpec())
        try:
            for attempt in range(1, attempts + 1):
                split = await asyncio.to_thread(self._wait_meta_leader, attempt == attempts)
                if not split:
                    self.booted.set()
                    self.mark("meta leader")
                    return
                await self._restart_servers(attempt + 1)
        finally:
            for key, link in self.zone_links.items():
                link.set_shape(self.default_spec(key))

    async def _restart_servers(self, attempt: int) -> None:
        self.splits += 1
        log.warning("first meta election split; restarting the NATS servers fresh "
                    "(attempt %d)", attempt)
        await asyncio.to_thread(self._kill_and_wipe_servers)  # off the loop: relays go on
        self.start_servers_together()
        self.write_state()

    def _kill_and_wipe_servers(self) -> None:
        for n in self.cluster.nodes.values():
            if n.proc is not None:
                procs.reap(n.proc, sig=signal.SIGKILL)
        # each store has its own FUSE daemon: seven rmtrees at once instead of one after another
        with concurrent.futures.ThreadPoolExecutor(len(self.cluster.nodes)) as pool:
            # an rmtree alone is unsynced: a later drop would undo it (wipe_store commits)
            list(pool.map(self.cluster.wipe_store, self.cluster.nodes))

    def start_servers_together(self) -> None:
        """Spawn every stopped server held at a barrier (a shell waiting for one line on its
        stdin), then release them all at once. Spawned one after another, seven servers on a
        busy machine took 0.2-1 s to all listen for routes, longer than the first campaign
        timer (see boot_nats); released together, they share the CPU and start in step."""
        held = []
        try:
            for n in self.cluster.nodes.values():
                if n.running:
                    continue
                if self.cluster.stores is not None:
                    self.cluster.stores.wait_fresh(n.zone)
                r, w = os.pipe()
                held.append(w)
                try:
                    n.proc = procs.spawn(["/bin/sh", "-c", 'read -r _ && exec "$@" </dev/null',
                                          "sh", procs.nats_server_binary(), "-c",
                                          str(n.config_path)], log=n.log_path, stdin=r)
                finally:
                    os.close(r)
            for w in held:
                os.write(w, b"\n")
        finally:
            for w in held:
                os.close(w)

    def _wait_meta_leader(self, last: bool, timeout: float = 30.0) -> bool:
        """True when the first election visibly split (and `last` is False), False on a leader."""
        deadline = time.monotonic() + timeout
        campaign_seen = None
        while time.monotonic() < deadline:
            for n in self.cluster.nodes.values():
                self.cluster._alive_or_raise(n)
            views = self._meta_views()
            if any(v.leader or v.state == "LEADER" for v in views):
                return False
            if not last:
                if views and max(v.term for v in views) >= 1 and campaign_seen is None:
                    campaign_seen = time.monotonic()
                since = time.monotonic() - campaign_seen if campaign_seen else 0.0
                if model.meta_split(views, len(self.cluster.nodes)) or since > SPLIT_AFTER_S or (
                        since > REQUEST_LOST_AFTER_S and model.meta_request_lost(views)):
                    log.warning("split: %s", " ".join(
                        f"{v.zone}:{v.state}/{v.term}/{v.voted_for}/{v.leader}/{v.size}"
                        for v in views))
                    return True
            time.sleep(0.05)
        raise TimeoutError(f"no JetStream meta leader after {timeout:.0f}s")

    def _meta_views(self) -> list[model.MetaView]:
        """The meta group as each answering server sees it (one /raftz each)."""
        views = []
        for n in self.cluster.nodes.values():
            try:
                g = n.monitor("/raftz?group=_meta_").get("$SYS", {}).get("_meta_", {})
            except (OSError, ValueError):
                continue
            if g:
                views.append(model.MetaView(n.zone, str(g.get("state") or ""),
                                            int(g.get("term") or 0), str(g.get("voted_for") or ""),
                                            str(g.get("leader") or ""), int(g.get("size") or 0)))
        return views

    def set_dial_grace(self, seconds: float) -> None:
        for r in self.fabric.relays.values():
            r.dial_grace = seconds

    def mark(self, phase: str) -> None:
        """Record when a boot phase ended (seconds since `start` began), for the ready line."""
        self.boot_marks[phase] = time.monotonic() - self.boot_t0

    async def start(self) -> None:
        self.boot_t0 = time.monotonic()
        # One process imports the gateway code once (~0.75 s of CPU), from the first moment and
        # before any NATS server starts: during the first meta election its CPU made that vote
        # split far more often (10 of 12 boots against 4 of 12, measured interleaved).
        self.forker.warm_up()
        auth.write(self.token_file)  # a new token per lab (mode 0600), before any gateway
        await self.build_fabric()
        self.api_server = await asyncio.start_server(self.handle, HOST, 0)
        self.api_port = self.api_server.sockets[0].getsockname()[1]
        self.mark("fabric")
        # While everything starts, a relay holds a connection to a not-yet-listening peer instead
        # of resetting it: route flapping at boot delays the first meta election by seconds.
        self.set_dial_grace(5.0)
        # Fresh users, passwords and TLS certificates for this lab: no hop is open, ever.
        self.creds = await asyncio.to_thread(credentials.create, self.dir,
                                             list(self.cluster.nodes))
        self.mark("credentials")
        self.cluster.security = self.creds.security(
            [shards.stream_name(i) for i in range(capacity.lab_shard_count(self.topo))])
        self.cluster.write_configs()
        # Every store is a lazy store: a power loss drops what the server never fsynced. No FUSE,
        # no lab (FuseUnavailable names the cause): never the old semantics silently.
        async def timed(what, fn):
            await asyncio.to_thread(fn)
            self.mark(what)
        await asyncio.gather(timed("mounted", self.cluster.mount_stores),
                             timed("preloaded", self.forker.wait_preloaded))
        self.mark("stores")
        self.start_servers_together()
        self.write_state()
        await self.boot_nats()

        async def healthy():
            await asyncio.to_thread(self.cluster.wait_ready, 30.0)
            self.mark("healthy")

        async def gateways():
            await asyncio.to_thread(self.start_gateways)
            self.mark("gateways forked")
            self.write_state()
            await asyncio.to_thread(procs.wait_until, self.gateways_ready, 30.0, 0.05,
                                    "every gateway's /readyz")
            self.mark("gateways ready")
        # from the first meta leader on, nothing waits for anything it does not need
        await asyncio.gather(healthy(), self.probe_write(30.0), gateways())
        self.set_dial_grace(0.0)
        self.ready = True
        self.write_state()
        log.warning("lab ready in %.2fs (%s; %d split election(s))",
                    time.monotonic() - self.boot_t0,
                    ", ".join(f"{k} {v:.2f}" for k, v in
                              sorted(self.boot_marks.items(), key=lambda kv: kv[1])), self.splits)

    async def shutdown(self) -> None:
        self.ready = False
        t0, marks = time.monotonic(), []
        if self.cluster is not None:
            await self.stop_children()
            marks.append(f"children {time.monotonic() - t0:.2f}")
            await asyncio.to_thread(self.cluster.unmount_stores)
            marks.append(f"stores {time.monotonic() - t0:.2f}")
        self.forker.stop()
        await self.fabric.close()
        log.warning("lab down in %.2fs (%s)", time.monotonic() - t0, ", ".join(marks))
        for sub in ("credentials", "pki"):  # this lab's secrets die with it
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        for f in (self.dir / state.STATE_FILE, self.token_file):  # the token dies with its lab
            try:
                f.unlink()
            except FileNotFoundError:
                pass

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict:
        topo = self.topo
        nodes = []
        for z, n in self.cluster.nodes.items():
            nodes.append({"name": z, "site": n.site, "zone": z, "kind": "nats",
                          "url": n.client_url, "monitor_url": n.monitor_url,
                          "cluster_port": n.cluster_port,
                          "pid": n.proc.pid if n.running else None,
                          "state": "up" if n.running else "down"})
        for g in self.gateways:
            p = self.gw_proc.get(g.name)
            up = p is not None and p.poll() is None
            nodes.append({"name": g.name, "site": g.site, "zone": g.zone, "kind": "gateway",
                          "url": f"http://{HOST}:{self.gw_port[g.name]}",
                          "client_url": f"http://{self.edge[g.name]}",
                          "pid": p.pid if up else None, "state": "up" if up else "down"})
        links = []
        for key, link in self.zone_links.items():
            a, b = key.split("~")
            spec = link.shape
            links.append({"a": a, "b": b, "latency_ms": spec.latency_ms,
                          "jitter_ms": spec.jitter_ms, "bandwidth_kbit": spec.bandwidth_kbit,
                          "state": model.link_state(spec, self.default_spec(key),
                                                    key in self.partitioned,
                                                    a in self.powered_off or b in self.powered_off)})
        return {
            "stack": topo.stack,
            "ready": self.ready,
            "state_dir": str(self.dir),
            "api": f"http://{HOST}:{self.api_port}",
            "supervisor_pid": os.getpid(),
            "sites": [{"name": s.name, "role": s.role, "zones": list(s.zone_names)}
                      for s in topo.sites],
            "zones": {z.name: ("powered-off" if z.name in self.powered_off else
                               "crashed" if z.name in self.crashed else "up") for z in topo.zones},
            "nodes": nodes,
            "links": links,
            "client_endpoints": {s.name: [f"http://{self.edge[g.name]}" for g in self.gateways
                                          if g.site == s.name] for s in topo.primary_sites},
            "nats_auth": credentials.status_doc(self.creds) if self.creds else None,
            "talk_token_file": str(self.token_file),  # where, not what: the file is 0600
        }

    # --- operations --------------------------------------------------------------------------

    async def op_apply(self, fault: dict | None = None) -> dict:
        """Resolve a fault (its wire form, `twinsite.faults.to_dict`) against the lab's topology and
        realise the effect; the answer says what was done."""
        f = faults.from_dict(fault)
        down = frozenset(self.powered_off | self.crashed)
        effect = faults.resolve(f, self.topo, down)
        did = await getattr(self, f"_{effect.action.value}")(effect)
        return {"ok": True, "effect": effect.summary(), **did}

    async def _down(self, effect: faults.Effect) -> dict:
        silenced = []
        if effect.silent:
            self.powered_off.update(effect.zones)
            silenced = [k for k, link in self.zone_links.items()
                        if not link.silent and set(k.split("~")) & set(effect.zones)]
            self.refresh_links()  # silence first, so not one FIN or RST escapes the dying zones
        else:
            self.crashed.update(effect.zones)
        # process work off the loop: this loop relays every cross-zone byte of the lab, so a
        # reap (or a fork) on it pauses the whole network - the survivors' quorum traffic too
        killed = await asyncio.to_thread(
            lambda: [k for z in effect.zones for k in self.kill_zone_procs(z)])
        dropped = {"bytes": 0, "files": 0}
        if effect.drops_unsynced and self.cluster.stores is not None:
            for z in effect.zones:  # the page cache dies with the power (also of a crashed zone)
                # no wait for the kernel's cache here: start_zone waits (seconds later, if at all)
                report = await asyncio.to_thread(self.cluster.stores.drop, z, False)
                dropped["bytes"] += report.bytes
                dropped["files"] += report.files
        return {"killed": killed, "silenced": silenced,
                **({"unsynced_dropped": dropped} if effect.drops_unsynced else {})}

    async def _shape(self, effect: faults.Effect) -> dict:
        for pair in effect.links:
            self.zone_links[pair.key].set_shape(effect.shape)
        return {"shaped": [p.key for p in effect.links]}

    async def _cut(self, effect: faults.Effect) -> dict:
        self.partitioned.update(p.key for p in effect.links)
        self.refresh_links()
        return {"cut": [p.key for p in effect.links]}

    async def _restore(self, effect: faults.Effect) -> dict:
        """Every server of the target back first, then one wait for the whole cluster: after a
        grid-wide power loss no zone can converge without the others (black start)."""
        t0 = time.monotonic()
        was_down = [z for z in effect.zones if z in self.powered_off or z in self.crashed
                    or not self.cluster.nodes[z].running]
        await asyncio.to_thread(lambda: [self.start_zone(z) for z in effect.zones])  # see _down
        for z in effect.zones:
            self.powered_off.discard(z)
            self.crashed.discard(z)
        self.heal_keys([p.key for p in effect.links])  # refreshes silence too
        await self.wait_converged(float(effect.fault.timeout_s))
        return {"started": was_down, "healed": [p.key for p in effect.links],
                "black_start": effect.black_start,
                "converged_s": round(time.monotonic() - t0, 3)}

    async def _heal(self, effect: faults.Effect) -> dict:
        self.heal_keys([p.key for p in effect.links])
        return {"healed": [p.key for p in effect.links]}

    OPS = ("apply",)

    async def call(self, op: str, args: dict) -> dict:
        if op not in self.OPS:
            raise LabError(f"unknown operation '{op}' (valid: {', '.join(self.OPS)})")
        if not isinstance(args, dict):
            raise LabError("arguments must be a JSON object")
        async with self.lock:
            try:
                return await getattr(self, f"op_{op}")(**args)
            except TypeError as e:
                raise LabError(f"{op}: bad arguments ({e})") from None

    # --- control API (JSON over HTTP/1.1, one request per connection) ------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        code, body = 500, {"error": "internal error"}
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in
                       (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            args = json.loads(raw) if raw.strip() else {}
            if method == "GET" and path == "/status":
                code, body = 200, self.status()
            elif method == "GET" and path == "/status?shards=1":
                code, body = 200, {**self.status(),
                                   "shards": await asyncio.to_thread(self.shard_leaders)}
            elif method == "POST" and path == "/shutdown":
                code, body = 200, {"ok": True}
                self.stopping.set()
            elif method == "POST" and path.startswith("/op/"):
                code, body = 200, await self.call(path[4:], args)
            else:
                code, body = 404, {"error": f"no such endpoint: {method} {path}"}
        except (LabError, faults.FaultError) as e:
            code, body = 400, {"error": str(e)}
        except (TimeoutError, procs.ChildExited) as e:
            code, body = 504, {"error": str(e)}
        except (ValueError, asyncio.IncompleteReadError) as e:
            code, body = 400, {"error": f"bad request: {e}"}
        except Exception as e:  # noqa: BLE001 - the API answers; the supervisor keeps running
            log.exception("control API")
            code, body = 500, {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(body).encode()
        try:
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                         + data)
            await writer.drain()
            writer.close()
        except OSError:
            pass


async def run(topo: Topology, state_dir: Path) -> int:
    sup = Supervisor(topo, state_dir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, sup.stopping.set)
    try:
        lag = asyncio.create_task(watch_loop_lag())
        start = asyncio.create_task(sup.start())
        stop = asyncio.create_task(sup.stopping.wait())
        done, _ = await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        if start in done:
            start.result()  # raise a failed start
            await stop
        else:
            start.cancel()
        return 0
    except (TimeoutError, procs.ChildExited, OSError, FuseUnavailable) as e:
        print(f"lab: start failed: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        lag.cancel()
        await sup.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m twinsite.lab")
    p.add_argument("--stack", default="lab")
    p.add_argument("--state-dir", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    d = Path(args.state_dir)
    try:
        topo = load_stack(args.stack)
    except TopologyError as e:
        print(f"twinsite: {e}", file=sys.stderr)
        return 2
    for sub in ("nats", "gateways"):  # a fresh lab: no data from a previous run
        shutil.rmtree(d / sub, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    import uvloop

    return uvloop.run(run(topo, d))


if __name__ == "__main__":
    sys.exit(main())
