"""Stateless workloads of a primary site: the `talk` gateway (capacity-planned, autoscaled) and
operations tooling. Both spread over zones and hosts and keep a PodDisruptionBudget.

The gateway's API bearer token (`TalkToken`, one per stack: a client talks to either site with
it) reaches the pods as a file of a Secret volume (`talk serve --token-file`), never as an
argument or a ConfigMap value."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from .. import natsconf
from ..capacity import CapacityPlan
from ..topology import OpsTool, Site, Topology
from . import common as c
from .nats import client_address
from .password import GeneratedPassword

APP_UID = 10001  # the Dockerfile's user
TOKENS_SECRET = "talk-api-tokens"
TOKENS_KEY = "tokens"  # one token per line (talk.auth): a second line rotates without downtime
TOKENS_DIR = "/etc/twinsite-talk"
TOKEN_LENGTH = 43  # as many characters as the lab's 256-bit tokens


class TalkToken(pulumi.ComponentResource):
    """The gateways' API token: the secret config key `twinsite:talkToken` when set, generated
    once per stack otherwise; a Pulumi secret end to end (exported as the secret `talkToken`)."""

    value: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:talk:Token", name, None, opts)
        given = pulumi.Config("twinsite").get_secret("talkToken")
        if given is not None:
            self.value = pulumi.Output.secret(given)
        else:
            pw = GeneratedPassword(f"{name}-value", length=TOKEN_LENGTH,
                                   opts=pulumi.ResourceOptions(parent=self))
            self.value = pulumi.Output.secret(pw.result)
        self.register_outputs({})


def spread(sel: dict, zones: tuple[str, ...] | None) -> dict:
    """Pod spec fragment: only the given zones, even over them, and over hosts where possible."""
    out: dict = {"topology_spread_constraints": [
        {"max_skew": 1, "topology_key": c.ZONE_KEY, "when_unsatisfiable": "DoNotSchedule",
         "label_selector": {"match_labels": sel}},
        {"max_skew": 1, "topology_key": c.HOST_KEY, "when_unsatisfiable": "ScheduleAnyway",
         "label_selector": {"match_labels": sel}},
    ]}
    if zones:
        out["affinity"] = {"node_affinity": {"required_during_scheduling_ignored_during_execution": {
            "node_selector_terms": [{"match_expressions": [
                {"key": c.ZONE_KEY, "operator": "In", "values": list(zones)}]}]}}}
    return out


def nats_urls(topo: Topology, site: Site) -> str:
    """The topology's preference (`Topology.gateway_nats_zones`), as the lab uses it. No
    credentials in URLs (argv is visible to `ps`): the password comes from the environment."""
    ns = topo.kubernetes.namespace
    return ",".join(f"nats://{client_address(z, ns)}" for z in topo.gateway_nats_zones(site.name))


def nats_client_env(role: str) -> list[dict]:
    """A NATS client's user and password (`talk serve` reads TWINSITE_NATS_*) from the Secret."""
    return [{"name": "TWINSITE_NATS_USER", "value": role},
            {"name": "TWINSITE_NATS_PASSWORD", "value_from": {"secret_key_ref": {
                "name": c.CREDENTIALS_SECRET, "key": f"{role}-password"}}},
            {"name": "TWINSITE_NATS_CA", "value": f"{c.NATS_CA_DIR}/ca.crt"}]


def ca_volume(topo: Topology) -> dict:
    """Only the CA certificate of the TLS Secret: a client never sees the servers' key."""
    return {"name": "nats-ca", "secret": {"secret_name": topo.kubernetes.nats_tls_secret,
                                          "items": [{"key": "ca.crt", "path": "ca.crt"}]}}


