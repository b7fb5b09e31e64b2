"""`twinsite lab up|down|status|fault ...` for humans (the chaos extension uses `twinsite.lab`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from enum import Enum

from .. import faults
from . import client, state
from .model import LabError


def _accept_state_dir_anywhere(parser: argparse.ArgumentParser) -> None:
    """`twinsite lab up --state-dir D` and `twinsite lab --state-dir D up` both work."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--state-dir", default=argparse.SUPPRESS,
                                 help="lab state directory (as before the subcommand)")
                _accept_state_dir_anywhere(sub)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsite lab", description="the local dual-site lab")
    p.add_argument("--state-dir", default=None,
                   help="lab state directory (default: $TWINSITE_LAB_DIR or .twinsite/lab)")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the lab in the background; return when ready")
    u.add_argument("--stack", default="lab")
    u.add_argument("--timeout", type=float, default=60.0)
    sub.add_parser("down", help="stop everything (idempotent)")
    s = sub.add_parser("status", help="nodes, links, client endpoints")
    s.add_argument("--json", action="store_true")
    f = sub.add_parser("fault", help="inject or end a fault (see twinsite.faults)")
    fs = f.add_subparsers(dest="fault", required=True)
    for cls in faults.FAULTS:
        _fault_parser(fs, cls)
    _accept_state_dir_anywhere(p)
    return p


def _fault_parser(sub, cls) -> None:
    """One subcommand per fault class, its arguments from the dataclass fields: required fields
    are positional, fields with a default are --options (restore's target is optional: all)."""
    fp = sub.add_parser(cls.KIND, help=" ".join((cls.__doc__ or "").split()))
    fp.set_defaults(fault_cls=cls)
    for name, kind, default in faults.fields_of(cls):
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        convert = base if base in (int, float) else str
        choices = [m.value for m in base] if isinstance(base, type) and issubclass(base, Enum) \
            else None
        if default is dataclasses.MISSING:
            fp.add_argument(name, type=convert)
        elif name in ("target", "a", "b"):
            fp.add_argument(name, nargs="?", default=default, type=convert)
        else:
            fp.add_argument("--" + name.replace("_", "-"), dest=name, type=convert,
                            default=default.value if isinstance(default, Enum) else default,
                            choices=choices)


def print_status(st: dict) -> None:
    print(f"lab '{st['stack']}' {'ready' if st.get('ready') else 'starting'} "
          f"(state dir {st.get('state_dir')}, control {st.get('api')})")
    for n in st["nodes"]:
        extra = f" clients→{n['client_url']}" if n.get("client_url") else ""
        print(f"  {n['kind']:<8} {n['name']:<14} {n['site']:<8} {n['state']:<5} "
              f"pid {n['pid'] or '-':<8} {n['url']}{extra}")
    odd = [ln for ln in st["links"] if ln["state"] != "ok"]
    print(f"  links: {len(st['links'])} ({len(st['links']) - len(odd)} ok)")
    for ln in odd:
        print(f"    {ln['a']} <-> {ln['b']}: {ln['state']} latency {ln['latency_ms']} ms, "
              f"bandwidth {ln['bandwidth_kbit'] or 'unlimited'} kbit/s")
    print_shards(st.get("shards"))
    print_endpoints(st)


def print_shards(shards: dict | None) -> None:
    """One line per leader site (how many shards it leads), then the shards led elsewhere than
    they prefer (an election, a site down, a return still under way)."""
    if not shards:
        return
    by_site: dict[str, list[str]] = {}
    for name, sh in shards.items():
        by_site.setdefault(sh["site"] or "no leader", []).append(name)
    print(f"  shards: {len(shards)}; leaders " + ", ".join(
        f"{site} {len(names)}" for site, names in sorted(by_site.items())))
    for site, names in sorted(by_site.items()):
        print(f"    {site}: {' '.join(names)}")
    astray = [f"{n} (prefers {sh['preferred']}, led by {sh['site'] or 'nobody'})"
              for n, sh in shards.items() if sh["site"] != sh["preferred"]]
    if astray:
        print(f"  led away from their preferred site: {', '.join(astray)}")


def print_endpoints(st: dict) -> None:
    for site, urls in st["client_endpoints"].items():
        print(f"  clients of {site}: {', '.join(urls)}")
    if st.get("talk_token_file"):
        print(f"  API token (Authorization: Bearer ...): {st['talk_token_file']}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (LabError, faults.FaultError) as e:
        print(f"twinsite lab: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `twinsite lab status | head`
        return 0


def _run(args) -> int:
    d = args.state_dir
    if args.cmd == "up":
        if client.is_running(d):
            print("lab is already up")
            print_status(client.LabClient(d).status())
            return 0
        t0 = time.monotonic()
        lab = client.up(args.stack, d, timeout=args.timeout)
        st = lab.status()
        print(f"lab '{st['stack']}' ready in {time.monotonic() - t0:.1f}s")
        print_endpoints(st)
        return 0
    if args.cmd == "down":
        was = state.supervisor_alive(state.state_dir(d))
        client.down(d)
        print("lab is down" if was else "lab was not running (cleaned up)")
        return 0
    if args.cmd == "fault":  # a bad argument is reported before the lab is asked anything
        cls = args.fault_cls
        fault = cls(**{name: getattr(args, name) for name, _, _ in faults.fields_of(cls)})
    lab = client.LabClient(d)
    if args.cmd == "status":
        st = lab.status(shards=True)
        if args.json:
            print(json.dumps(st, indent=1))
        else:
            print_status(st)
        return 0
    res = lab.apply(fault)
    print(json.dumps(res))
    return 0
