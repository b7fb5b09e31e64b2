"""NATS server configuration generator (pure): topology + addresses -> one config per server.

Both the lab and the Pulumi program render their `nats-server` configs here, so a tuning lesson
(fsync before ack, short pings so a silent peer is noticed) is learned once.

The NATS config format is written by hand below because no maintained Python library emits it;
JSON would also parse, but the native syntax is what operators read in ConfigMaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .topology import Topology


@dataclass(frozen=True)
class ServerPlan:
    """Where one zone's server listens and how it reaches its peers."""

    zone: str
    client_listen: str  # host:port
    cluster_listen: str  # host:port
    store_dir: str
    routes: tuple[str, ...]  # host:port of every other server's route listener, as seen from here
    http_listen: str | None = None  # monitoring endpoint (healthz, jsz, varz)
    server_name: str | None = None  # defaults to the zone name
    extra: Mapping[str, object] = field(default_factory=dict)
    security: "Security | None" = None  # users, route credentials, TLS (None: an open test cluster)


# --- who may connect (one home for the roles, used by the lab and the Pulumi program) -----------

GATEWAY_USER, OPS_USER, ROUTE_USER = "gateway", "ops", "route"
GATEWAY_INBOX = "_INBOX.talk"  # the gateways' reply subjects: nobody else's replies are theirs
API = "$JS.API"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


@dataclass(frozen=True)
class User:
    name: str
    password: str  # what the server compares: a bcrypt hash ($2a$/$2b$), or Raw("$ENV_VAR")
    permissions: Permissions | None = None  # None: everything


@dataclass(frozen=True)
class Tls:
    """Server certificate, key and the CA that signed every server (routes verify each other)."""

    cert_file: str
    key_file: str
    ca_file: str
    timeout_s: float = 2.0


@dataclass(frozen=True)
class Security:
    users: tuple[User, ...]
    route_password: str  # what a server accepts from a dialling peer (bcrypt hash or Raw env ref)
    route_url_password: str  # what it presents when it dials: plaintext, URL-safe
    tls: Tls | None = None
    route_user: str = ROUTE_USER


def gateway_permissions(streams, subject_prefix: str = "talk.room") -> Permissions:
    """Exactly what `twinsite.talk` (backend + balancer) sends: publishes to its rooms, these
    JetStream API calls on its own shard streams, subscriptions to its rooms and its inboxes."""
    calls = ("STREAM.INFO", "STREAM.CREATE", "STREAM.MSG.GET", "DIRECT.GET",
             "STREAM.LEADER.STEPDOWN")  # the last: the balancer's leader moves
    return Permissions(
        publish=(f"{subject_prefix}.*.*",)
        + tuple(f"{API}.{c}.{s}" for c in calls for s in streams),
        subscribe=(f"{subject_prefix}.*.*", f"{GATEWAY_INBOX}.>"))


# twinsite's own tools: leader moves and health (chaos drivers), the lab's probe stream and
# measurements (`_lab.>`), benches. Not the rooms: only gateways write and read messages.
OPS_PERMISSIONS = Permissions(publish=(f"{API}.>", "_lab.>", "_INBOX.>"),
                              subscribe=("_INBOX.>", "_lab.>"))


def _security_doc(sec: Security) -> dict:
    def user(u: User) -> dict:
        d: dict[str, object] = {"user": u.name, "password": u.password}
        if u.permissions is not None:
            d["permissions"] = {"publish": {"allow": list(u.permissions.publish)},
                                "subscribe": {"allow": list(u.permissions.subscribe)}}
        return d
    return {"authorization": {"users": [user(u) for u in sec.users], "timeout": 2}}


def _tls_doc(t: Tls) -> dict:
    return {"cert_file": t.cert_file, "key_file": t.key_file, "ca_file": t.ca_file,
            "timeout": t.timeout_s}


class Raw(str):
    """A value written without quotes (durations like 1s, keywords like always)."""


def render_value(value, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        inner = "".join(f"{pad}  {render_value(v, indent + 1)}\n" for v in value)
        return "[\n" + inner + pad + "]"
    if isinstance(value, dict):
        inner = "".join(f"{pad}  {k}: {render_value(v, indent + 1)}\n" for k, v in value.items())
        return "{\n" + inner + pad + "}"
    raise TypeError(f"cannot render {type(value).__name__} in a NATS config")


def render(doc: Mapping[str, object]) -> str:
    return "".join(f"{k}: {render_value(v)}\n" for k, v in doc.items())


def _duration(seconds: float) -> Raw:
    ms = int(round(seconds * 1000))
    return Raw(f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms")


def server_document(topo: Topology, plan: ServerPlan) -> dict:
    zone = topo.zone(plan.zone)
    m = topo.messaging
    host, port = plan.client_listen.rsplit(":", 1)
    jetstream: dict[str, object] = {
        "store_dir": plan.store_dir,
        "sync_interval": Raw(m.fsync),
    }
    if m.unique_placement:
        jetstream["unique_tag"] = f"{m.unique_placement}:"
    doc: dict[str, object] = {
        "server_name": plan.server_name or zone.name,
        "host": host,
        "port": int(port),
        "server_tags": [f"site:{zone.site}", f"zone:{zone.name}"],
        # A silent peer (power loss, cut fibre) is noticed only by missed pings.
        "ping_interval": _duration(m.ping_interval_s),
        "ping_max": m.ping_max,
        "write_deadline": _duration(max(2.0, m.ping_interval_s * m.ping_max)),
        "lame_duck_duration": Raw("30s"),  # nats-server's minimum
        "lame_duck_grace_period": Raw("2s"),
        "max_payload": max(1024 * 1024, m.max_body_bytes * 2),
        "jetstream": jetstream,
        "cluster": {
            "name": m.cluster_name,
            "listen": plan.cluster_listen,
            "no_advertise": True,  # peers must use the declared (fabric or route) addresses only
            "routes": [f"nats-route://{r}" for r in plan.routes],
        },
    }
    if plan.http_listen:
        doc["http"] = plan.http_listen
    sec = plan.security
    if sec is not None:
        doc.update(_security_doc(sec))
        cluster = doc["cluster"]
        cluster["authorization"] = {"user": sec.route_user, "password": sec.route_password,
                                    "timeout": 2}
        cluster["routes"] = [f"nats-route://{sec.route_user}:{sec.route_url_password}@{r}"
                             for r in plan.routes]
        if sec.tls is not None:
            doc["tls"] = _tls_doc(sec.tls)
            cluster["tls"] = _tls_doc(sec.tls)  # routes: mutual TLS (nats-server always verifies)
    doc.update(plan.extra)
    return doc


def server_config(topo: Topology, plan: ServerPlan) -> str:
    return render(server_document(topo, plan))


def cluster_configs(topo: Topology, plans: Mapping[str, ServerPlan]) -> dict[str, str]:
    """One config text per zone. Every zone of the topology must have a plan."""
    missing = [z.name for z in topo.zones if z.name not in plans]
    if missing:
        raise ValueError(f"no server plan for zone(s): {', '.join(missing)}")
    return {zone: server_config(topo, plan) for zone, plan in plans.items()}
