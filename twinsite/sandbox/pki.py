"""Certificates and keys of one site's control plane (what kubeadm's `certs` phase makes).

A CA per site, the API server's serving certificate (loopback and the in-cluster names), a client
certificate for the admin user (group system:masters) used by the controllers, kwok and the
kubeconfig, and the service-account signing key pair. ECDSA P-256 throughout: fast to generate.
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

SERVICE_IP = "10.96.0.1"  # first address of --service-cluster-ip-range (no traffic goes there)
DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True)
class SitePki:
    dir: Path

    def __getattr__(self, name: str) -> str:  # ca_crt -> DIR/ca.crt, sa_pub -> DIR/sa.pub
        if name.startswith("_"):
            raise AttributeError(name)
        stem, _, ext = name.rpartition("_")
        return str(self.dir / f"{stem.replace('_', '-')}.{ext}")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject, key, issuer, issuer_key, *, ca=False, sans=(), usage=None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make_site_pki(d: Path, site: str) -> SitePki:
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = _key()
    ca_name = _name(f"twinsite-sandbox-{site}-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write(d / "ca.crt", ca.public_bytes(pem))
    _write(d / "ca.key", _pem_key(ca_key))
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", SERVICE_IP)]
    sans += [x509.DNSName(n) for n in DNS_NAMES]
    srv_key = _key()
    srv = _cert(_name("kube-apiserver"), srv_key, ca_name, ca_key, sans=sans,
                usage=ExtendedKeyUsageOID.SERVER_AUTH)
    _write(d / "apiserver.crt", srv.public_bytes(pem))
    _write(d / "apiserver.key", _pem_key(srv_key))
    adm_key = _key()
    adm = _cert(_name("twinsite-admin", "system:masters"), adm_key, ca_name, ca_key,
                usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(d / "admin.crt", adm.public_bytes(pem))
    _write(d / "admin.key", _pem_key(adm_key))
    sa_key = _key()
    _write(d / "sa.key", _pem_key(sa_key))
    _write(d / "sa.pub", sa_key.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return SitePki(d)
