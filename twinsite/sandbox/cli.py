"""`twinsite sandbox up|down|status|env|dry-run` — local Kubernetes control planes per site."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..topology import load_stack
from . import SandboxError, client


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsite sandbox",
                                description="one real Kubernetes control plane per site")
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=None,
                        help="sandbox state (default $TWINSITE_SANDBOX_DIR or .twinsite/sandbox)")
    u = sub.add_parser("up", parents=[common], help="start; return when every node is Ready")
    u.add_argument("--stack", default="lab")
    u.add_argument("--nodes-per-zone", type=int, default=3)
    u.add_argument("--timeout", type=float, default=120.0)
    sub.add_parser("down", parents=[common], help="stop every process (idempotent)")
    s = sub.add_parser("status", parents=[common], help="sites, API servers, nodes")
    s.add_argument("--stack", default=None, help="(accepted for symmetry with up)")
    s.add_argument("--json", action="store_true")
    sub.add_parser("env", parents=[common], help="print the shell exports for the sandbox")
    dr = sub.add_parser("dry-run", parents=[common],
                        help="server-side dry run of `twinsite render` output on each site")
    dr.add_argument("--stack", default="lab")
    dr.add_argument("--kubeconfig", default=None, help="default: the sandbox's kubeconfig")
    dr.add_argument("--dir", default=None,
                    help="the files `twinsite render --out DIR` wrote (default: render now)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SandboxError as e:
        print(f"twinsite sandbox: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


def _run(args) -> int:
    d = client.state_dir(args.state_dir)
    if args.cmd == "up":
        t0, was = time.monotonic(), client.read(d) is not None
        st = client.up(args.stack, d, timeout=args.timeout, nodes_per_zone=args.nodes_per_zone)
        nodes = sum(len(s["nodes"]) for s in st["sites"])
        took = "already running" if was else f"ready in {time.monotonic() - t0:.1f}s"
        print(f"sandbox '{st['stack']}' {took}: "
              f"{len(st['sites'])} control planes, {nodes} nodes; kubeconfig {st['kubeconfig']}")
        for s in st["sites"]:
            print(f"  {s['site']:<10} context {s['context']:<10} {s['server']}  "
                  f"{len(s['nodes'])} nodes in {', '.join(s['zones'])}")
        print(f"  `eval \"$(twinsite sandbox env --state-dir {d})\"` sets KUBECONFIG and PATH")
        return 0
    if args.cmd == "down":
        print("sandbox is down" if client.down(d) else "sandbox was not running (cleaned up)")
        return 0
    if args.cmd == "env":
        print("\n".join(client.env_lines(d)))
        return 0
    if args.cmd == "status":
        st = client.status(d)
        if args.json:
            print(json.dumps(st, indent=1))
        elif not st["running"]:
            print(f"no sandbox is running (state dir {d})")
        else:
            print(f"sandbox '{st['stack']}' {'ready' if st['ready'] else 'starting'} "
                  f"(state dir {d}, kubeconfig {st['kubeconfig']})")
            for s in st["sites"]:
                procs_ = " ".join(f"{k}{'' if v else '(dead)'}" for k, v in s["processes"].items())
                api = "ready" if s["api_ready"] else "DOWN"
                print(f"  {s['site']:<10} {s['server']}  api {api}"
                      f"  nodes {'Ready' if s['nodes_ready'] else 'not ready'}  [{procs_}]")
        return 0 if st["running"] else 1
    return dry_run(args, d)


def dry_run(args, d: Path) -> int:
    from .apply import SiteApi

    topo = load_stack(args.stack)
    kcfg = Path(args.kubeconfig) if args.kubeconfig else d / "kubeconfig"
    apis = {s.name: SiteApi.from_kubeconfig(s.name, kcfg, s.kube_context or s.name)
            for s in topo.sites}
    for api in apis.values():
        api.check_up()  # before the (slow) render: a down site is the first thing to say
    per_site = _read_rendered(Path(args.dir), apis) if args.dir else _render(topo)
    errors, count = [], 0
    for site, api in apis.items():
        bodies = per_site.get(site, [])
        count += len(bodies)
        errors += api.dry_run(bodies)
    for e in errors:
        print(f"twinsite sandbox: {e}", file=sys.stderr)
    if not errors:
        print(f"{count} manifests of stack '{args.stack}' accepted by {len(apis)} API servers "
              f"(server-side dry run)")
    return 1 if errors else 0


def _render(topo) -> dict[str, list[dict]]:
    from .. import render

    out: dict[str, list[dict]] = {}
    for m in render.manifests(topo):
        out.setdefault(m.site, []).append(m.body)
    return out


def _read_rendered(d: Path, apis: dict) -> dict[str, list[dict]]:
    """DIR/<site>/*.yaml as `twinsite render` writes them; every site of the stack must be there."""
    import yaml

    out = {}
    for site in apis:
        files = sorted((d / site).glob("*.yaml"))
        if not files:
            raise SandboxError(f"site {site}: no rendered manifests in {d / site} "
                               f"(run `twinsite render --out {d}`)")
        out[site] = [yaml.safe_load(f.read_text()) for f in files]
    return out
