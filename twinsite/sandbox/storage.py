"""Storage for the sandbox's clusters: a default StorageClass with statically provisioned local
volumes on every node, as a bare-metal cluster with the local static provisioner has.

kwok nodes run no containers, so no CSI driver can run there; but the PersistentVolume controller
and the scheduler's volume binding are real, and they are what decides where a StatefulSet's pod
may go (a NATS pod follows its volume to its zone, and waits when that zone is cordoned).
"""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.rest import ApiException

STORAGE_CLASS = "sandbox-local"
VOLUMES_PER_NODE = 2
SIZE = "100Gi"


def storage_class() -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Retain"}


def volume(node: str, i: int) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"local-{node}-{i}", "labels": {"twinsite.io/sandbox": "true"}},
            "spec": {"capacity": {"storage": SIZE}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
                     "local": {"path": f"/mnt/sandbox/vol{i}"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In",
                          "values": [node]}]}]}}}}


def provision(api: client.ApiClient) -> int:
    """The StorageClass and the volumes of every node (idempotent); returns volumes created."""
    storage, core = client.StorageV1Api(api), client.CoreV1Api(api)
    _create(storage.create_storage_class, storage_class())
    created = 0
    for n in core.list_node().items:
        for i in range(VOLUMES_PER_NODE):
            created += _create(core.create_persistent_volume, volume(n.metadata.name, i))
    return created


def _create(fn, body: dict) -> int:
    try:
        fn(body)
        return 1
    except ApiException as e:
        if e.status == 409:  # already there
            return 0
        raise
