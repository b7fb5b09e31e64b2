"""The lab's NATS TLS material, generated at every `lab up`: a CA and one certificate per server.

Each server certificate serves clients and routes and is also the client certificate of the
routes it dials (nats-server verifies both ends of a route), so it carries both extended key
usages. SANs: 127.0.0.1, localhost and the server's name. ECDSA P-256: fast to generate.
Keys are written mode 0600. (The sandbox's control-plane PKI is `twinsite.sandbox.pki`.)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ServerCert:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class LabPki:
    ca_file: str
    servers: dict  # server name -> ServerCert


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sign(builder: x509.CertificateBuilder, key, issuer: x509.Name, issuer_key,
          days: int) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    return (builder.issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(issuer_key, hashes.SHA256()))


def _write(path: Path, data: bytes, mode: int) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(d: Path, servers, days: int = 30, extra_dns=()) -> LabPki:
    """A fresh CA and a certificate per server name into `d` (created mode 0700); `extra_dns`:
    more DNS names in every certificate (the in-cluster names, for the sandbox)."""
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("twinsite-lab-nats-ca")
    ca = _sign(x509.CertificateBuilder().subject_name(ca_name)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                            False), critical=True),
               ca_key, ca_name, ca_key, days)
    ca_file = _write(d / "ca.crt", _pem(ca), 0o644)
    _write(d / "ca.key", _pem_key(ca_key), 0o600)
    out = {}
    for name in servers:
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                x509.DNSName(name)] + [x509.DNSName(n) for n in extra_dns]
        cert = _sign(x509.CertificateBuilder().subject_name(_name(name))
                     .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                    critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                                  False, False), critical=True)
                     .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                           ExtendedKeyUsageOID.CLIENT_AUTH]),
                                    critical=False)
                     .add_extension(x509.SubjectAlternativeName(sans), critical=False),
                     key, ca_name, ca_key, days)
        out[name] = ServerCert(_write(d / f"{name}.crt", _pem(cert), 0o644),
                               _write(d / f"{name}.key", _pem_key(key), 0o600))
    return LabPki(ca_file, out)


def secret_data(p: LabPki, server: str) -> dict[str, str]:
    """One server's material in a Kubernetes TLS Secret's layout (tls.crt, tls.key, ca.crt)."""
    cert = p.servers[server]
    return {"tls.crt": Path(cert.cert_file).read_text(), "tls.key": Path(cert.key_file).read_text(),
            "ca.crt": Path(p.ca_file).read_text()}
