"""`twinsite talk serve --site SITE --nats URL[,URL...] --listen HOST:PORT --token-file FILE
[--stack lab]`; `twinsite talk token FILE` writes a new token file (mode 0600).

The API's bearer tokens come from a file (`--token-file`, else $TWINSITE_TALK_TOKEN_FILE), never
from the command line, where `ps` would show them. Without one the gateway refuses to start: there
is no open mode (docs/tokens.md).

Runs one gateway under uvicorn (uvloop + httptools). SIGTERM/SIGINT: uvicorn stops accepting,
finishes in-flight requests (subscribe streams are closed), then the NATS connection is drained.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys

from .. import topology
from . import auth


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinsite talk", description="the talk messaging gateway")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the HTTP API in front of JetStream")
    s.add_argument("--site", required=True, help="the site this gateway runs in")
    s.add_argument("--nats", required=True,
                   help="comma-separated NATS URLs, own site's servers first (tried in order)")
    s.add_argument("--listen", required=True, metavar="HOST:PORT")
    s.add_argument("--stack", default="lab", help="topology stack (default: lab)")
    s.add_argument("--max-body-bytes", type=int, default=None,
                   help="request body limit (default: messaging.maxBodyBytes of the stack)")
    s.add_argument("--publish-timeout", type=float, default=None, metavar="SECONDS",
                   help="JetStream ack timeout (default 2)")
    s.add_argument("--shards", type=int, default=None,
                   help="stream shards (default: the stack's, from its capacity model; the lab "
                        "passes messaging.labStreamShards)")
    s.add_argument("--nats-user", default=os.environ.get("TWINSITE_NATS_USER"),
                   help="NATS user (env TWINSITE_NATS_USER); its password comes from "
                        "--nats-password-file or env TWINSITE_NATS_PASSWORD, never from argv")
    s.add_argument("--nats-password-file", default=os.environ.get("TWINSITE_NATS_PASSWORD_FILE"),
                   metavar="PATH", help="file holding the NATS password (env "
                                        "TWINSITE_NATS_PASSWORD_FILE)")
    s.add_argument("--nats-ca", default=os.environ.get("TWINSITE_NATS_CA"), metavar="PATH",
                   help="CA bundle: connect to NATS over TLS, verifying the servers (env "
                        "TWINSITE_NATS_CA)")
    s.add_argument("--token-file", default=None, metavar="FILE",
                   help="the API's bearer tokens, one per line (default: $TWINSITE_TALK_TOKEN_FILE)")
    s.add_argument("--log-level", default="warning")
    t = sub.add_parser("token", help="write a new random API token file (mode 0600)")
    t.add_argument("file")
    t.add_argument("--force", action="store_true", help="replace an existing file")
    return p


def _nats_auth(args):
    """(NatsAuth or None, error line or None) from the --nats-* options and the environment."""
    from ..natsclient import NatsAuth, from_files
    if not args.nats_user:
        if args.nats_password_file or args.nats_ca:
            return None, "--nats-user: required with --nats-password-file / --nats-ca"
        return None, None
    if args.nats_password_file:
        try:
            return from_files(args.nats_user, args.nats_password_file, args.nats_ca), None
        except (OSError, ValueError) as e:
            return None, f"--nats-password-file: {e}"
    password = os.environ.get("TWINSITE_NATS_PASSWORD", "")
    if not password:
        return None, ("--nats-user: no password (give --nats-password-file or "
                      "TWINSITE_NATS_PASSWORD)")
    return NatsAuth(args.nats_user, password, args.nats_ca), None


def _fail(msg: str) -> int:
    print(f"twinsite talk: {msg}", file=sys.stderr)
    return 2


def _new_token(args) -> int:
    if os.path.exists(args.file) and not args.force:
        return _fail(f"{args.file} exists (pass --force to replace it)")
    try:
        auth.write(args.file)
    except OSError as e:
        return _fail(f"{args.file}: {e.strerror or e}")
    print(f"wrote a new token to {args.file} (mode 0600)")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "token":
        return _new_token(args)
    topo = topology.load_stack(args.stack)
    try:
        topo.site(args.site)
    except KeyError:
        return _fail(f"--site: unknown site '{args.site}' (sites: "
                     f"{', '.join(s.name for s in topo.sites)})")
    urls = [u.strip() for u in args.nats.split(",") if u.strip()]
    if not urls:
        return _fail("--nats: at least one URL is required")
    host, _, port = args.listen.rpartition(":")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        return _fail(f"--listen: expected HOST:PORT, got '{args.listen}'")
    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        return _fail("--max-body-bytes: must be >= 1")
    if args.shards is not None and args.shards < 1:
        return _fail("--shards: must be >= 1")
    if args.publish_timeout is not None and args.publish_timeout <= 0:
        return _fail("--publish-timeout: must be > 0")
    nats_auth, err = _nats_auth(args)
    if err:
        return _fail(err)
    if args.nats_ca and not os.path.isfile(args.nats_ca):
        return _fail(f"--nats-ca: no such file: {args.nats_ca}")

    token_file = args.token_file or os.environ.get(auth.ENV_FILE)
    if not token_file:
        return _fail(f"no API tokens: pass --token-file FILE or set {auth.ENV_FILE} "
                     f"(`twinsite talk token FILE` makes one); the gateway never runs open")
    try:
        tokens = auth.load(token_file)
    except auth.TokenError as e:
        return _fail(str(e))

    # Bind ourselves so a busy port is one clear line, not a uvicorn traceback.
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as e:
        sock.close()
        return _fail(f"--listen {args.listen}: {e.strerror or e}")

    import uvicorn

    from .app import create_app
    from .backend import Settings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s talk %(message)s")
    settings = Settings.from_topology(topo, args.site, urls, max_body_bytes=args.max_body_bytes,
                                      publish_timeout_s=args.publish_timeout,
                                      shards=args.shards, nats_auth=nats_auth)
    app = create_app(settings, tokens=tokens)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", ws="none", lifespan="on",
                            log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=3, server_header=False,
                            proxy_headers=False)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0
