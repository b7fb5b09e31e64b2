"""Chaos Mesh `NetworkChaos` bodies (chaos-mesh.org/v1alpha1), written from the documented API.

Pure. Written here rather than taken from chaostoolkit-chaosmesh / chaosk8s, whose bodies are
wrong for us: they spell `bandwdith`, put the namespace in `metadata.ns`, and send no `value` for
mode `fixed`. Documented fields used: `action` (partition | delay | bandwidth), `mode` (all),
`selector` (namespaces, labelSelectors, nodeSelectors), `direction` (to | from | both), `target`
(mode + selector), `externalTargets` (IPs, CIDRs, host names), `delay` (latency, jitter,
correlation), `bandwidth` (rate, limit, buffer).
"""

from __future__ import annotations

import hashlib

from twinsite.topology import LinkSpec

GROUP, VERSION, PLURAL, KIND = "chaos-mesh.org", "v1alpha1", "networkchaos", "NetworkChaos"
RUN_LABEL = "twinsite.io/run"
FAULT_LABEL = "twinsite.io/fault"      # zone-power | link
ZONE_LABEL = "twinsite.io/zone"        # the isolated zone (zone-power objects)
LINKS_ANN = "twinsite.io/links"        # the zone pairs a link object cuts or shapes
PART_OF = {"app.kubernetes.io/part-of": "twinsite"}
ZONE_KEY = "topology.kubernetes.io/zone"
# tc's token bucket: the documented example's queue limit; a burst of at least one MTU-ish chunk
LIMIT_BYTES, MIN_BUFFER_BYTES = 20971520, 10000


def object_name(run: str, *parts: str) -> str:
    """A DNS-1123 name, unique per run and purpose, at most 63 characters."""
    digest = hashlib.sha1("/".join((run,) + parts).encode()).hexdigest()[:10]
    head = "-".join(p for p in parts if p)[:36].strip("-").lower()
    return f"twinsite-{head}-{digest}".replace("~", "-").replace("_", "-")


def pods(namespace: str, zone: str | None = None) -> dict:
    """A selector of the twinsite pods of a namespace, on the nodes of one zone if given."""
    sel = {"namespaces": [namespace], "labelSelectors": dict(PART_OF)}
    if zone:
        sel["nodeSelectors"] = {ZONE_KEY: zone}
    return sel


def _shape_fields(shape: LinkSpec) -> tuple[str, dict]:
    """(action, its fields) for a link shape: delay when there is latency, else bandwidth."""
    if shape.latency_ms > 0 or shape.jitter_ms > 0 or not shape.bandwidth_kbit:
        fields = {"delay": {"latency": f"{shape.latency_ms:g}ms", "jitter": f"{shape.jitter_ms:g}ms",
                            "correlation": "0"}}
        if shape.bandwidth_kbit:  # both: netem delay plus a rate cap in one object
            fields["bandwidth"] = bandwidth(shape.bandwidth_kbit)
        return "delay", fields
    return "bandwidth", {"bandwidth": bandwidth(shape.bandwidth_kbit)}


def bandwidth(kbit: int) -> dict:
    """Chaos Mesh's rate unit `bps` is bytes per second (tc's convention)."""
    rate_bytes = max(1, int(kbit * 1000 // 8))
    return {"rate": f"{rate_bytes}bps", "limit": LIMIT_BYTES,
            "buffer": max(MIN_BUFFER_BYTES, rate_bytes // 100)}


def network_chaos(name: str, namespace: str, run: str, fault: str, *, selector: dict,
                  direction: str, target: dict | None = None, external: tuple[str, ...] = (),
                  shape: LinkSpec | None = None, zone: str | None = None,
                  links: tuple[str, ...] = ()) -> dict:
    """One NetworkChaos: a partition when `shape` is None, else delay/bandwidth."""
    labels = {RUN_LABEL: run, FAULT_LABEL: fault, **PART_OF}
    if zone:
        labels[ZONE_LABEL] = zone
    spec: dict = {"mode": "all", "selector": selector, "direction": direction}
    if shape is None:
        spec["action"] = "partition"
    else:
        spec["action"], fields = _shape_fields(shape)
        spec.update(fields)
    if target is not None:
        spec["target"] = {"mode": "all", "selector": target}
    if external:
        spec["externalTargets"] = list(external)
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if links:
        meta["annotations"] = {LINKS_ANN: ",".join(links)}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta, "spec": spec}
