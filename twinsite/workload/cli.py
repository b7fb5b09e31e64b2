"""`twinsite traffic run --duration S --rate N --rooms N --subscribers N --history FILE
[--state-dir DIR] [--endpoint SITE=URL ...]`: drive traffic at the lab (or given gateways), record
the history, print what was sent. Judge it with `twinsite check FILE`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ..history import HistoryWriter
from .driver import DriverConfig, TrafficDriver


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsite traffic", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="drive traffic and record a history")
    r.add_argument("--duration", type=float, required=True, metavar="S", help="seconds of traffic")
    r.add_argument("--rate", type=float, required=True, metavar="N", help="messages per second")
    r.add_argument("--rooms", type=int, default=8, metavar="N")
    r.add_argument("--subscribers", type=int, default=2, metavar="N",
                   help="subscriber processes (each follows one room)")
    r.add_argument("--history", required=True, metavar="FILE", help="history file (JSON Lines)")
    r.add_argument("--state-dir", default=None, help="lab state dir (default: the lab's default)")
    r.add_argument("--endpoint", action="append", default=[], metavar="SITE=URL",
                   help="a gateway to use instead of the lab's (repeatable)")
    r.add_argument("--token-file", default=None, metavar="FILE",
                   help="the gateways' API token (default: the lab's; with --endpoint: "
                        "$TWINSITE_TALK_TOKEN_FILE)")
    r.add_argument("--timeout", type=float, default=1.5, help="per-request timeout (s)")
    r.add_argument("--max-in-flight", type=int, default=256)
    r.add_argument("--settle", type=float, default=2.0, help="seconds to settle before reading back")
    r.add_argument("--json", action="store_true", help="print the driver's stats as JSON")
    return p


def _fail(msg: str) -> int:
    print(f"twinsite traffic: {msg}", file=sys.stderr)
    return 2


def parse_endpoints(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        site, sep, url = item.partition("=")
        if not sep or not site or not url.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint: expected SITE=http://HOST:PORT, got '{item}'")
        out.setdefault(site, []).append(url.rstrip("/"))
    return out


def _lab_status(state_dir) -> dict:
    from twinsite.lab import LabClient
    return LabClient(state_dir).status()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.rooms < 1 or args.subscribers < 0:
        return _fail("--duration and --rate must be > 0, --rooms >= 1, --subscribers >= 0")
    from ..talk import auth
    try:
        if args.endpoint:
            endpoints = parse_endpoints(args.endpoint)
            token = auth.client_token(args.token_file)
        else:
            from .lab import endpoints_from_lab, token_from_lab
            try:
                status = _lab_status(args.state_dir)
                endpoints = endpoints_from_lab(status)
                token = (auth.client_token(args.token_file) if args.token_file
                         else token_from_lab(status))
            except ImportError:
                return _fail("the lab is not available in this version: pass --endpoint SITE=URL")
            except Exception as e:  # noqa: BLE001 - LabError & co: one line, not a traceback
                return _fail(f"cannot get the lab's endpoints ({e}); is it up? "
                             "(`twinsite lab up`, or pass --endpoint SITE=URL)")
        config = DriverConfig(endpoints=endpoints, rate=args.rate, rooms=args.rooms,
                              subscribers=args.subscribers, request_timeout_s=args.timeout,
                              max_in_flight=args.max_in_flight, settle_s=args.settle,
                              token=token)
        config.validate()
    except ValueError as e:
        return _fail(str(e))
    try:
        history = HistoryWriter(args.history)
    except OSError as e:
        return _fail(f"--history {args.history}: {e.strerror or e}")
    driver = TrafficDriver(config, history)
    try:
        try:
            import uvloop
            uvloop.run(driver.run(args.duration))
        except ImportError:
            asyncio.run(driver.run(args.duration))
    finally:
        history.close()
    st = driver.stats.as_dict()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print(f"traffic: {st['scheduled']} scheduled at {args.rate:g}/s over {args.rooms} rooms "
              f"({', '.join(f'{s}: {len(u)}' for s, u in sorted(endpoints.items()))} gateways); "
              f"sent {st['sent']} ({st['achieved_rate']}/s), acked {st['acked']}, "
              f"failed {st['failed']} (overload {st['overload']}), "
              f"indeterminate {st['indeterminate']}; deliveries {st['deliveries']}; "
              f"rooms read back {st['rooms_read']}/{args.rooms}")
        print(f"history: {args.history}  (judge it: twinsite check {args.history})")
    return 0
