"""`twinsite lab up|down|status|fault ...` for humans (the chaos extension uses `twinsite.lab`)."""

from __future__ import annotations

import argparse
import json
import sys
import time

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
    f = sub.add_parser("fault", help="inject or clear a fault")
    fs = f.add_subparsers(dest="fault", required=True)
    k = fs.add_parser("kill-zone", help="SIGKILL a zone's processes (power: links go silent)")
    k.add_argument("zone")
    k.add_argument("--mode", default="power", choices=["power", "crash"])
    fs.add_parser("cut-power", help="power loss of a whole site").add_argument("site")
    r = fs.add_parser("restore", help="restart a zone or site, heal its links, wait converged")
    r.add_argument("target")
    r.add_argument("--timeout", type=float, default=60.0)
    t = fs.add_parser("throttle", help="set latency/jitter/bandwidth between two sites or zones")
    t.add_argument("a")
    t.add_argument("b")
    t.add_argument("--latency-ms", type=float, required=True)
    t.add_argument("--bandwidth-kbit", type=int, default=None)
    t.add_argument("--jitter-ms", type=float, default=0.0)
    pa = fs.add_parser("partition", help="silently cut the links between two sites or zones")
    pa.add_argument("a")
    pa.add_argument("b")
    h = fs.add_parser("heal", help="heal the links between A and B (or every link)")
    h.add_argument("a", nargs="?")
    h.add_argument("b", nargs="?")
    _accept_state_dir_anywhere(p)
    return p


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
    print_endpoints(st)


def print_endpoints(st: dict) -> None:
    for site, urls in st["client_endpoints"].items():
        print(f"  clients of {site}: {', '.join(urls)}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except LabError as e:
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
    lab = client.LabClient(d)
    if args.cmd == "status":
        st = lab.status()
        if args.json:
            print(json.dumps(st, indent=1))
        else:
            print_status(st)
        return 0
    f = args.fault
    if f == "kill-zone":
        res = lab.kill_zone(args.zone, args.mode)
    elif f == "cut-power":
        res = lab.cut_power(args.site)
    elif f == "restore":
        res = lab.restore(args.target, timeout=args.timeout)
    elif f == "throttle":
        res = lab.throttle(args.a, args.b, args.latency_ms, args.bandwidth_kbit, args.jitter_ms)
    elif f == "partition":
        res = lab.partition(args.a, args.b)
    else:
        if (args.a is None) != (args.b is None):
            raise LabError("heal: name both ends of a link, or none to heal every link")
        res = lab.heal(args.a, args.b)
    print(json.dumps(res))
    return 0
