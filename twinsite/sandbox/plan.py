"""What a sandbox is, as data: one control plane per site, kwok nodes per zone (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from ..topology import Topology

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NODE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"}
NODES_PER_ZONE = 3


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    COUNT = 6


@dataclass(frozen=True)
class SitePlan:
    site: str
    context: str  # the stack's kubeContext (the site's name when the stack sets none)
    zones: tuple[str, ...]
    nodes: tuple[str, ...]
    ports: Ports

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"


def node_names(zone: str, per_zone: int) -> tuple[str, ...]:
    return tuple(f"{zone}-node-{i}" for i in range(1, per_zone + 1))


def plan(topo: Topology, ports: list[int], per_zone: int = NODES_PER_ZONE) -> tuple[SitePlan, ...]:
    """`ports`: Ports.COUNT free ports per site, in site order."""
    if len(ports) < Ports.COUNT * len(topo.sites):
        raise ValueError("not enough ports for the sandbox")
    out = []
    for i, s in enumerate(topo.sites):
        p = Ports(*ports[Ports.COUNT * i: Ports.COUNT * (i + 1)])
        nodes = tuple(n for z in s.zone_names for n in node_names(z, per_zone))
        out.append(SitePlan(s.name, s.kube_context or s.name, s.zone_names, nodes, p))
    return tuple(out)


def node_body(name: str, zone: str, site: str) -> dict:
    """A kwok-managed Node: kwok marks it Ready and keeps its heartbeat."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {ZONE_LABEL: zone, REGION_LABEL: site, "kubernetes.io/hostname": name,
                       "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       "type": "kwok", "twinsite.io/sandbox": "true"},
        },
        "status": {"allocatable": dict(NODE_CAPACITY), "capacity": dict(NODE_CAPACITY)},
    }


def zone_of_node(sp: SitePlan, node: str) -> str:
    return next(z for z in sp.zones if node.startswith(z + "-node-"))


# Storage: no provisioner runs, so each node brings pre-made local PersistentVolumes and the
# default StorageClass binds a claim when its pod is scheduled (as local-volume clusters do):
# StatefulSet volumes land on their pod's node, hence in its zone.
STORAGE_CLASS = "sandbox-local"
VOLUMES_PER_NODE = 4  # Retain: a released volume is not reused, so keep a few spare
VOLUME_SIZE = "50Gi"


def storage_class_body() -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}


def volume_bodies(sp: SitePlan, per_node: int = VOLUMES_PER_NODE) -> list[dict]:
    out = []
    for node in sp.nodes:
        for i in range(1, per_node + 1):
            out.append({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"{node}-vol-{i}", "labels": {
                    ZONE_LABEL: zone_of_node(sp, node), REGION_LABEL: sp.site}},
                "spec": {"capacity": {"storage": VOLUME_SIZE}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain",
                         "storageClassName": STORAGE_CLASS,
                         "local": {"path": f"/var/lib/sandbox/volumes/vol-{i}"},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{
                             "matchExpressions": [{"key": "kubernetes.io/hostname",
                                                   "operator": "In", "values": [node]}]}]}}},
            })
    return out
