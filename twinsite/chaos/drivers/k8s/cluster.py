"""One site's cluster through the official `kubernetes` client: read it into a view, run ops on it.

Every failure becomes `ClusterError` with one line naming the site and the cause (a context missing
from the kubeconfig, an API server that does not answer, a namespace that is not twinsite's, an
object the API server refused).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from twinsite.topology import Site, Topology

from . import chaosmesh as cm
from .plan import CORDONED_BY, TAINT_EFFECT, TAINT_KEY, TAINT_VALUE, TAINTED_BY, Chaos, Node, Op, \
    Pod, SiteView, Verb

PART_OF = "app.kubernetes.io/part-of=twinsite"
REQUEST_TIMEOUT = (3.05, 15)  # connect, read (seconds)


class ClusterError(RuntimeError):
    """One line: the site, then what is wrong."""


def kubeconfig_path(configured: str | None) -> str:
    path = configured or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or \
        str(Path.home() / ".kube" / "config")
    return os.path.expanduser(path)


@dataclass
class SiteCluster:
    site: Site
    namespace: str
    api: client.ApiClient
    context: str

    @classmethod
    def connect(cls, site: Site, namespace: str, kubeconfig: str, context: str | None,
                token: str | None = None) -> "SiteCluster":
        ctx = context or site.kube_context
        if not ctx:
            raise ClusterError(f"site {site.name}: no kubeContext in the stack file and no "
                               f"contexts override in the configuration")
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError, TypeError) as e:
            raise ClusterError(f"site {site.name}: cannot read kubeconfig {kubeconfig}: "
                               f"{e}") from None
        names = [c["name"] for c in contexts or []]
        if ctx not in names:
            raise ClusterError(f"site {site.name}: kube context '{ctx}' is not in {kubeconfig} "
                               f"(contexts: {', '.join(names) or 'none'})")
        api = config.new_client_from_config(config_file=kubeconfig, context=ctx)
        if token:
            api.configuration.api_key = {"authorization": f"Bearer {token}"}
        return cls(site, namespace, api, ctx)

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as e:
            raise ClusterError(f"site {self.site.name}: {what}: {_reason(e)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            host = self.api.configuration.host
            raise ClusterError(f"site {self.site.name}: API server {host} does not answer "
                               f"({what}): {_root_cause(e)}") from None

    def check_namespace(self) -> None:
        """Refuse a cluster whose namespace is not twinsite's (a typo must not drill prod's)."""
        ns = self._call(f"read namespace {self.namespace}", self.core.read_namespace,
                        self.namespace)
        labels = ns.metadata.labels or {}
        if labels.get("app.kubernetes.io/part-of") != "twinsite":
            raise ClusterError(f"site {self.site.name}: namespace {self.namespace} lacks the label "
                               f"app.kubernetes.io/part-of=twinsite: not a twinsite deployment, "
                               f"refusing to inject faults")

    # --- reading ------------------------------------------------------------------------------

    def view(self, addresses: tuple[str, ...]) -> SiteView:
        nodes = self._call("list nodes", self.core.list_node).items
        pods = self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                          label_selector=PART_OF).items
        try:
            objs = self.custom.list_namespaced_custom_object(
                cm.GROUP, cm.VERSION, self.namespace, cm.PLURAL, label_selector=cm.RUN_LABEL,
                _request_timeout=REQUEST_TIMEOUT)["items"]
        except ApiException as e:
            if e.status == 404:
                raise ClusterError(f"site {self.site.name}: the NetworkChaos API "
                                   f"({cm.GROUP}/{cm.VERSION}) is not installed: install Chaos "
                                   f"Mesh in this cluster") from None
            raise ClusterError(f"site {self.site.name}: list NetworkChaos: {_reason(e)}") from None
        lb = self._load_balancer_addresses()
        return SiteView(
            site=self.site.name, namespace=self.namespace,
            nodes=tuple(_node(n) for n in nodes),
            pods=tuple(Pod(p.metadata.name, p.spec.node_name) for p in pods
                       if not p.metadata.deletion_timestamp),
            chaos=tuple(_chaos(o) for o in objs),
            addresses=tuple(sorted(set(addresses) | set(lb))))

    def _load_balancer_addresses(self) -> list[str]:
        services = self._call("list services", self.core.list_namespaced_service, self.namespace,
                              label_selector=PART_OF).items
        out = []
        for s in services:
            for ing in (s.status.load_balancer.ingress or []) if s.status.load_balancer else []:
                out.append(ing.ip or ing.hostname)
        return [a for a in out if a]

    def gateway_endpoint(self) -> str | None:
        """The gateway Service's LoadBalancer address, as a URL (None until it has one)."""
        try:
            svc = self.core.read_namespaced_service("talk-gateway", self.namespace,
                                                    _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return None
        for ing in (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []:
            host = ing.ip or ing.hostname
            if host:
                port = svc.spec.ports[0].port if svc.spec.ports else 80
                return f"http://{host}:{port}"
        return None

    # --- doing ----------------------------------------------------------------------------------

    def execute(self, op: Op, run: str, timeout_s: float = 120.0) -> dict:
        verb, name = op.verb, op.name
        if verb is Verb.CREATE_CHAOS:
            self._call(f"create NetworkChaos {name}", self.custom.create_namespaced_custom_object,
                       cm.GROUP, cm.VERSION, self.namespace, cm.PLURAL, dict(op.body))
        elif verb is Verb.DELETE_CHAOS:
            self._ignore_missing(f"delete NetworkChaos {name}",
                                 self.custom.delete_namespaced_custom_object,
                                 cm.GROUP, cm.VERSION, self.namespace, cm.PLURAL, name)
        elif verb in (Verb.CORDON, Verb.UNCORDON):
            cordon = verb is Verb.CORDON
            self._call(f"{verb.value} {name}", self.core.patch_node, name, {
                "spec": {"unschedulable": cordon},
                "metadata": {"annotations": {CORDONED_BY: run if cordon else None}}})
        elif verb in (Verb.TAINT, Verb.UNTAINT):
            self._set_taint(name, run, verb is Verb.TAINT)
        elif verb is Verb.DELETE_POD:
            self._ignore_missing(f"delete pod {name}", self.core.delete_namespaced_pod, name,
                                 self.namespace, grace_period_seconds=0,
                                 body=client.V1DeleteOptions(grace_period_seconds=0))
        elif verb is Verb.WAIT_READY:
            return {"ready_s": self.wait_ready(timeout_s)}
        return {}

    def _ignore_missing(self, what: str, fn, *args, **kwargs) -> None:
        try:
            self._call(what, fn, *args, **kwargs)
        except ClusterError as e:
            if "(404" not in str(e):
                raise

    def _set_taint(self, node: str, run: str, on: bool, attempts: int = 8) -> None:
        """Read-modify-write of the node's taints with its resourceVersion (another writer's taint
        is never lost); kwok's heartbeats bump the version, so a conflict is retried."""
        for attempt in range(attempts):
            n = self._call(f"read node {node}", self.core.read_node, node)
            taints = [t for t in (n.spec.taints or []) if t.key != TAINT_KEY]
            if on:
                taints.append(client.V1Taint(key=TAINT_KEY, value=TAINT_VALUE,
                                             effect=TAINT_EFFECT))
            body = {"spec": {"taints": [{"key": t.key, "value": t.value, "effect": t.effect}
                                        for t in taints]},
                    "metadata": {"annotations": {TAINTED_BY: run if on else None},
                                 "resourceVersion": n.metadata.resource_version}}
            try:
                self._call(f"{'taint' if on else 'untaint'} node {node}", self.core.patch_node,
                           node, body)
                return
            except ClusterError as e:
                if "(409)" not in str(e) or attempt == attempts - 1:
                    raise

    # --- readiness ---------------------------------------------------------------------------------

    def not_ready(self) -> list[str]:
        """Every StatefulSet and Deployment of twinsite's namespace that is not fully ready."""
        apps = client.AppsV1Api(self.api)
        out = []
        for kind, lister in (("statefulset", apps.list_namespaced_stateful_set),
                             ("deployment", apps.list_namespaced_deployment)):
            for w in self._call(f"list {kind}s", lister, self.namespace,
                                label_selector=PART_OF).items:
                want = w.spec.replicas if w.spec.replicas is not None else 1
                st = w.status
                ready = (st.ready_replicas or 0) if st else 0
                current = (st.updated_replicas or 0) if st else 0
                if ready < want or current < want or (st and st.observed_generation or 0) < \
                        (w.metadata.generation or 0):
                    out.append(f"{kind}/{w.metadata.name} {ready}/{want} ready")
        return out

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while True:
            missing = self.not_ready()
            if not missing:
                return round(time.monotonic() - t0, 3)
            if time.monotonic() - t0 > timeout_s:
                raise ClusterError(f"site {self.site.name}: not ready after {timeout_s:g}s: "
                                   f"{', '.join(missing)}")
            time.sleep(0.25)  # polling the API for a condition, not a fixed wait


def _node(n) -> Node:
    labels = n.metadata.labels or {}
    ann = n.metadata.annotations or {}
    return Node(n.metadata.name, labels.get(cm.ZONE_KEY), bool(n.spec.unschedulable),
                ann.get(CORDONED_BY), ann.get(TAINTED_BY))


def _chaos(o: dict) -> Chaos:
    meta = o.get("metadata", {})
    labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
    links = tuple(k for k in (ann.get(cm.LINKS_ANN) or "").split(",") if k)
    return Chaos(meta.get("name"), labels.get(cm.RUN_LABEL), labels.get(cm.FAULT_LABEL),
                 labels.get(cm.ZONE_LABEL), links)


def _reason(e: ApiException) -> str:
    import json
    try:
        msg = json.loads(e.body or "{}").get("message")
    except (ValueError, AttributeError):
        msg = None
    return f"{msg or e.reason} ({e.status})"


def _root_cause(e: BaseException) -> str:
    while getattr(e, "reason", None) is not None and isinstance(e.reason, BaseException):
        e = e.reason
    text = str(e)
    for marker in ("Connection refused", "timed out", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return text.split(": ", 1)[-1][:200]


def site_addresses(topo: Topology, site: Site) -> tuple[str, ...]:
    """How the other sites reach `site`, from the stack file: route hosts, gateway host, CIDRs."""
    out = set(site.external_cidrs)
    for z in site.zones:
        if z.route_address:
            out.add(z.route_address.rsplit(":", 1)[0])
    if site.gateway_url:
        out.add(urlsplit(site.gateway_url).hostname)
    return tuple(sorted(a for a in out if a))
