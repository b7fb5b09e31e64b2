"""The sandbox: one real Kubernetes control plane per site of a stack, on this machine.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries, built from
their Go modules (tools/kube, `make sandbox-tools`); nodes are kwok's simulated nodes, one group
per zone. No container runs: pods are scheduled and marked Running by kwok, so the API's behaviour
(admission, scheduling, PDBs, taints) is real while the messaging data plane stays in the lab.
"""


class SandboxError(RuntimeError):
    """A one-line, user-facing failure of the sandbox."""
