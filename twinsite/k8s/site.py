"""Per site: its own Kubernetes provider (kube context), namespace, NATS credentials Secret and the
messaging settings every NATS client of the site reads."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from .. import capacity
from ..topology import Site, Topology
from . import common as c
from .password import GeneratedPassword, stable_bcrypt
from .stackconf import PROJECT_FILE, stack_file


class NatsCredentials(pulumi.ComponentResource):
    """One password per NATS role (`twinsite.natsconf`: gateway, ops, route), shared by every
    site (it is one NATS cluster).

    Taken from the secret config keys `twinsite:natsPassword` (the gateways'),
    `twinsite:natsOpsPassword` and `twinsite:natsRoutePassword` when set, generated once per stack
    otherwise; all stay Pulumi secrets end to end. The servers get only bcrypt hashes of the
    client passwords. TLS: when the secret config keys `twinsite:natsTlsCert`, `natsTlsKey` and
    `natsTlsCa` (PEM) are all set, the program writes them into the stack's `natsTlsSecret` (the
    sandbox does this); otherwise that Secret must exist already (e.g. cert-manager's).
    """

    gateway_password: pulumi.Output[str]
    ops_password: pulumi.Output[str]
    route_password: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:messaging:NatsCredentials", name, None, opts)
        config = pulumi.Config("twinsite")

        def password(key: str, logical: str) -> pulumi.Output[str]:
            given = config.get_secret(key)
            if given is not None:
                return pulumi.Output.secret(given)
            # Alphanumeric only: it is spliced into nats:// URLs.
            pw = GeneratedPassword(logical, length=32, opts=pulumi.ResourceOptions(parent=self))
            return pulumi.Output.secret(pw.result)

        self.gateway_password = password("natsPassword", f"{name}-client")
        self.ops_password = password("natsOpsPassword", f"{name}-ops")
        self.route_password = password("natsRoutePassword", f"{name}-route")
        pem = {k: config.get_secret(key) for k, key in (
            ("tls.crt", "natsTlsCert"), ("tls.key", "natsTlsKey"), ("ca.crt", "natsTlsCa"))}
        self.tls_material = pem if all(v is not None for v in pem.values()) else None
        # once, not per site: 11 bcrypt rounds cost ~0.15 s each
        self.hashes = {role: pw.apply(lambda p, r=role: stable_bcrypt(p, r)) for role, pw in
                       (("gateway", self.gateway_password), ("ops", self.ops_password))}
        self.register_outputs({})

    def string_data(self) -> dict:
        """The `nats-credentials` Secret: per role its user and password, for the servers the
        bcrypt hashes of the client passwords."""
        out: dict = {}
        for role, pw in (("gateway", self.gateway_password), ("ops", self.ops_password),
                         ("route", self.route_password)):
            out[f"{role}-user"] = role
            out[f"{role}-password"] = pw
            if role in self.hashes:
                out[f"{role}-password-bcrypt"] = self.hashes[role]
        return out


@dataclass(frozen=True)
class SiteArgs:
    topo: Topology
    site: Site
    credentials: NatsCredentials


class SiteCluster(pulumi.ComponentResource):
    """The site's cluster: provider + namespace + credentials + messaging settings."""

    provider: k8s.Provider
    namespace: str

    def __init__(self, name: str, args: SiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("twinsite:k8s:SiteCluster", name, None, opts)
        topo, site = args.topo, args.site
        self.namespace = topo.kubernetes.namespace
        # Never the ambient default cluster: each site names its kube context.
        self.provider = k8s.Provider(f"k8s-{site.name}", context=site.kube_context,
                                     opts=pulumi.ResourceOptions(parent=self))
        base = c.labels("twinsite", f"twinsite-{site.name}", "site", site.name, site.role)
        ns = k8s.core.v1.Namespace(
            f"{site.name}-namespace",
            metadata={"name": self.namespace, "labels": {
                **base,
                # Pod Security Admission: every workload here runs restricted.
                "pod-security.kubernetes.io/enforce": "restricted"}},
            opts=c.child(self, self.provider))
        self.namespace_resource = ns
        meta = lambda n, comp: {"name": n, "namespace": self.namespace,  # noqa: E731
                                "labels": c.labels("twinsite", f"twinsite-{site.name}", comp,
                                                   site.name, site.role)}
        cred = args.credentials
        k8s.core.v1.Secret(
            f"{site.name}-nats-credentials",
            metadata=meta(c.CREDENTIALS_SECRET, "credentials"),
            type="Opaque",
            string_data=cred.string_data(),
            opts=c.child(self, self.provider, depends_on=[ns]))
        if cred.tls_material is not None:
            k8s.core.v1.Secret(
                f"{site.name}-nats-tls",
                metadata=meta(topo.kubernetes.nats_tls_secret, "tls"),
                type="kubernetes.io/tls", string_data=cred.tls_material,
                opts=c.child(self, self.provider, depends_on=[ns]))
        m = topo.messaging
        k8s.core.v1.ConfigMap(
            f"{site.name}-messaging",
            metadata=meta(c.MESSAGING_CONFIGMAP, "messaging-settings"),
            data={
                "TWINSITE_SITE": site.name,
                "TWINSITE_CLUSTER": m.cluster_name,
                "TWINSITE_STREAM_REPLICAS": str(m.stream_replicas),
                "TWINSITE_UNIQUE_PLACEMENT": m.unique_placement or "none",
                "TWINSITE_FSYNC": m.fsync,
                "TWINSITE_PING_INTERVAL_S": f"{m.ping_interval_s:g}",
                "TWINSITE_PING_MAX": str(m.ping_max),
                "TWINSITE_DUPLICATE_WINDOW_S": f"{m.duplicate_window_s:g}",
                "TWINSITE_MAX_BODY_BYTES": str(m.max_body_bytes),
                # the engine's side of the capacity model (the site-capacity policy reads these)
                "TWINSITE_STREAM_SHARDS": str(capacity.shard_count(topo)),
                "TWINSITE_STREAM_CAPACITY_MSGS_PER_S": f"{m.stream_capacity_msgs_per_s:g}",
            },
            opts=c.child(self, self.provider, depends_on=[ns]))
        # The stack file the gateway pods load (`talk serve --stack`), from the same model.
        k8s.core.v1.ConfigMap(
            f"{site.name}-stack",
            metadata=meta(c.STACK_CONFIGMAP, "stack"),
            data={"Pulumi.yaml": PROJECT_FILE, f"Pulumi.{topo.stack}.yaml": stack_file(topo)},
            opts=c.child(self, self.provider, depends_on=[ns]))
        self.register_outputs({})
