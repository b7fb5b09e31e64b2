"""Runs one Pulumi Python program for `pulumi_langhost` (the `-exec` shim of Pulumi's own host).

Started by path with the program's virtualenv Python, so it imports only the `pulumi` SDK (never
twinsite). It does what Pulumi's `pulumi-language-python-exec` does: load the stack config the
CLI passed in PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS, point the SDK at the engine and resource
monitor, run the program's `__main__` inside the root stack and wait for every outstanding RPC.

Exit codes: 0 ok; 32 = the error was already reported to the engine (the host answers "bail", so
the CLI prints no second message); 1 = the SDK could not even be imported.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import runpy
import sys
import traceback

REPORTED = 32


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Execute a Pulumi Python program")
    for flag in ("project", "root_directory", "stack", "parallel", "dry_run", "pwd", "monitor",
                 "engine", "tracing", "organization"):
        ap.add_argument(f"--{flag}")
    ap.add_argument("PROGRAM")
    ap.add_argument("ARGS", nargs="*")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        import pulumi
        import pulumi.runtime
    except ImportError:
        print(traceback.format_exc(), file=sys.stderr)
        print("The pulumi SDK is not installed in this virtualenv (run `make setup`).",
              file=sys.stderr)
        return 1
    args = _args(argv)
    pulumi.runtime.set_all_config(pulumi.runtime.get_config_env(),
                                  pulumi.runtime.get_config_secret_keys_env())
    pulumi.runtime.configure(pulumi.runtime.Settings(
        project=args.project, stack=args.stack, monitor=args.monitor, engine=args.engine,
        parallel=int(args.parallel or 0) or None, dry_run=args.dry_run == "true",
        organization=args.organization, root_directory=args.root_directory))
    if args.pwd:
        os.chdir(args.pwd)
    sys.argv = [args.PROGRAM, *args.ARGS]
    # The program model leaves futures unobserved when a resource fails; asyncio's complaints
    # about them are noise (Pulumi's host silences them the same way).
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(pulumi.runtime.run_in_stack(
            lambda: runpy.run_path(args.PROGRAM, run_name="__main__")))
        return 0
    except pulumi.RunError as e:
        pulumi.log.error(str(e))
    except Exception:  # noqa: BLE001 - the user's program failed: report it, whatever it was
        pulumi.log.error("Program failed with an unhandled exception:\n" + traceback.format_exc())
    finally:
        loop.close()
        sys.stdout.flush()
        sys.stderr.flush()
    return REPORTED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
