"""The lab's NATS credentials: one password per role, generated at every `lab up`.

`STATE/credentials/<role>.password` (mode 0600, directory 0700) holds each role's password; the
servers' configs carry only bcrypt hashes of the client passwords. The route password is there in
plain text (files 0600): every server must present it in the route URLs it dials, so a hash beside
it would hide nothing; and measured here, a bcrypt route password kept the 7 servers from ever
forming a cluster under load (each of ~100 pooled route connections pays a bcrypt check; routes
went stale), while the same cluster formed in ~5 s with it plain.
Processes get a password *file path* (gateways: `--nats-password-file`), never the password in
their argv. Roles and permissions are `twinsite.natsconf`'s, shared with the Pulumi program.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from .. import natsconf
from ..natsclient import NatsAuth, from_files
from . import pki

ROLES = (natsconf.GATEWAY_USER, natsconf.OPS_USER, natsconf.ROUTE_USER)
# Every client connect costs the server one bcrypt check: 10 rounds is ~50 ms here, paid again on
# each fail-over reconnect; NATS's own mkpasswd uses 11.
BCRYPT_ROUNDS = 10


@dataclass(frozen=True)
class LabCredentials:
    dir: Path  # STATE/credentials
    pki: pki.LabPki
    passwords: dict = field(repr=False)  # role -> password
    hashes: dict = field(repr=False)  # client role -> bcrypt hash

    def password_file(self, role: str) -> Path:
        return self.dir / f"{role}.password"

    def auth(self, role: str = natsconf.OPS_USER) -> NatsAuth:
        return NatsAuth(role, self.passwords[role], self.pki.ca_file)

    def security(self, streams, tls: bool = True):
        """zone -> natsconf.Security of that zone's server (its own certificate)."""
        users = (natsconf.User(natsconf.GATEWAY_USER, self.hashes[natsconf.GATEWAY_USER],
                               natsconf.gateway_permissions(tuple(streams))),
                 natsconf.User(natsconf.OPS_USER, self.hashes[natsconf.OPS_USER],
                               natsconf.OPS_PERMISSIONS))

        def of(zone: str) -> natsconf.Security:
            cert = self.pki.servers[zone]
            return natsconf.Security(
                users=users, route_password=self.passwords[natsconf.ROUTE_USER],
                route_url_password=self.passwords[natsconf.ROUTE_USER],
                tls=natsconf.Tls(cert.cert_file, cert.key_file, self.pki.ca_file) if tls else None)
        return of


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def create(state_dir: Path, servers) -> LabCredentials:
    """Fresh passwords and TLS material for this lab (whatever an earlier lab left is replaced)."""
    d = Path(state_dir) / "credentials"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    passwords = {role: secrets.token_hex(24) for role in ROLES}  # hex: safe inside route URLs
    for role, pw in passwords.items():
        f = d / f"{role}.password"
        f.touch(mode=0o600)
        f.chmod(0o600)
        f.write_text(pw + "\n")
    return LabCredentials(d, pki.make(Path(state_dir) / "pki", servers), passwords,
                          {role: _hash(passwords[role])
                           for role in (natsconf.GATEWAY_USER, natsconf.OPS_USER)})


def status_doc(creds: LabCredentials) -> dict:
    """What `lab status` tells a client: where the CA and each client role's password file are."""
    return {"ca_file": creds.pki.ca_file,
            "password_files": {r: str(creds.password_file(r))
                               for r in (natsconf.GATEWAY_USER, natsconf.OPS_USER)}}


def client_auth(status: dict, role: str = natsconf.OPS_USER) -> NatsAuth:
    """A lab client's auth from the lab's status document (one clear error when it has none)."""
    doc = status.get("nats_auth") or {}
    files = doc.get("password_files") or {}
    if role not in files or not doc.get("ca_file"):
        raise KeyError(f"the lab status names no NATS credentials for role '{role}'")
    return from_files(role, files[role], doc["ca_file"])
