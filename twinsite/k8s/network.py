"""NetworkPolicies of one site: deny everything, then allow exactly the flows the design needs."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from ..topology import Site, Topology
from . import common as c

NATS = {"app.kubernetes.io/name": "nats"}
NATS_CLIENTS = {c.NATS_CLIENT_LABEL: "true"}
GATEWAY = {"app.kubernetes.io/name": "talk-gateway"}
OPERATIONS = {"app.kubernetes.io/component": "operations"}
ANYWHERE = [{"ip_block": {"cidr": "0.0.0.0/0"}}]


def tcp(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def rules(topo: Topology, site: Site) -> dict[str, dict]:
    """name -> NetworkPolicy spec. Pure, so tests can read the intended flows directly."""
    out: dict[str, dict] = {
        "default-deny": {"pod_selector": {}, "policy_types": ["Ingress", "Egress"]},
        "allow-dns": {"pod_selector": {}, "policy_types": ["Egress"], "egress": [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]},
        # NATS <-> NATS routes, in this cluster and across sites (peers come through the other
        # sites' route load balancers with addresses we do not know; route auth guards the port).
        "allow-nats-routes": {
            "pod_selector": {"match_labels": NATS}, "policy_types": ["Ingress", "Egress"],
            "ingress": [{"from": ANYWHERE, "ports": tcp(c.ROUTE_PORT)}],
            "egress": [{"to": ANYWHERE, "ports": tcp(c.ROUTE_PORT)}]},
        # gateway (and other labelled clients) -> NATS
        "allow-nats-clients": {
            "pod_selector": {"match_labels": NATS}, "policy_types": ["Ingress"],
            "ingress": [{"from": [{"pod_selector": {"match_labels": NATS_CLIENTS}}],
                         "ports": tcp(c.CLIENT_PORT)}]},
        "allow-nats-client-egress": {
            "pod_selector": {"match_labels": NATS_CLIENTS}, "policy_types": ["Egress"],
            "egress": [{"to": [{"pod_selector": {"match_labels": NATS}}],
                        "ports": tcp(c.CLIENT_PORT)}]},
        # monitoring scrapes /varz, /jsz from a Prometheus in any namespace
        "allow-nats-monitoring": {
            "pod_selector": {"match_labels": NATS}, "policy_types": ["Ingress"],
            "ingress": [{"from": [{"namespace_selector": {}, "pod_selector": {
                "match_labels": {"app.kubernetes.io/name": "prometheus"}}}],
                "ports": tcp(c.MONITOR_PORT)}]},
    }
    if site.is_primary:
        out["allow-clients-to-gateway"] = {
            "pod_selector": {"match_labels": GATEWAY}, "policy_types": ["Ingress"],
            "ingress": [{"from": ANYWHERE, "ports": tcp(topo.kubernetes.gateway_port)}]}
        ports = sorted({t.port for t in topo.operations if site.name in t.sites})
        if ports:
            out["allow-operations-in-cluster"] = {
                "pod_selector": {"match_labels": OPERATIONS}, "policy_types": ["Ingress"],
                "ingress": [{"from": [{"namespace_selector": {}}], "ports": tcp(*ports)}]}
    return out


@dataclass(frozen=True)
class SitePoliciesArgs:
    topo: Topology
    site: Site
    namespace: str
    provider: k8s.Provider
    after: tuple = ()  # create these first (the namespace)


class SitePolicies(pulumi.ComponentResource):
    def __init__(self, name: str, args: SitePoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:network:SitePolicies", name, None, opts)
        site = args.site
        lab = c.labels("twinsite", f"twinsite-{site.name}", "network", site.name, site.role)
        for pname, spec in rules(args.topo, site).items():
            k8s.networking.v1.NetworkPolicy(
                f"{site.name}-{pname}",
                metadata={"name": pname, "namespace": args.namespace, "labels": lab},
                spec=spec, opts=c.child(self, args.provider, depends_on=list(args.after)))
        self.register_outputs({})
