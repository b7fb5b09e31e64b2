"""NATS JetStream servers on Kubernetes: one StatefulSet per zone, pinned to its zone.

The server config comes from the shared generator (`twinsite.natsconf`), so the lab and the clusters
run the same tuning (fsync before ack, short pings, site/zone tags, unique placement by site).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from .. import capacity, natsconf, shards as shardmap
from ..topology import Site, Topology
from . import common as c

STORE_DIR = "/data/jetstream"
PID_FILE = "/var/run/nats/nats.pid"
NATS_UID = 1000


def stateful_name(zone: str) -> str:
    return f"nats-{zone}"


def local_route_host(zone: str, namespace: str) -> str:
    n = stateful_name(zone)
    return f"{n}-0.{n}.{namespace}.svc.cluster.local"


def client_address(zone: str, namespace: str) -> str:
    """host:port a client in the same cluster dials for one zone's server."""
    return f"{stateful_name(zone)}.{namespace}.svc.cluster.local:{c.CLIENT_PORT}"


def route_targets(topo: Topology, from_zone: str) -> tuple[str, ...]:
    """host:port of every other server's route listener, as seen from `from_zone`'s pod.

    Same cluster: the pod's stable DNS name behind its headless Service. Another site: the zone's
    declared routeAddress (pods in another cluster cannot resolve this cluster's DNS); without one,
    the Multi-Cluster Services name (`svc.clusterset.local`), which needs an MCS implementation.
    """
    ns = topo.kubernetes.namespace
    here = topo.site_of(from_zone)
    out = []
    for z in topo.zones:
        if z.name == from_zone:
            continue
        if z.site == here:
            out.append(f"{local_route_host(z.name, ns)}:{c.ROUTE_PORT}")
        elif z.route_address:
            out.append(z.route_address)
        else:
            n = stateful_name(z.name)
            out.append(f"{n}-0.{n}.{ns}.svc.clusterset.local:{c.ROUTE_PORT}")
    return tuple(out)


def tls_dns_names(topo: Topology) -> tuple[str, ...]:
    """Every name a client or a dialling route checks the servers' certificate against (the
    stack's natsTlsSecret must cover them all: one certificate serves every zone)."""
    ns = topo.kubernetes.namespace
    names = [client_address(z.name, ns).rsplit(":", 1)[0] for z in topo.zones]
    for z in topo.zones:
        names += [a.rsplit(":", 1)[0] for a in route_targets(topo, z.name)]
    return tuple(n for n in dict.fromkeys(names) if not _is_ip(n))  # IPs need IP SANs instead


