"""Shared vocabulary of the components: labels, ports, names, resource options."""

from __future__ import annotations

import pulumi

PART_OF = "twinsite"
SITE_LABEL = "twinsite.io/site"
ROLE_LABEL = "twinsite.io/site-role"
ZONE_LABEL = "twinsite.io/zone"
NATS_CLIENT_LABEL = "twinsite.io/nats-client"  # pods allowed to reach NATS 4222
ZONE_KEY = "topology.kubernetes.io/zone"
HOST_KEY = "kubernetes.io/hostname"
# Annotations that carry the capacity model into the manifests (policies read them).
CAPACITY_ANN = "twinsite.io/capacity-msgs-per-s"
SURGE_ANN = "twinsite.io/surge-peak-msgs-per-s"

CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222
CREDENTIALS_SECRET = "nats-credentials"  # per role: <role>-user, <role>-password (+ -bcrypt)
NATS_TLS_DIR = "/etc/nats-tls"  # the servers' mount of topology.kubernetes.nats_tls_secret
NATS_CA_DIR = "/etc/nats-ca"  # the clients' mount of its ca.crt alone (never the server key)
MESSAGING_CONFIGMAP = "twinsite-messaging"
STACK_CONFIGMAP = "twinsite-stack"
STACK_DIR = "/etc/twinsite"  # the gateway's working directory: Pulumi.yaml + Pulumi.<stack>.yaml
# Route URLs carry the route password; nats.conf cannot expand a variable inside a string, so the
# container's entrypoint substitutes this token from the Secret-backed env var at start. The users'
# bcrypt hashes are substituted the same way: nats.conf would re-parse a `$VAR` whose value is
# "$2b$..." as another variable reference.
ROUTE_PASSWORD_TOKEN = "__NATS_ROUTE_PASSWORD__"
HASH_TOKENS = {"gateway": "__NATS_GATEWAY_BCRYPT__", "ops": "__NATS_OPS_BCRYPT__"}


def labels(name: str, instance: str, component: str, site: str, role: str,
           version: str | None = None, **extra: str) -> dict[str, str]:
    """Recommended app.kubernetes.io/* labels plus twinsite's own placement labels."""
    out = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
        SITE_LABEL: site,
        ROLE_LABEL: role,
    }
    if version:
        out["app.kubernetes.io/version"] = version
    out.update(extra)
    return out


def selector(all_labels: dict[str, str], *keys: str) -> dict[str, str]:
    keys = keys or ("app.kubernetes.io/name", "app.kubernetes.io/instance")
    return {k: all_labels[k] for k in keys}


def image_version(image: str) -> str | None:
    """The tag of an image reference (for app.kubernetes.io/version), if it has one."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def child(parent: pulumi.Resource, provider: pulumi.ProviderResource,
          **kw) -> pulumi.ResourceOptions:
    """Options for a Kubernetes resource: always the explicit provider of its own site."""
    return pulumi.ResourceOptions(parent=parent, provider=provider, **kw)


def restricted_container_security() -> dict:
    return {
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "run_as_non_root": True,
        "capabilities": {"drop": ["ALL"]},
    }


def restricted_pod_security(uid: int) -> dict:
    return {
        "run_as_non_root": True,
        "run_as_user": uid,
        "run_as_group": uid,
        "fs_group": uid,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }
