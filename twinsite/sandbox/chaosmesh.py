"""The Chaos Mesh `NetworkChaos` CustomResourceDefinition the sandbox installs.

Written here (not copied from Chaos Mesh) from the documented chaos-mesh.org/v1alpha1 fields that
twinsite's k8s driver uses, so a drill on the sandbox sees what it would see on a cluster with
Chaos Mesh installed: the same group, kind and field names, and objects with a misspelt or
missing field rejected (strict field validation, CEL rules standing in for Chaos Mesh's webhook).
No controller runs: the objects are the evidence, nothing shapes traffic.
"""

from __future__ import annotations

GROUP, VERSION, KIND, PLURAL = "chaos-mesh.org", "v1alpha1", "NetworkChaos", "networkchaos"
ACTIONS = ("netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth")
MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
DIRECTIONS = ("to", "from", "both")
DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
PERCENT = r"^[0-9]+(\.[0-9]+)?$"


def _s(**kw) -> dict:
    return {"type": "string", **kw}


def _str_map() -> dict:
    return {"type": "object", "additionalProperties": {"type": "string"}}


def _selector() -> dict:
    requirement = {"type": "object", "required": ["key", "operator"], "properties": {
        "key": _s(), "operator": _s(), "values": {"type": "array", "items": _s()}}}
    return {"type": "object", "properties": {
        "namespaces": {"type": "array", "items": _s()},
        "labelSelectors": _str_map(),
        "expressionSelectors": {"type": "array", "items": requirement},
        "annotationSelectors": _str_map(),
        "fieldSelectors": _str_map(),
        "nodeSelectors": _str_map(),
        "nodes": {"type": "array", "items": _s()},
        "podPhaseSelectors": {"type": "array", "items": _s()},
        "pods": {"type": "object", "additionalProperties": {"type": "array", "items": _s()}},
    }}


def _mode_rule() -> dict:
    return {"rule": "!(self.mode in ['fixed', 'fixed-percent', 'random-max-percent']) "
                    "|| has(self.value)",
            "message": "value is required when mode is fixed, fixed-percent or random-max-percent"}


def _spec() -> dict:
    delay = {"type": "object", "required": ["latency"], "properties": {
        "latency": _s(pattern=DURATION), "jitter": _s(pattern=DURATION),
        "correlation": _s(pattern=PERCENT),
        "reorder": {"type": "object", "required": ["reorder", "gap"], "properties": {
            "reorder": _s(pattern=PERCENT), "correlation": _s(pattern=PERCENT),
            "gap": {"type": "integer"}}}}}
    bandwidth = {"type": "object", "required": ["rate", "limit", "buffer"], "properties": {
        "rate": _s(pattern=r"^[0-9]+(\.[0-9]+)?([kmgt]?(bit|bps))$"),
        "limit": {"type": "integer", "minimum": 1}, "buffer": {"type": "integer", "minimum": 1},
        "peakrate": {"type": "integer", "minimum": 0},
        "minburst": {"type": "integer", "minimum": 0}}}
    lossy = {"type": "object", "properties": {"correlation": _s(pattern=PERCENT)}}
    loss = {"type": "object", "required": ["loss"],
            "properties": {"loss": _s(pattern=PERCENT), **lossy["properties"]}}
    dup = {"type": "object", "required": ["duplicate"],
           "properties": {"duplicate": _s(pattern=PERCENT), **lossy["properties"]}}
    corrupt = {"type": "object", "required": ["corrupt"],
               "properties": {"corrupt": _s(pattern=PERCENT), **lossy["properties"]}}
    target = {"type": "object", "required": ["selector", "mode"], "properties": {
        "selector": _selector(), "mode": _s(enum=list(MODES)), "value": _s()},
        "x-kubernetes-validations": [_mode_rule()]}
    rules = [_mode_rule()] + [
        {"rule": f"self.action != '{a}' || has(self.{a})",
         "message": f"action {a} needs spec.{a}"} for a in ("delay", "bandwidth", "loss",
                                                          "duplicate", "corrupt")]
    return {"type": "object", "required": ["action", "mode", "selector"], "properties": {
        "action": _s(enum=list(ACTIONS)),
        "mode": _s(enum=list(MODES)), "value": _s(),
        "selector": _selector(),
        "direction": _s(enum=list(DIRECTIONS), default="to"),
        "target": target,
        "externalTargets": {"type": "array", "items": _s()},
        "device": _s(), "targetDevice": _s(),
        "duration": _s(pattern=DURATION),
        "delay": delay, "bandwidth": bandwidth, "loss": loss, "duplicate": dup,
        "corrupt": corrupt,
    }, "x-kubernetes-validations": rules}


def network_chaos_crd() -> dict:
    schema = {"type": "object", "properties": {
        "apiVersion": _s(), "kind": _s(), "metadata": {"type": "object"}, "spec": _spec(),
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        "required": ["spec"]}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}",
                     "labels": {"app.kubernetes.io/managed-by": "twinsite-sandbox"}},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                           "singular": PLURAL, "categories": ["chaos-mesh"]},
                 "versions": [{"name": VERSION, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema},
                               "subresources": {"status": {}}}]},
    }