def _is_ip(host: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def zone_security(topo: Topology) -> natsconf.Security:
    """The lab's users and permissions (`twinsite.natsconf`), with secrets left as placeholders the
    entrypoint fills in from Secret-backed env vars: nothing secret is in the ConfigMap."""
    streams = tuple(shardmap.stream_name(i) for i in range(capacity.shard_count(topo)))
    t = c.NATS_TLS_DIR
    return natsconf.Security(
        users=(natsconf.User(natsconf.GATEWAY_USER, c.HASH_TOKENS["gateway"],
                             natsconf.gateway_permissions(streams)),
               natsconf.User(natsconf.OPS_USER, c.HASH_TOKENS["ops"], natsconf.OPS_PERMISSIONS)),
        route_password=natsconf.Raw("$NATS_ROUTE_PASSWORD"),
        route_url_password=c.ROUTE_PASSWORD_TOKEN,
        tls=natsconf.Tls(f"{t}/tls.crt", f"{t}/tls.key", f"{t}/ca.crt"))


def zone_config(topo: Topology, zone: str) -> str:
    """nats.conf for one zone's pod; passwords stay env references, never in the ConfigMap."""
    plan = natsconf.ServerPlan(
        zone=zone,
        client_listen=f"0.0.0.0:{c.CLIENT_PORT}",
        cluster_listen=f"0.0.0.0:{c.ROUTE_PORT}",
        # Monitoring: no auth in nats-server, so reachable only by the kubelet's probes and
        # Prometheus pods (NetworkPolicy allow-nats-monitoring); no Service publishes it.
        http_listen=f"0.0.0.0:{c.MONITOR_PORT}",
        store_dir=STORE_DIR,
        routes=route_targets(topo, zone),
        extra={"pid_file": PID_FILE},  # for the preStop lame-duck signal
        security=zone_security(topo),
    )
    return natsconf.server_config(topo, plan)


# The image's root filesystem is read-only: write the final config to an emptyDir. Hashes hold
# '/' and '.', never '|' or '&': safe as sed replacements with '|' as the delimiter.
ENTRYPOINT = (
    'sed -e "s|' + c.ROUTE_PASSWORD_TOKEN + '|${NATS_ROUTE_PASSWORD}|g"'
    ' -e "s|' + c.HASH_TOKENS["gateway"] + '|${NATS_GATEWAY_BCRYPT}|g"'
    ' -e "s|' + c.HASH_TOKENS["ops"] + '|${NATS_OPS_BCRYPT}|g"'
    " /etc/nats-template/nats.conf > /etc/nats/nats.conf"
    " && exec nats-server --config /etc/nats/nats.conf"
)


@dataclass(frozen=True)
class NatsZoneArgs:
    topo: Topology
    site: Site
    zone: str
    namespace: str
    provider: k8s.Provider
    after: tuple = ()  # create these first (the namespace)


class NatsZone(pulumi.ComponentResource):
    """One zone's NATS server: ConfigMap, headless Service, StatefulSet (+ route LoadBalancer)."""

    def __init__(self, name: str, args: NatsZoneArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:messaging:NatsZone", name, None, opts)
        topo, site, zone, ns, prov = args.topo, args.site, args.zone, args.namespace, args.provider
        kc = topo.kubernetes
        n = stateful_name(zone)
        lab = c.labels("nats", n, "messaging", site.name, site.role, c.image_version(kc.nats_image),
                       **{c.ZONE_LABEL: zone})
        sel = c.selector(lab)
        conf = zone_config(topo, zone)
        meta = lambda name_: {"name": name_, "namespace": ns, "labels": lab}  # noqa: E731
        k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta(f"{n}-config"),
                              data={"nats.conf": conf}, opts=c.child(self, prov, depends_on=list(args.after)))
        # no monitor port: the probes dial the pod, Prometheus discovers pods (NetworkPolicy)
        ports = [{"name": "client", "port": c.CLIENT_PORT, "target_port": "client"},
                 {"name": "cluster", "port": c.ROUTE_PORT, "target_port": "cluster"}]
        k8s.core.v1.Service(f"{name}-headless", metadata=meta(n), spec={
            "cluster_ip": "None", "selector": sel, "ports": ports,
            # Routes must resolve before the pod is ready, or the cluster can never form.
            "publish_not_ready_addresses": True,
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        if topo.zone(zone).route_address:
            # What other sites dial: point the declared routeAddress at this LoadBalancer.
            k8s.core.v1.Service(f"{name}-routes", metadata=meta(f"{n}-routes"), spec={
                "type": "LoadBalancer", "selector": sel,
                "ports": [{"name": "cluster", "port": c.ROUTE_PORT, "target_port": "cluster"}],
            }, opts=c.child(self, prov, depends_on=list(args.after)))
        secret_env = lambda var, key: {"name": var, "value_from": {  # noqa: E731
            "secret_key_ref": {"name": c.CREDENTIALS_SECRET, "key": key}}}
        volume_claim = {
            "metadata": {"name": "data", "labels": lab},
            "spec": {"access_modes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": kc.storage_size}}},
        }
        if kc.storage_class:
            volume_claim["spec"]["storage_class_name"] = kc.storage_class
        health = lambda q: {"http_get": {"path": "/healthz" + q, "port": "monitor"}}  # noqa: E731
        self.statefulset = k8s.apps.v1.StatefulSet(f"{name}-statefulset", metadata=meta(n), spec={
            "service_name": n,
            "replicas": 1,  # one voting server per zone; the zone is the failure domain
            "pod_management_policy": "Parallel",
            "selector": {"match_labels": sel},
            "template": {
                "metadata": {"labels": lab, "annotations": {
                    # Roll the pod when its config changes.
                    "twinsite.io/config-sha256": hashlib.sha256(conf.encode()).hexdigest()}},
                "spec": {
                    "node_selector": {c.ZONE_KEY: zone},
                    "security_context": c.restricted_pod_security(NATS_UID),
                    # lame_duck_duration (30s) + grace + flush
                    "termination_grace_period_seconds": 60,
                    "containers": [{
                        "name": "nats",
                        "image": kc.nats_image,
                        "command": ["/bin/sh", "-ec", ENTRYPOINT],
                        "ports": [{"name": "client", "container_port": c.CLIENT_PORT},
                                  {"name": "cluster", "container_port": c.ROUTE_PORT},
                                  {"name": "monitor", "container_port": c.MONITOR_PORT}],
                        "env": [secret_env("NATS_GATEWAY_BCRYPT", "gateway-password-bcrypt"),
                                secret_env("NATS_OPS_BCRYPT", "ops-password-bcrypt"),
                                secret_env("NATS_ROUTE_PASSWORD", "route-password")],
                        "resources": {"requests": {"cpu": kc.nats_cpu, "memory": kc.nats_memory},
                                      "limits": {"memory": kc.nats_memory}},
                        "security_context": c.restricted_container_security(),
                        "startup_probe": {**health("?js-enabled-only=true"), "period_seconds": 2,
                                          "failure_threshold": 90},
                        "liveness_probe": {**health("?js-enabled-only=true"), "period_seconds": 10,
                                           "failure_threshold": 3},
                        "readiness_probe": {**health(""), "period_seconds": 5},
                        "lifecycle": {"pre_stop": {"exec": {
                            # Lame duck: stop accepting clients, hand off leaders, then exit.
                            "command": ["nats-server", "--signal", f"ldm={PID_FILE}"]}}},
                        "volume_mounts": [
                            {"name": "config-template", "mount_path": "/etc/nats-template"},
                            {"name": "config", "mount_path": "/etc/nats"},
                            {"name": "run", "mount_path": "/var/run/nats"},
                            {"name": "data", "mount_path": "/data"},
                            {"name": "tls", "mount_path": c.NATS_TLS_DIR, "read_only": True},
                        ],
                    }],
                    "volumes": [
                        {"name": "config-template", "config_map": {"name": f"{n}-config"}},
                        {"name": "config", "empty_dir": {}},
                        {"name": "run", "empty_dir": {}},
                        {"name": "tls", "secret": {"secret_name": kc.nats_tls_secret,
                                                   "default_mode": 0o440}},  # group: fs_group
                    ],
                },
            },
            "volume_claim_templates": [volume_claim],
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        self.register_outputs({})


@dataclass(frozen=True)
class NatsSiteArgs:
    topo: Topology
    site: Site
    namespace: str
    provider: k8s.Provider
    after: tuple = ()  # create these first (the namespace)


class NatsSite(pulumi.ComponentResource):
    """Every zone's server of one site, and one PodDisruptionBudget over them: a drain or an
    upgrade takes at most one of the site's voting servers at a time."""

    def __init__(self, name: str, args: NatsSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:messaging:NatsSite", name, None, opts)
        topo, site = args.topo, args.site
        self.zones = [NatsZone(z, NatsZoneArgs(topo, site, z, args.namespace,
                                                                args.provider, args.after),
                               pulumi.ResourceOptions(parent=self))
                      for z in site.zone_names]
        lab = c.labels("nats", f"nats-{site.name}", "messaging", site.name, site.role)
        k8s.policy.v1.PodDisruptionBudget(f"{site.name}-nats-pdb", metadata={
            "name": "nats", "namespace": args.namespace, "labels": lab,
        }, spec={
            "max_unavailable": 1,
            "selector": {"match_labels": c.selector(lab, "app.kubernetes.io/name",
                                                    c.SITE_LABEL)},
        }, opts=c.child(self, args.provider, depends_on=list(args.after)))
        self.register_outputs({})
