"""`twinsite render --stack STACK --out DIR`: the Pulumi program's Kubernetes manifests, no cluster.

Runs the real program under Pulumi's mocks and writes one YAML file per Kubernetes resource,
grouped per site (`DIR/<site>/<kind>-<name>.yaml`), for review and GitOps. Secret values are
never written: they appear as a placeholder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import capacity, topology

K8S_VERSION = "1.31.0"  # the oldest Kubernetes the manifests are validated against (strict)
HEAD = ("apiVersion", "kind", "metadata")


@dataclass(frozen=True)
class Manifest:
    site: str
    kind: str
    name: str
    body: dict

    @property
    def filename(self) -> str:
        return f"{self.kind.lower()}-{self.name}.yaml"


def site_of(provider_name: str) -> str:
    return provider_name.removeprefix("k8s-")


def manifests(topo: topology.Topology) -> list[Manifest]:
    from .k8s import mockrun  # Pulumi is imported only when needed

    out = []
    for r in mockrun.run(topo):
        if not r.is_kubernetes:
            continue
        body = mockrun.plain(r.inputs)
        ordered = {k: body[k] for k in HEAD if k in body}
        ordered.update((k, v) for k, v in body.items() if k not in HEAD)
        out.append(Manifest(site_of(r.provider_name), body["kind"], body["metadata"]["name"], ordered))
    return out


def validate(m: Manifest, version: str = K8S_VERSION) -> str | None:
    """None when the manifest passes strict schema validation, else the first error."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(m.body, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        return f"{m.site}/{m.filename}: {where}: {e.message}"
    return None


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (nats.conf) as literal blocks, so reviewers read them as files."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _sorted(value):
    """Stable key order (the wire order is not), so re-renders diff cleanly."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def dump(m: Manifest) -> str:
    body = {k: _sorted(v) for k, v in m.body.items()}
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def write(ms: list[Manifest], out: Path) -> list[Path]:
    paths = []
    for site in sorted({m.site for m in ms}):
        folder = out / site
        if folder.exists():
            shutil.rmtree(folder)  # stale files of removed resources would mislead a reviewer
        folder.mkdir(parents=True)
    for m in ms:
        path = out / m.site / m.filename
        path.write_text(dump(m))
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="twinsite render", description=__doc__.splitlines()[0])
    p.add_argument("--stack", default="lab")
    p.add_argument("--file", help="a stack file path instead of Pulumi.<stack>.yaml")
    p.add_argument("--out", required=True, help="output folder (one subfolder per site)")
    p.add_argument("--no-validate", action="store_true",
                   help=f"skip the strict schema check (Kubernetes {K8S_VERSION})")
    args = p.parse_args(argv)
    topo = topology.load_file(args.file) if args.file else topology.load_stack(args.stack)
    t0 = time.monotonic()
    ms = manifests(topo)
    errors = [] if args.no_validate else [e for m in ms if (e := validate(m))]
    for e in errors:
        print(f"twinsite render: invalid manifest {e}", file=sys.stderr)
    if errors:
        return 1
    paths = write(ms, Path(args.out))
    sites = sorted({m.site for m in ms})
    print(f"wrote {len(paths)} manifests for {len(sites)} sites ({', '.join(sites)}) to {args.out} "
          f"in {time.monotonic() - t0:.2f}s"
          + ("" if args.no_validate else f"; all valid for Kubernetes {K8S_VERSION} (strict)"))
    print(capacity.explain(topo))
    return 0
