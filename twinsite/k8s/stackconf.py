"""The topology back as a stack file, for the gateway pods.

`twinsite talk serve --stack S` reads `Pulumi.S.yaml` from its working directory; in a cluster
that file comes from a ConfigMap written here. Inverse of `topology.from_config` (a test checks the
round trip), so the pods see exactly the model the program deployed.
"""

from __future__ import annotations

import dataclasses

import yaml

from ..topology import NAMESPACE, Topology

PROJECT_FILE = "name: twinsite\nruntime: python\n"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _plain(obj) -> dict:
    return {_camel(f.name): getattr(obj, f.name) for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None}


def to_config(topo: Topology) -> dict:
    sites = []
    for s in topo.sites:
        item = {"name": s.name, "role": s.role, "zones": list(s.zone_names)}
        if s.is_primary:
            item["gatewayZones"] = list(s.gateway_zones)
        if s.kube_context:
            item["kubeContext"] = s.kube_context
        routes = {z.name: z.route_address for z in s.zones if z.route_address}
        if routes:
            item["routeAddresses"] = routes
        if s.max_gateway_replicas is not None:
            item["maxGatewayReplicas"] = s.max_gateway_replicas
        for key, value in (("gatewayUrl", s.gateway_url), ("natsUrl", s.nats_url)):
            if value:
                item[key] = value
        if s.external_cidrs:
            item["externalCidrs"] = list(s.external_cidrs)
        sites.append(item)
    messaging = _plain(topo.messaging)
    messaging["uniquePlacement"] = topo.messaging.unique_placement or "none"
    ops = [dict(_plain(t), sites=list(t.sites)) for t in topo.operations]
    return {
        "sites": sites,
        "links": {"intraSite": _plain(topo.intra_site),
                  "interSite": [{"sites": [link.a, link.b], **_plain(link.spec)}
                                for link in topo.inter_site]},
        "messaging": messaging,
        "traffic": _plain(topo.traffic),
        "gateway": _plain(topo.gateway),
        "kubernetes": _plain(topo.kubernetes),
        "operations": ops,
    }


def stack_file(topo: Topology) -> str:
    doc = {"config": {f"{NAMESPACE}:{k}": v for k, v in to_config(topo).items()}}
    return yaml.safe_dump(doc, sort_keys=False)
