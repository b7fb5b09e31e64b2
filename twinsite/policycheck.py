"""`twinsite policy check --stack STACK [--json] [--config FILE]`: the policy pack, offline.

Runs the Pulumi program under mocks and evaluates every policy of `policies/` in-process, with
pulumi_policy's own argument types, over the resources it registered: the same rules
`pulumi preview --policy-pack policies` enforces, without the CLI, credentials or clusters.
Exit 1 if a mandatory rule fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import topology

LEVELS = ("advisory", "mandatory", "remediate", "disabled")


@dataclass(frozen=True)
class Violation:
    rule: str
    enforcement: str
    resource: str  # "stack" for stack-level findings without a resource
    message: str
    urn: str | None = None


def policies_dir(root: Path | None = None) -> Path:
    return (root or topology.project_root()) / "policies"


def load_policies(root: Path | None = None) -> list:
    """`POLICIES` from policies/twinsite_policies.py (the pack itself is not a package)."""
    path = policies_dir(root) / "twinsite_policies.py"
    if "twinsite_policies" in sys.modules and getattr(sys.modules["twinsite_policies"], "__file__",
                                                      None) == str(path):
        return sys.modules["twinsite_policies"].POLICIES
    spec = importlib.util.spec_from_file_location("twinsite_policies", path)
    if spec is None or not path.is_file():
        raise topology.TopologyError(f"{path}: policy pack not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["twinsite_policies"] = module
    spec.loader.exec_module(module)
    return module.POLICIES


def _level(policy, overrides: dict) -> str:
    o = overrides.get(policy.name)
    if isinstance(o, str):
        return o
    if isinstance(o, dict) and "enforcementLevel" in o:
        return o["enforcementLevel"]
    return policy.enforcement_level.value if policy.enforcement_level else "advisory"


def _config(policy, overrides: dict) -> dict:
    """The policy's config: schema defaults, then the overrides file (as the engine does)."""
    out = {}
    if policy.config_schema:
        out = {k: v["default"] for k, v in policy.config_schema.properties.items() if "default" in v}
    o = overrides.get(policy.name)
    if isinstance(o, dict):
        out.update({k: v for k, v in o.items() if k != "enforcementLevel"})
    return out


def _run(result) -> None:
    if result is not None and inspect.isawaitable(result):
        asyncio.run(result)


def evaluate(topo: topology.Topology, overrides: dict | None = None,
             policies: list | None = None) -> list[Violation]:
    from pulumi_policy import (PolicyCustomTimeouts, PolicyProviderResource, PolicyResource,
                               PolicyResourceOptions, ResourceValidationArgs,
                               ResourceValidationPolicy, StackValidationArgs)

    from .k8s import mockrun

    overrides = overrides or {}
    policies = load_policies() if policies is None else policies
    captured = [r for r in mockrun.run(topo) if r.custom and not r.type.startswith("pulumi:providers:")]
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])

    def provider_of(r) -> PolicyProviderResource | None:
        if not r.provider_urn:
            return None
        urn = r.provider_urn.rsplit("::", 1)[0]
        return PolicyProviderResource(urn.split("::")[2].split("$")[-1], {}, urn, r.provider_name)

    props = {r.urn: mockrun.plain(r.inputs) for r in captured}
    stack_resources = [PolicyResource(r.type, props[r.urn], r.urn, r.name, opts, provider_of(r),
                                      None, [], {}) for r in captured]
    out: list[Violation] = []
    for policy in policies:
        level = _level(policy, overrides)
        if level == "disabled":
            continue
        config = _config(policy, overrides)
        if isinstance(policy, ResourceValidationPolicy):
            for r in captured:
                def report(message: str, urn: str | None = None, _r=r):
                    out.append(Violation(policy.name, level, f"{_r.type.rsplit(':', 1)[-1]} {_r.name}",
                                         message, _r.urn))
                _run(policy.validate(ResourceValidationArgs(
                    r.type, props[r.urn], r.urn, r.name, opts, provider_of(r), config), report))
        else:
            def report(message: str, urn: str | None = None):
                name = urn.rsplit("::", 1)[-1] if urn else "stack"
                out.append(Violation(policy.name, level, name, message, urn))
            _run(policy.validate(StackValidationArgs(stack_resources, config), report))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="twinsite policy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="evaluate the policy pack over a stack, offline")
    c.add_argument("--stack", default="lab")
    c.add_argument("--file", help="a stack file path instead of Pulumi.<stack>.yaml")
    c.add_argument("--json", action="store_true", help="print the violations as a JSON list")
    c.add_argument("--config", help="policy config JSON (same format as --policy-pack-config)")
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.config:
        try:
            overrides = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:
            print(f"twinsite policy: --config {args.config}: {e}", file=sys.stderr)
            return 2
        bad = [f"{k}={v!r}" for k, v in overrides.items()
               if (v if isinstance(v, str) else (v or {}).get("enforcementLevel", "advisory"))
               not in LEVELS]
        if bad:
            print(f"twinsite policy: --config: unknown enforcement level {bad[0]} "
                  f"(expected one of: {', '.join(LEVELS)})", file=sys.stderr)
            return 2
    topo = topology.load_file(args.file) if args.file else topology.load_stack(args.stack)
    t0 = time.monotonic()
    violations = evaluate(topo, overrides)
    elapsed = time.monotonic() - t0
    failed = any(v.enforcement == "mandatory" for v in violations)
    if args.json:
        print(json.dumps([asdict(v) for v in violations], indent=2))
    else:
        for v in violations:
            print(f"{v.rule} [{v.enforcement}] {v.resource}: {v.message}")
        n_mand = sum(v.enforcement == "mandatory" for v in violations)
        print(f"stack {topo.stack}: {len(violations)} violation(s), {n_mand} mandatory "
              f"({elapsed:.2f}s) -> {'FAIL' if failed else 'pass'}",
              file=sys.stderr if violations else sys.stdout)
    return 1 if failed else 0
