"""`twinsite topology --stack STACK [--json]`: print the model a stack file declares."""

from __future__ import annotations

import argparse
import dataclasses
import json

from . import topology


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="twinsite topology", description=__doc__)
    p.add_argument("--stack", default="lab")
    p.add_argument("--file", help="a stack file path instead of Pulumi.<stack>.yaml")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    topo = topology.load_file(args.file) if args.file else topology.load_stack(args.stack)
    if args.json:
        print(json.dumps(dataclasses.asdict(topo), indent=2))
        return 0
    print(f"stack {topo.stack}: cluster '{topo.messaging.cluster_name}', "
          f"R{topo.messaging.stream_replicas}, fsync {topo.messaging.fsync}")
    for s in topo.sites:
        gw = f", gateways in {', '.join(s.gateway_zones)}" if s.gateway_zones else ""
        print(f"  {s.name} ({s.role}): {', '.join(s.zone_names)}{gw}")
    for link in topo.inter_site:
        print(f"  link {link.a}<->{link.b}: {link.spec.latency_ms} ms, "
              f"{link.spec.bandwidth_kbit or 'unlimited'} kbit/s")
    return 0