def _container(name: str, image: str, port: int, cpu: str, memory: str, **extra) -> dict:
    return {
        "name": name,
        "image": image,
        "ports": [{"name": "http", "container_port": port}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        "security_context": c.restricted_container_security(),
        "liveness_probe": {"http_get": {"path": "/healthz", "port": "http"}, "period_seconds": 10,
                           "failure_threshold": 3},
        "readiness_probe": {"http_get": {"path": extra.pop("ready_path", "/healthz"),
                                         "port": "http"},
                            "period_seconds": 2, "failure_threshold": 2},
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
        **extra,
    }


@dataclass(frozen=True)
class GatewayArgs:
    topo: Topology
    site: Site
    capacity: CapacityPlan
    namespace: str
    provider: k8s.Provider
    token: pulumi.Output[str]  # TalkToken.value: no gateway without one
    after: tuple = ()  # create these first (the namespace)


class Gateway(pulumi.ComponentResource):
    """The `talk` gateway of one primary site: Deployment, Service, PDB, HPA."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:talk:Gateway", name, None, opts)
        topo, site, ns, prov = args.topo, args.site, args.namespace, args.provider
        kc, gw = topo.kubernetes, topo.gateway
        sp = args.capacity.site(site.name)
        lab = c.labels("talk-gateway", f"talk-gateway-{site.name}", "gateway", site.name, site.role,
                       c.image_version(gw.image), **{c.NATS_CLIENT_LABEL: "true"})
        sel = c.selector(lab)
        ann = {c.CAPACITY_ANN: f"{args.capacity.per_replica_msgs_per_s:g}",
               c.SURGE_ANN: f"{args.capacity.surge_peak_msgs_per_s:g}"}
        meta = {"name": "talk-gateway", "namespace": ns, "labels": lab, "annotations": ann}
        container = _container(
            "talk", gw.image, kc.gateway_port, kc.gateway_cpu, kc.gateway_memory,
            ready_path="/readyz",  # ready only while a JetStream write would succeed
            args=["talk", "serve", "--site", site.name, "--stack", topo.stack,
                  "--nats", nats_urls(topo, site), "--listen", f"0.0.0.0:{kc.gateway_port}",
                  "--token-file", f"{TOKENS_DIR}/{TOKENS_KEY}"],
            working_dir=c.STACK_DIR,
            env=nats_client_env(natsconf.GATEWAY_USER),
            env_from=[{"config_map_ref": {"name": c.MESSAGING_CONFIGMAP}}],
        )
        container["volume_mounts"] += [
            {"name": "stack", "mount_path": c.STACK_DIR, "read_only": True},
            {"name": "nats-ca", "mount_path": c.NATS_CA_DIR, "read_only": True},
            {"name": "api-tokens", "mount_path": TOKENS_DIR, "read_only": True}]
        tokens = k8s.core.v1.Secret(f"{name}-api-tokens", metadata={
            "name": TOKENS_SECRET, "namespace": ns,
            "labels": c.labels("talk-gateway", f"talk-gateway-{site.name}", "credentials",
                               site.name, site.role)},
            type="Opaque", string_data={TOKENS_KEY: args.token},
            opts=c.child(self, prov, depends_on=list(args.after)))
        self.deployment = k8s.apps.v1.Deployment(f"{name}-deployment", metadata=meta, spec={
            "replicas": sp.min_replicas,
            "selector": {"match_labels": sel},
            "strategy": {"type": "RollingUpdate",
                         "rolling_update": {"max_surge": "25%", "max_unavailable": 0}},
            "template": {"metadata": {"labels": lab}, "spec": {
                "security_context": c.restricted_pod_security(APP_UID),
                "termination_grace_period_seconds": 30,  # the gateway drains on SIGTERM
                "containers": [container],
                "volumes": [{"name": "tmp", "empty_dir": {}},
                            {"name": "stack", "config_map": {"name": c.STACK_CONFIGMAP}},
                            ca_volume(topo),
                            # owner root, group fs_group (the app's): readable by it alone
                            {"name": "api-tokens", "secret": {
                                "secret_name": TOKENS_SECRET, "default_mode": 0o440,
                                "items": [{"key": TOKENS_KEY, "path": TOKENS_KEY}]}}],
                **spread(sel, site.gateway_zones),
            }},
        }, opts=c.child(self, prov, depends_on=[*args.after, tokens],
                        # the HPA owns replicas after creation
                        ignore_changes=["spec.replicas"]))
        k8s.core.v1.Service(f"{name}-service", metadata=meta, spec={
            "type": "LoadBalancer", "selector": sel,
            "ports": [{"name": "http", "port": 80, "target_port": "http"}],
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=meta, spec={
            "max_unavailable": "10%", "selector": {"match_labels": sel},
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        self.hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(f"{name}-hpa", metadata=meta, spec={
            "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment",
                                 "name": "talk-gateway"},
            "min_replicas": sp.min_replicas,
            "max_replicas": sp.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "average_utilization": 70}}}],
            # Scale up fast (a surge starts in seconds), down slowly.
            "behavior": {
                "scale_up": {"stabilization_window_seconds": 0, "policies": [
                    {"type": "Percent", "value": 100, "period_seconds": 15}]},
                "scale_down": {"stabilization_window_seconds": 300},
            },
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        self.register_outputs({})


@dataclass(frozen=True)
class OpsToolArgs:
    topo: Topology
    site: Site
    tool: OpsTool
    namespace: str
    provider: k8s.Provider
    after: tuple = ()  # create these first (the namespace)


class OperationsTool(pulumi.ComponentResource):
    """Operations tooling (fail-over console...) in one site: Deployment, Service, PDB."""

    def __init__(self, name: str, args: OpsToolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:operations:Tool", name, None, opts)
        site, tool, ns, prov = args.site, args.tool, args.namespace, args.provider
        lab = c.labels(tool.name, f"{tool.name}-{site.name}", "operations", site.name, site.role,
                       c.image_version(tool.image), **{c.NATS_CLIENT_LABEL: "true"})
        sel = c.selector(lab)
        meta = {"name": tool.name, "namespace": ns, "labels": lab}
        container = _container(tool.name, tool.image, tool.port, "100m", "128Mi",
                               env=nats_client_env(natsconf.OPS_USER))  # leader moves, health
        container["volume_mounts"].append({"name": "nats-ca", "mount_path": c.NATS_CA_DIR,
                                           "read_only": True})
        k8s.apps.v1.Deployment(f"{name}-deployment", metadata=meta, spec={
            "replicas": tool.replicas,
            "selector": {"match_labels": sel},
            "template": {"metadata": {"labels": lab}, "spec": {
                "security_context": c.restricted_pod_security(APP_UID),
                "containers": [container],
                "volumes": [{"name": "tmp", "empty_dir": {}}, ca_volume(args.topo)],
                **spread(sel, None),
            }},
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        k8s.core.v1.Service(f"{name}-service", metadata=meta, spec={
            "selector": sel, "ports": [{"name": "http", "port": 80, "target_port": "http"}],
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=meta, spec={
            "max_unavailable": 1, "selector": {"match_labels": sel},
        }, opts=c.child(self, prov, depends_on=list(args.after)))
        self.register_outputs({})
