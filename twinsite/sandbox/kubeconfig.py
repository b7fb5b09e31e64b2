"""Kubeconfig files of the sandbox: one per site (for its controllers) and one with every site."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from .pki import SitePki
from .plan import SitePlan


def _b64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def entries(sp: SitePlan, pki: SitePki) -> tuple[dict, dict, dict]:
    name = sp.context
    cluster = {"name": name, "cluster": {"server": sp.server,
                                         "certificate-authority-data": _b64(pki.ca_crt)}}
    user = {"name": f"{name}-admin", "user": {"client-certificate-data": _b64(pki.admin_crt),
                                              "client-key-data": _b64(pki.admin_key)}}
    ctx = {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}
    return cluster, user, ctx


def document(items: list[tuple[SitePlan, SitePki]]) -> dict:
    clusters, users, contexts = [], [], []
    for sp, pki in items:
        c, u, x = entries(sp, pki)
        clusters.append(c)
        users.append(u)
        contexts.append(x)
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": clusters, "users": users, "contexts": contexts,
            "current-context": contexts[0]["name"] if contexts else ""}


def write(path: Path, items: list[tuple[SitePlan, SitePki]]) -> Path:
    path.write_text(yaml.safe_dump(document(items), sort_keys=False))
    path.chmod(0o600)
    return path
