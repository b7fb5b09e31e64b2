"""One site's API server through the official `kubernetes` client, every failure one line.

Used by the supervisor (install the CRD, create the kwok nodes, wait for Ready) and by
`twinsite sandbox dry-run` (server-side dry run of rendered manifests). Errors name the site and
the cause: a context missing from the kubeconfig, an API server that does not answer, an object
the API server rejects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from . import SandboxError, chaosmesh
from .plan import SitePlan, node_body, storage_class_body, volume_bodies, zone_of_node

CALL_TIMEOUT = (3.0, 15.0)  # connect, read


def contexts_of(path: Path) -> list[str]:
    try:
        contexts, _ = config.list_kube_config_contexts(config_file=str(path))
    except (config.ConfigException, OSError) as e:
        raise SandboxError(f"cannot read kubeconfig {path}: {e}") from None
    return [c["name"] for c in contexts]


def api_reason(e: ApiException | DynamicApiError) -> str:
    body = getattr(e, "body", None) or ""
    try:
        msg = json.loads(body).get("message") or body
    except (ValueError, AttributeError):
        msg = body or str(e)
    return f"HTTP {e.status}: {' '.join(str(msg).split())}"


@dataclass
class SiteApi:
    site: str
    context: str
    server: str
    api: client.ApiClient

    @classmethod
    def from_kubeconfig(cls, site: str, path: Path, context: str) -> "SiteApi":
        names = contexts_of(path)
        if context not in names:
            raise SandboxError(f"site {site}: context '{context}' is not in kubeconfig {path} "
                               f"(contexts: {', '.join(names) or 'none'})")
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(path), context=context, client_configuration=cfg)
        cfg.retries = 0  # a down API server is an answer, not a reason to retry
        return cls(site, context, cfg.host, client.ApiClient(cfg))

    def down_reason(self, e: Exception) -> str:
        cause = e
        while getattr(cause, "reason", None) is not None and cause is not cause.reason:
            cause = cause.reason
        text = str(cause)
        if "Connection refused" in text or "Errno 111" in text:
            text = "connection refused"
        return (f"site {self.site}: API server {self.server} (context '{self.context}') "
                f"is down: {text}")

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, _request_timeout=CALL_TIMEOUT, **kw)
        except urllib3.exceptions.HTTPError as e:
            raise SandboxError(self.down_reason(e)) from None

    def ready(self) -> bool:
        try:
            req = self.api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
            resp = self.api.call_api(*req, _request_timeout=CALL_TIMEOUT)
            return resp.status == 200
        except (urllib3.exceptions.HTTPError, ApiException):
            return False

    def check_up(self) -> None:
        """Raise the one-line "API server is down" error unless /version answers."""
        self._call(client.VersionApi(self.api).get_code)

    # --- what the sandbox installs --------------------------------------------------------------

    def install_crds(self) -> None:
        ext = client.ApiextensionsV1Api(self.api)
        try:
            self._call(ext.create_custom_resource_definition, chaosmesh.network_chaos_crd())
        except ApiException as e:
            if e.status != 409:
                raise SandboxError(f"site {self.site}: NetworkChaos CRD rejected: "
                                   f"{api_reason(e)}") from None

    def crds_established(self) -> bool:
        ext = client.ApiextensionsV1Api(self.api)
        crd = self._call(ext.read_custom_resource_definition,
                         f"{chaosmesh.PLURAL}.{chaosmesh.GROUP}")
        return any(c.type == "Established" and c.status == "True"
                   for c in (crd.status.conditions or []))

    def create_nodes(self, sp: SitePlan) -> None:
        core = client.CoreV1Api(self.api)
        for name in sp.nodes:
            try:
                self._call(core.create_node, node_body(name, zone_of_node(sp, name), sp.site))
            except ApiException as e:
                if e.status != 409:
                    raise SandboxError(f"site {self.site}: node {name} rejected: "
                                       f"{api_reason(e)}") from None

    def create_storage(self, sp: SitePlan) -> None:
        """The default StorageClass and each node's local PersistentVolumes."""
        calls = [(client.StorageV1Api(self.api).create_storage_class, storage_class_body())]
        core = client.CoreV1Api(self.api)
        calls += [(core.create_persistent_volume, pv) for pv in volume_bodies(sp)]
        for fn, body in calls:
            try:
                self._call(fn, body)
            except ApiException as e:
                if e.status != 409:
                    raise SandboxError(f"site {self.site}: {body['kind']} "
                                       f"{body['metadata']['name']} rejected: "
                                       f"{api_reason(e)}") from None

    def nodes_ready(self, names) -> bool:
        nodes = self._call(client.CoreV1Api(self.api).list_node).items
        ready = {n.metadata.name for n in nodes
                 if any(c.type == "Ready" and c.status == "True"
                        for c in (n.status.conditions or []))}
        return set(names) <= ready

    # --- server-side dry run ----------------------------------------------------------------

    def dynamic(self) -> DynamicClient:
        try:
            return DynamicClient(self.api)
        except urllib3.exceptions.HTTPError as e:
            raise SandboxError(self.down_reason(e)) from None

    def dry_run(self, bodies: list[dict]) -> list[str]:
        """Server-side dry run (dryRun=All; apply rejects fields the schema lacks) of every
        object; the namespaces they need are created for real first (a dry-run namespace
        holds nothing), as their manifests declare them: a bare namespace left behind lacked
        the labels the fault driver checks before it touches anything, and a later deploy
        into it kept it that way. Returns one line per rejected object."""
        self.check_up()
        dyn = self.dynamic()
        core = client.CoreV1Api(self.api)
        for body in sorted((b for b in bodies if b["kind"] == "Namespace"),
                           key=lambda b: b["metadata"]["name"]):
            ns = body["metadata"]["name"]
            try:
                self._call(core.create_namespace, body)
            except ApiException as e:
                if e.status != 409:
                    return [f"site {self.site}: Namespace {ns} rejected: {api_reason(e)}"]
        return [err for b in bodies if (err := self._dry_run_one(dyn, b))]

    def _dry_run_one(self, dyn: DynamicClient, body: dict) -> str | None:
        kind, name = body.get("kind"), body.get("metadata", {}).get("name")
        what = f"site {self.site}: {kind} {name}"
        try:
            res = dyn.resources.get(api_version=body["apiVersion"], kind=kind)
        except ResourceNotFoundError:
            return f"{what} rejected: the API server has no {body['apiVersion']} {kind}"
        ns = body["metadata"].get("namespace") if res.namespaced else None
        try:
            dyn.server_side_apply(res, body=body, name=name, namespace=ns,
                                  field_manager="twinsite-dry-run", dry_run="All",
                                  force_conflicts=True,
                                  _request_timeout=CALL_TIMEOUT)
        except (ApiException, DynamicApiError) as e:
            return f"{what} rejected by the API server: {api_reason(e)}"
        except urllib3.exceptions.HTTPError as e:
            return self.down_reason(e)
        return None

    def assign_load_balancers(self, site_index: int) -> int:
        """A MetalLB-like address pool: every LoadBalancer Service without an address gets one
        from 127.<10+site>.0.0/16 (stable per Service; nothing listens there - no container runs),
        so what waits for a LoadBalancer (pulumi up, the k8s driver's gateway URL) sees one."""
        import hashlib
        core = client.CoreV1Api(self.api)
        done = 0
        for svc in self._call(core.list_service_for_all_namespaces).items:
            if svc.spec.type != "LoadBalancer":
                continue
            if svc.status.load_balancer and svc.status.load_balancer.ingress:
                continue
            h = hashlib.sha1(f"{svc.metadata.namespace}/{svc.metadata.name}".encode()).digest()
            ip = f"127.{10 + site_index}.{h[0]}.{max(1, h[1])}"
            self._call(core.patch_namespaced_service_status, svc.metadata.name,
                       svc.metadata.namespace, {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})
            done += 1
        return done

