"""GeneratedPassword: a password generated once per stack and kept as a Pulumi secret.

Why a dynamic resource rather than pulumi-random's RandomPassword: that provider is bridged from a
Terraform provider kept as a git submodule, so it cannot be built from Go modules, and twinsite
runs only providers it can build (docs/pulumi.md). A Pulumi dynamic resource runs in the program's
own Python (the CLI's `pulumi-resource-pulumi-python` plugin), needs no binary, and gives the same
contract: created once with `secrets` (a CSPRNG), stored encrypted in the stack's state, unchanged
by later updates (diff reports no change unless the length changes, which replaces it).
"""

from __future__ import annotations

import secrets
import string

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

ALPHABET = string.ascii_letters + string.digits  # spliced into nats:// URLs: alphanumeric only
TYPE = "pulumi-python:dynamic:Resource"  # the type every Python dynamic resource registers as


def generate(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


class _PasswordProvider(ResourceProvider):
    def create(self, props):
        length = int(props["length"])
        return CreateResult(id_=secrets.token_hex(8), outs={"length": length,
                                                              "result": generate(length)})

    def diff(self, _id, olds, news):
        changed = int(olds.get("length", 0)) != int(news["length"])
        return DiffResult(changes=changed, replaces=["length"] if changed else [],
                          delete_before_replace=False)

    def update(self, _id, olds, news):  # never called for a length-only schema; kept total
        return {"length": int(news["length"]), "result": olds["result"]}


class GeneratedPassword(Resource):
    """`result` is a secret Output[str] of `length` characters from ALPHABET."""

    result: pulumi.Output[str]

    def __init__(self, name: str, length: int = 32, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["result"]))
        super().__init__(_PasswordProvider(), name, {"length": length, "result": None}, opts)


def stable_bcrypt(password: str, context: str, rounds: int = 11) -> str:
    """A bcrypt hash whose salt is derived from (context, password), so the same password gives
    the same hash at every `pulumi up` (a fresh random salt would change the NATS ConfigMap-fed
    env on each run and roll every server). The salt stays unique per password and role; the
    hashing itself is the `bcrypt` library's."""
    import base64
    import hashlib

    import bcrypt

    raw = hashlib.sha256(f"twinsite-nats:{context}:{password}".encode()).digest()[:16]
    std = base64.b64encode(raw).decode().rstrip("=")  # 22 characters
    salt = std.translate(_TO_BCRYPT_B64)
    return bcrypt.hashpw(password.encode(), f"$2b${rounds:02d}${salt}".encode()).decode()


# bcrypt's base64 is the standard one with another alphabet (same 6-bit values)
_TO_BCRYPT_B64 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
