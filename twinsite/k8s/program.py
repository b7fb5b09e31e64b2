"""The Pulumi program: topology in, one cluster's worth of resources per site out."""

from __future__ import annotations

import pulumi

from .. import capacity, topology
from ..topology import Topology
from .gateway import Gateway, GatewayArgs, OperationsTool, OpsToolArgs, TalkToken
from .nats import NatsSite, NatsSiteArgs
from .network import SitePolicies, SitePoliciesArgs
from .site import NatsCredentials, SiteArgs, SiteCluster

CONFIG_KEYS = ("sites", "links", "messaging", "traffic", "gateway", "kubernetes", "operations")


def topology_from_pulumi_config() -> Topology:
    """The stack's `twinsite:` config, read through Pulumi (under `pulumi up/preview`)."""
    config = pulumi.Config(topology.NAMESPACE)
    values = {k: v for k in CONFIG_KEYS if (v := config.get_object(k)) is not None}
    return topology.from_config(values, stack=pulumi.get_stack())


def deploy(topo: Topology) -> dict[str, SiteCluster]:
    plan = capacity.plan(topo)
    creds = NatsCredentials("nats-credentials")
    token = TalkToken("talk-token")  # one per stack: clients use either site with it
    sites: dict[str, SiteCluster] = {}
    for site in topo.sites:
        sc = SiteCluster(site.name, SiteArgs(topo, site, creds))
        sites[site.name] = sc
        ns, prov, after = sc.namespace, sc.provider, (sc.namespace_resource,)
        SitePolicies(f"{site.name}-network", SitePoliciesArgs(topo, site, ns, prov, after))
        NatsSite(f"{site.name}-nats", NatsSiteArgs(topo, site, ns, prov, after))
        if site.is_primary:
            Gateway(f"{site.name}-gateway",
                    GatewayArgs(topo, site, plan, ns, prov, token.value, after))
            for tool in topo.operations:
                if site.name in tool.sites:
                    OperationsTool(f"{site.name}-{tool.name}",
                                   OpsToolArgs(topo, site, tool, ns, prov, after))
    pulumi.export("talkToken", token.value)  # secret: `pulumi stack output talkToken --show-secrets`
    pulumi.export("capacity", {s.site: {"min": s.min_replicas, "max": s.max_replicas}
                               for s in plan.sites})
    return sites
