"""The dual-site policy rules, as a list (`POLICIES`) of pulumi_policy policies.

Standalone on purpose (only `pulumi_policy` and the standard library): `pulumi preview
--policy-pack policies` runs this pack in the project's virtualenv, and `twinsite policy check`
imports the same list and evaluates it in-process over the program's resources under mocks.

The rules read what the program writes into the Kubernetes objects: labels `twinsite.io/site`
and `twinsite.io/site-role`, the NATS config in each zone's ConfigMap, the messaging settings
ConfigMap, and the capacity annotations on the gateway's HorizontalPodAutoscaler.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Iterable, Mapping

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY
SITE, ROLE = "twinsite.io/site", "twinsite.io/site-role"
NAME = "app.kubernetes.io/name"
ZONE_KEY = "topology.kubernetes.io/zone"
CAPACITY_ANN, SURGE_ANN = "twinsite.io/capacity-msgs-per-s", "twinsite.io/surge-peak-msgs-per-s"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


# --- reading Kubernetes objects -----------------------------------------------------------------

def kind(r) -> str:
    """The Kubernetes kind of a resource (from its type token, e.g. kubernetes:apps/v1:Deployment)."""
    t = r.resource_type
    return t.rsplit(":", 1)[-1] if t.startswith("kubernetes:") else ""


def meta(r) -> Mapping[str, Any]:
    return r.props.get("metadata") or {}


def label(r, key: str) -> str | None:
    return (meta(r).get("labels") or {}).get(key)


def who(r) -> str:
    site = label(r, SITE)
    return f"{kind(r)} {meta(r).get('name', r.name)}" + (f" in {site}" if site else "")


def pod_spec(r) -> Mapping[str, Any]:
    return ((r.props.get("spec") or {}).get("template") or {}).get("spec") or {}


def containers(r) -> list:
    spec = pod_spec(r)
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def config(args, key: str, default):
    value = args.get_config().get(key)
    return default if value is None else value


def of_kind(resources: Iterable, *kinds: str) -> list:
    return [r for r in resources if kind(r) in kinds]


def number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- dual-site rules (mandatory) ------------------------------------------------------------------

def _nats_servers(resources) -> dict[str, int]:
    per_site: dict[str, int] = defaultdict(int)
    for r in of_kind(resources, "StatefulSet"):
        if label(r, NAME) == "nats":
            per_site[label(r, SITE) or "?"] += int(number((r.props.get("spec") or {}).get("replicas", 1)) or 0)
    return dict(per_site)


def tiebreaker_quorum(args: StackValidationArgs, report: ReportViolation):
    servers = _nats_servers(args.resources)
    if not servers:
        return
    total = sum(servers.values())
    majority = total // 2 + 1
    spread = ", ".join(f"{s} {n}" for s, n in sorted(servers.items()))
    min_sites = int(config(args, "minSites", 3))
    if len(servers) < min_sites:
        report(f"JetStream voting servers live in {len(servers)} site(s) ({spread}); losing the "
               f"site with the most of them loses the Raft quorum. Add a small tie-breaker site (one NATS server) "
               f"so there are at least {min_sites} sites.", None)
        return
    for site, n in sorted(servers.items()):
        if total - n < majority:
            report(f"site '{site}' holds {n} of {total} voting servers ({spread}); without it the "
                   f"other {total - n} are short of the quorum of {majority}. Move servers out of "
                   f"'{site}' or add servers in other sites.", None)


def every_workload_in_every_site(args: StackValidationArgs, report: ReportViolation):
    primaries = {label(r, SITE) for r in args.resources if label(r, ROLE) == "primary"}
    primaries.discard(None)
    where: dict[str, set] = defaultdict(set)
    for r in of_kind(args.resources, *WORKLOAD_KINDS):
        if label(r, SITE) in primaries:
            where[label(r, NAME) or meta(r).get("name", r.name)].add(label(r, SITE))
    for workload, sites in sorted(where.items()):
        missing = sorted(primaries - sites)
        if missing:
            report(f"workload '{workload}' runs only in {', '.join(sorted(sites))}, not in "
                   f"{', '.join(missing)}: a fire in {', '.join(sorted(sites))} takes it down with "
                   f"the site. Deploy it to every primary site.", None)


def site_capacity(args: StackValidationArgs, report: ReportViolation):
    primaries = sorted({label(r, SITE) for r in args.resources if label(r, ROLE) == "primary"} - {None})
    hpas = {label(r, SITE): r for r in of_kind(args.resources, "HorizontalPodAutoscaler")
            if label(r, NAME) == "talk-gateway"}
    # The engine: when the other site is lost, this site leads every shard (one Raft group each).
    messaging = {label(r, SITE): (r.props.get("data") or {}) for r in of_kind(args.resources,
                 "ConfigMap") if "TWINSITE_STREAM_REPLICAS" in (r.props.get("data") or {})}
    for site in primaries:
        hpa = hpas.get(site)
        if hpa is None:
            report(f"primary site '{site}' has no autoscaled talk gateway, so it cannot carry the "
                   f"surge alone.", None)
            continue
        ann = meta(hpa).get("annotations") or {}
        peak = number(config(args, "surgePeakMsgsPerS", ann.get(SURGE_ANN)))
        per = number(config(args, "capacityMsgsPerReplica", ann.get(CAPACITY_ANN)))
        max_r = int(number((hpa.props.get("spec") or {}).get("maxReplicas")) or 0)
        if peak is None or per is None:
            report(f"{who(hpa)}: no capacity annotations ({CAPACITY_ANN}, {SURGE_ANN}) and no "
                   f"policy config to compare against.", hpa.urn)
            continue
        if max_r * per < peak:
            need = -(-peak // per)
            report(f"site '{site}' tops out at {max_r} gateways x {per:g} = {max_r * per:g} msgs/s, "
                   f"below the surge peak {peak:g} msgs/s it must carry alone if the other site is "
                   f"lost; raise its maxGatewayReplicas to at least {need:g}.", hpa.urn)
        engine = messaging.get(site) or {}
        shards = number(engine.get("TWINSITE_STREAM_SHARDS"))
        per_shard = number(config(args, "capacityMsgsPerShard",
                                  engine.get("TWINSITE_STREAM_CAPACITY_MSGS_PER_S")))
        if shards is None or per_shard is None:
            report(f"site '{site}': no stream shard count or per-shard capacity in its messaging "
                   f"settings, so the message engine's capacity is unknown.", None)
        elif shards * per_shard < peak:
            need = -(-peak // per_shard)
            report(f"site '{site}': the message engine is short: leading all {shards:g} stream "
                   f"shards x {per_shard:g} = {shards * per_shard:g} msgs/s is below the surge peak "
                   f"{peak:g} msgs/s it must carry alone if the other site is lost; raise "
                   f"messaging.streamShards to at least {need:g} (or leave it to the capacity "
                   f"model).", None)


def stream_replicas(args: ResourceValidationArgs, report: ReportViolation):
    if kind(args) != "ConfigMap" or "TWINSITE_STREAM_REPLICAS" not in (args.props.get("data") or {}):
        return
    data = args.props["data"]
    replicas = int(number(data.get("TWINSITE_STREAM_REPLICAS")) or 0)
    minimum = int(config(args, "minReplicas", 3))
    if replicas < minimum:
        report(f"{who(args)}: streams are R{replicas}; use streamReplicas >= {minimum} so every "
               f"acknowledged message has a copy in each of three sites.", None)
    if data.get("TWINSITE_UNIQUE_PLACEMENT") != "site":
        report(f"{who(args)}: stream replicas are placed without regard to sites "
               f"(uniquePlacement: {data.get('TWINSITE_UNIQUE_PLACEMENT')}); all replicas may land "
               f"in one site. Set twinsite:messaging.uniquePlacement: site.", None)


SYNC_RE = re.compile(r"^\s*sync_interval:\s*(\S+)", re.M)


def nats_fsync_always(args: ResourceValidationArgs, report: ReportViolation):
    conf = (args.props.get("data") or {}).get("nats.conf") if kind(args) == "ConfigMap" else None
    if conf is None:
        return
    m = SYNC_RE.search(conf)
    if not m or m.group(1).strip('"') != "always":
        found = m.group(1) if m else "the 2-minute default"
        report(f"{who(args)}: JetStream syncs every {found}, so an acknowledged message can be lost "
               f"when the site loses power (the lab's grid-power-loss drill with fsync 2m lost 497 "
               f"and 566 acknowledged messages in two runs; Jepsen, NATS 2.12.1). Set "
               f"twinsite:messaging.fsync: always.", None)


# --- hygiene rules (advisory by default) ------------------------------------------------------------

def _selects(selector: Mapping, pod_labels: Mapping) -> bool:
    want = (selector or {}).get("matchLabels") or {}
    return bool(want) and all(pod_labels.get(k) == v for k, v in want.items())


def pdb_required(args: StackValidationArgs, report: ReportViolation):
    pdbs = of_kind(args.resources, "PodDisruptionBudget")
    for w in of_kind(args.resources, *WORKLOAD_KINDS):
        pod_labels = ((w.props.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        if not any(label(p, SITE) == label(w, SITE)
                   and meta(p).get("namespace") == meta(w).get("namespace")
                   and _selects((p.props.get("spec") or {}).get("selector"), pod_labels)
                   for p in pdbs):
            report(f"{who(w)} has no PodDisruptionBudget: a node drain may evict all its pods at once.",
                   w.urn)


def pdb_allows_disruption(args: ResourceValidationArgs, report: ReportViolation):
    if kind(args) != "PodDisruptionBudget":
        return
    spec = args.props.get("spec") or {}
    if str(spec.get("maxUnavailable")) in ("0", "0%", "0.0"):
        report(f"{who(args)}: maxUnavailable 0 blocks every node drain and cluster upgrade.", None)
    if str(spec.get("minAvailable")) == "100%":
        report(f"{who(args)}: minAvailable 100% blocks every node drain and cluster upgrade.", None)


def zone_spread(args: ResourceValidationArgs, report: ReportViolation):
    if kind(args) not in WORKLOAD_KINDS[:2]:
        return
    replicas = number((args.props.get("spec") or {}).get("replicas", 1)) or 1
    if replicas < 2:
        return
    spec = pod_spec(args)
    minimum = int(config(args, "minZones", 2))
    if ZONE_KEY in (spec.get("nodeSelector") or {}):
        report(f"{who(args)}: {replicas:g} replicas pinned to one zone by nodeSelector.", None)
        return
    if not any(c.get("topologyKey") == ZONE_KEY for c in spec.get("topologySpreadConstraints") or []):
        report(f"{who(args)}: {replicas:g} replicas without a topologySpreadConstraint on {ZONE_KEY}.",
               None)
    terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    zones = {v for t in terms for e in t.get("matchExpressions") or []
             if e.get("key") == ZONE_KEY and e.get("operator") == "In" for v in e.get("values") or []}
    if terms and zones and len(zones) < minimum:
        report(f"{who(args)}: node affinity allows only zone(s) {', '.join(sorted(zones))}; "
               f"need >= {minimum}.", None)


def probes_required(args: ResourceValidationArgs, report: ReportViolation):
    for c in containers(args) if kind(args) in WORKLOAD_KINDS else []:
        missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
        if missing:
            report(f"{who(args)}: container '{c.get('name')}' has no {' and no '.join(missing)}.", None)


def resources_required(args: ResourceValidationArgs, report: ReportViolation):
    for c in containers(args) if kind(args) in WORKLOAD_KINDS else []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in req]
        missing += ["limits.memory"] if "memory" not in lim else []
        if missing:
            report(f"{who(args)}: container '{c.get('name')}' lacks {', '.join(missing)}.", None)


def non_root_readonly(args: ResourceValidationArgs, report: ReportViolation):
    if kind(args) not in WORKLOAD_KINDS:
        return
    pod_sc = pod_spec(args).get("securityContext") or {}
    for c in containers(args):
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or (pod_sc.get("runAsNonRoot") and sc.get("runAsNonRoot") is not False)):
            report(f"{who(args)}: container '{c.get('name')}' may run as root (set runAsNonRoot).", None)
        if sc.get("readOnlyRootFilesystem") is not True:
            report(f"{who(args)}: container '{c.get('name')}' has a writable root filesystem.", None)


def image_pinned(args: ResourceValidationArgs, report: ReportViolation):
    for c in containers(args) if kind(args) in WORKLOAD_KINDS else []:
        image = c.get("image") or ""
        last = image.split("@", 1)[0].rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        if "@sha256:" not in image and (tag is None or tag == "latest"):
            report(f"{who(args)}: image '{image}' is not pinned (use a version tag or a digest).", None)


def explicit_provider(args: ResourceValidationArgs, report: ReportViolation):
    # Only Kubernetes objects pick a cluster. The engine also sends components (no provider),
    # providers and dynamic resources (GeneratedPassword, run in the program's own Python).
    if not args.resource_type.startswith("kubernetes:"):
        return
    p = args.provider
    if p is None or p.name.startswith("default") or "::default" in (p.urn or ""):
        report(f"{args.resource_type} {args.name} uses the default provider (the ambient kube "
               f"context); give it its site's explicit provider.", None)


def _schema(**props) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=props)


POLICIES = [
    StackValidationPolicy(
        name="tiebreaker-quorum", enforcement_level=MANDATORY, validate=tiebreaker_quorum,
        description="The JetStream cluster has voting servers in >= 3 sites and survives the loss "
                    "of any one site.",
        config_schema=_schema(minSites={"type": "integer", "minimum": 2, "default": 3})),
    StackValidationPolicy(
        name="every-workload-in-every-site", enforcement_level=MANDATORY,
        validate=every_workload_in_every_site,
        description="Every workload (gateway, NATS, operations tooling) runs in every primary site."),
    StackValidationPolicy(
        name="site-capacity", enforcement_level=MANDATORY, validate=site_capacity,
        description="Each primary site alone carries baseline x surge: its maximum gateways and "
                    "the message engine's shards (led from that site once the other is lost).",
        config_schema=_schema(surgePeakMsgsPerS={"type": "number", "minimum": 0},
                              capacityMsgsPerReplica={"type": "number", "minimum": 1},
                              capacityMsgsPerShard={"type": "number", "minimum": 1})),
    ResourceValidationPolicy(
        name="stream-replicas", enforcement_level=MANDATORY, validate=stream_replicas,
        description="Streams have >= 3 replicas placed uniquely across sites.",
        config_schema=_schema(minReplicas={"type": "integer", "minimum": 1, "default": 3})),
    ResourceValidationPolicy(
        name="nats-fsync-always", enforcement_level=MANDATORY, validate=nats_fsync_always,
        description="NATS syncs to disk before acknowledging (sync_interval: always)."),
    StackValidationPolicy(
        name="pdb-required", enforcement_level=ADVISORY, validate=pdb_required,
        description="Every workload has a PodDisruptionBudget."),
    ResourceValidationPolicy(
        name="pdb-allows-disruption", enforcement_level=ADVISORY, validate=pdb_allows_disruption,
        description="No PodDisruptionBudget blocks all voluntary disruption."),
    ResourceValidationPolicy(
        name="zone-spread", enforcement_level=ADVISORY, validate=zone_spread,
        description="Each multi-replica workload spreads over >= 2 zones.",
        config_schema=_schema(minZones={"type": "integer", "minimum": 1, "default": 2})),
    ResourceValidationPolicy(
        name="probes-required", enforcement_level=ADVISORY, validate=probes_required,
        description="Every container has readiness and liveness probes."),
    ResourceValidationPolicy(
        name="resources-required", enforcement_level=ADVISORY, validate=resources_required,
        description="Every container requests CPU and memory and limits memory."),
    ResourceValidationPolicy(
        name="non-root-readonly", enforcement_level=ADVISORY, validate=non_root_readonly,
        description="Containers run as non-root with a read-only root filesystem."),
    ResourceValidationPolicy(
        name="image-pinned", enforcement_level=ADVISORY, validate=image_pinned,
        description="Images are pinned by a version tag or digest, never latest."),
    ResourceValidationPolicy(
        name="explicit-provider", enforcement_level=ADVISORY, validate=explicit_provider,
        description="No resource uses the default provider (the ambient cluster)."),
]

DUAL_SITE = ("tiebreaker-quorum", "every-workload-in-every-site", "site-capacity",
             "stream-replicas", "nats-fsync-always")
