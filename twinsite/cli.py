"""`twinsite` command line: a thin dispatcher to one module per command.

Each command module exposes `main(argv: list[str]) -> int` with its own argparse parser, so that
`twinsite check` does not pay for importing Pulumi, and teams can work on commands independently.
"""

from __future__ import annotations

import importlib
import sys

from .topology import TopologyError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "topology": ("twinsite.topology_cli", "show the topology a stack declares"),
    "talk": ("twinsite.talk.cli", "the `talk` messaging gateway (talk serve ...)"),
    "lab": ("twinsite.lab.cli", "the local dual-site lab (up | down | status | fault ...)"),
    "traffic": ("twinsite.workload.cli", "drive traffic and record a history (traffic run ...)"),
    "check": ("twinsite.checker_cli", "check a history: lost, duplicated, reordered messages"),
    "drill": ("twinsite.drill.cli", "run chaos experiments against the lab and write a report"),
    "soak": ("twinsite.drill.soakrun", "run the drill N times and summarize (soak --runs N)"),
    "render": ("twinsite.render", "render the Pulumi program to Kubernetes manifests (no cluster)"),
    "policy": ("twinsite.policycheck", "run the dual-site policy pack offline (policy check ...)"),
    "sandbox": ("twinsite.sandbox.cli", "local Kubernetes control planes per site (up | down | ...)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: twinsite COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"twinsite: unknown command '{name}' (commands: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"twinsite: '{name}' is not available yet in this version", file=sys.stderr)
            return 2
        raise
    try:
        return int(module.main(rest) or 0)
    except TopologyError as e:
        print(f"twinsite: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
