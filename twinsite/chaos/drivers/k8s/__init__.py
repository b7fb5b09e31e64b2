"""The Kubernetes driver: the same fault effects, realised on the clusters of a stack (one per site).

Configuration (chaostoolkit conventions): `target: k8s`, `stack` (or env TWINSITE_STACK),
`kubeconfig` (path; default $KUBECONFIG, else ~/.kube/config), `contexts` ({site: context}, else
each site's `kubeContext`), `dry_run` (the actions plan, touch nothing), `run_id` (else env
TWINSITE_RUN_ID, else this process's id: the method and the rollbacks of one `chaos run` share it).
Secrets (optional): `tokens` ({site: bearer token}) and `nats_password` (the operations user;
`nats_ca` in the configuration: the CA of the servers' TLS certificates).
The gateways' API token (traffic): secret `talk_token`, else the file named by configuration
`talk_token_file` or env TWINSITE_TALK_TOKEN_FILE (e.g. written from the stack's secret output:
`pulumi stack output talkToken --show-secrets > FILE; chmod 600 FILE`).

A fault is read → planned (`plan.py`, pure) → executed op by op. Each op is journalled; if the run
is interrupted (Ctrl-C, SIGTERM) in the middle of a fault, what this fault already did is undone
before the interruption goes on, so no taint, cordon or chaos object is left behind.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

from chaoslib.exceptions import ActivityFailed

from twinsite import faults
from twinsite.talk import auth
from twinsite.topology import Topology, TopologyError, load_stack

from .cluster import ClusterError, SiteCluster, kubeconfig_path, site_addresses
from .plan import Op, PlanError, Verb, plan

UNDO = {Verb.CREATE_CHAOS: Verb.DELETE_CHAOS, Verb.CORDON: Verb.UNCORDON,
        Verb.TAINT: Verb.UNTAINT}


class K8sDriver:
    def __init__(self, configuration: Mapping[str, Any] | None = None,
                 secrets: Mapping[str, Any] | None = None):
        from .. import config_value
        c, s = configuration or {}, secrets or {}
        stack = config_value(c, "stack", "TWINSITE_STACK")
        if not stack:
            raise ActivityFailed("target k8s needs a stack: set configuration `stack` "
                                 "(or TWINSITE_STACK)")
        try:
            self.topo: Topology = load_stack(stack)
        except TopologyError as e:
            raise ActivityFailed(str(e)) from None
        self.kubeconfig = kubeconfig_path(config_value(c, "kubeconfig", "TWINSITE_KUBECONFIG"))
        self.contexts = dict(c.get("contexts") or {})
        self.run = str(config_value(c, "run_id", "TWINSITE_RUN_ID", "")
                       or f"{socket.gethostname()}-{os.getpid()}")[:63]
        self.tokens = dict(s.get("tokens") or {})
        self.nats_password = s.get("nats_password")
        # the operations user of the stack's NATS (twinsite.natsconf.OPS_USER), over TLS when
        # `nats_ca` (a CA bundle path) is given
        from twinsite import natsconf
        from twinsite.natsclient import NatsAuth
        self.nats_auth = (NatsAuth(natsconf.OPS_USER, self.nats_password, c.get("nats_ca"))
                          if self.nats_password else None)
        self.talk_token = s.get("talk_token")
        self.talk_token_file = config_value(c, "talk_token_file", auth.ENV_FILE)
        self._clusters: dict[str, SiteCluster] | None = None

    # --- clusters ---------------------------------------------------------------------------------

    def clusters(self) -> dict[str, SiteCluster]:
        if self._clusters is None:
            ns = self.topo.kubernetes.namespace
            out = {}
            try:
                for site in self.topo.sites:
                    out[site.name] = SiteCluster.connect(site, ns, self.kubeconfig,
                                                         self.contexts.get(site.name),
                                                         self.tokens.get(site.name))
                for cl in out.values():
                    cl.check_namespace()
            except ClusterError as e:
                raise ActivityFailed(str(e)) from None
            self._clusters = out
        return self._clusters

    def views(self):
        try:
            return {name: cl.view(site_addresses(self.topo, cl.site))
                    for name, cl in self.clusters().items()}
        except ClusterError as e:
            raise ActivityFailed(str(e)) from None

    # --- the Driver protocol ----------------------------------------------------------------------

    def topology(self) -> Topology:
        return self.topo

    def plan(self, effect: faults.Effect) -> tuple[Op, ...]:
        try:
            return plan(effect, self.topo, self.views(), self.run)
        except PlanError as e:
            raise ActivityFailed(str(e)) from None

    def apply(self, effect: faults.Effect) -> dict:
        ops = self.plan(effect)
        account = {"run": self.run, "plan": [op.describe() for op in ops]}
        done: list[Op] = []
        timeout = float(getattr(effect.fault, "timeout_s", 120.0))
        waits = {}
        try:
            for op in ops:
                result = self.clusters()[op.site].execute(op, self.run, timeout)
                done.append(op)
                if op.verb is Verb.WAIT_READY:
                    waits[op.site] = result["ready_s"]
        except ClusterError as e:
            self._undo(done)
            raise ActivityFailed(str(e)) from None
        except BaseException:  # Ctrl-C / SIGTERM mid-fault: leave nothing of this fault behind
            self._undo(done)
            raise
        return {**account, "done": [op.describe() for op in done],
                **({"ready_s": waits} if waits else {}), **_counts(done)}

    def _undo(self, done: list[Op]) -> None:
        for op in reversed(done):
            if op.verb in UNDO:
                try:
                    self.clusters()[op.site].execute(Op(UNDO[op.verb], op.site, op.name), self.run)
                except Exception:  # noqa: BLE001 - best effort; restore(all) retries from the API
                    pass

    def endpoints(self) -> dict[str, list[str]]:
        out = {}
        for site in self.topo.primary_sites:
            url = site.gateway_url or self.clusters()[site.name].gateway_endpoint()
            if not url:
                raise ActivityFailed(f"site {site.name}: no gatewayUrl in the stack file and the "
                                     f"talk-gateway Service has no LoadBalancer address yet")
            out[site.name] = [url.rstrip("/")]
        return out

    def api_token(self) -> str:
        try:
            if self.talk_token:
                return auth.check_token(str(self.talk_token), "secret talk_token")
            if not self.talk_token_file:
                raise auth.TokenError(f"no API token for the gateways: set the secret talk_token "
                                      f"or {auth.ENV_FILE} (`pulumi stack output talkToken "
                                      f"--show-secrets`)")
            return auth.read_token(self.talk_token_file)
        except auth.TokenError as e:
            raise ActivityFailed(str(e)) from None

    def healthy(self) -> bool:
        """Every twinsite workload ready in every site (and JetStream current where reachable)."""
        try:
            if any(cl.not_ready() for cl in self.clusters().values()):
                return False
        except ClusterError:
            return False
        return self._jetstream_current()

    def _nats_urls(self) -> list[str]:
        urls = [s.nats_url for s in self.topo.sites if s.nats_url]
        if not urls:
            raise ActivityFailed("stream leaders on k8s need a natsUrl for a site in the stack "
                                 "file (none is declared)")
        return urls

    def _jetstream_current(self) -> bool:
        if not any(s.nats_url for s in self.topo.sites):
            return True  # nothing reachable to ask (e.g. the sandbox: no containers run)
        from ..jetstream import all_current
        try:
            return all_current(self._nats_urls(), auth=self.nats_auth)
        except Exception:  # noqa: BLE001 - unreachable or failing: not healthy
            return False

    def stream_leader(self, stream: str) -> str:
        from ..jetstream import stream_placement
        try:
            leader = stream_placement(self._nats_urls(), stream, auth=self.nats_auth)
        except ActivityFailed:
            raise
        except Exception as e:  # noqa: BLE001 - nats-py's errors vary
            raise ActivityFailed(f"stream {stream}: no leader known ({e or type(e).__name__})") \
                from None
        if not leader.get("leader"):
            raise ActivityFailed(f"stream {stream} has no leader right now")
        return _zone_of_server(self.topo, leader["leader"])

    def move_stream_leader(self, site: str, stream: str) -> dict:
        from ..jetstream import move_leader
        if site not in {s.name for s in self.topo.sites}:
            raise ActivityFailed(f"unknown site '{site}' (valid: {faults.valid_sites(self.topo)})")
        servers = list(self.topo.site(site).zone_names)  # server_name = zone (twinsite.natsconf)
        try:
            leader = move_leader(self._nats_urls(), stream, servers, auth=self.nats_auth)
        except ActivityFailed:
            raise
        except Exception as e:  # noqa: BLE001
            raise ActivityFailed(f"moving the {stream} leader: {e or type(e).__name__}") from None
        return {"stream": stream, "leader": leader, "site": site}

    def shard_leaders(self) -> dict[str, str | None]:
        """Each shard stream -> the site of its leader (None during an election)."""
        from twinsite import capacity, shards
        from ..jetstream import stream_leaders
        names = [shards.stream_name(i) for i in range(capacity.shard_count(self.topo))]
        try:
            leaders = stream_leaders(self._nats_urls(), names, auth=self.nats_auth)
        except ActivityFailed:
            raise
        except Exception as e:  # noqa: BLE001 - nats-py's errors vary
            raise ActivityFailed(f"shard leaders: {e or type(e).__name__}") from None
        return {n: self.topo.site_of(_zone_of_server(self.topo, srv)) if srv else None
                for n, srv in leaders.items()}


def _zone_of_server(topo: Topology, server: str) -> str:
    """A server is named after its zone, on the lab and on Kubernetes (twinsite.natsconf)."""
    for z in topo.zones:
        if server == z.name:
            return z.name
    raise ActivityFailed(f"stream leader {server!r} is not a server of the stack's zones")


def _counts(done: list[Op]) -> dict:
    def names(verb):
        return [f"{op.site}/{op.name}" for op in done if op.verb is verb]
    out = {"pods_deleted": names(Verb.DELETE_POD), "nodes_cordoned": names(Verb.CORDON),
           "nodes_tainted": names(Verb.TAINT), "chaos_created": names(Verb.CREATE_CHAOS),
           "chaos_deleted": names(Verb.DELETE_CHAOS), "nodes_untainted": names(Verb.UNTAINT),
           "nodes_uncordoned": names(Verb.UNCORDON)}
    return {k: v for k, v in out.items() if v}
