"""Where to send traffic: the client endpoints of the running lab, and its API token."""

from __future__ import annotations


def endpoints_from_lab(status=None) -> dict[str, list[str]]:
    """site -> gateway base URLs. `status` is a lab status dict (its "client_endpoints"), or a lab
    state dir (str/Path) / None to ask the running lab (`twinsite.lab.LabClient`)."""
    if not isinstance(status, dict):
        from twinsite.lab import LabClient
        status = LabClient(status).status()
    raw = status.get("client_endpoints") or {}
    out: dict[str, list[str]] = {}
    for site, urls in raw.items():
        if isinstance(urls, (str, dict)):
            urls = [urls] if isinstance(urls, str) else list(urls.values())
        clean = [_url(u) for u in urls or []]
        clean = [u for u in clean if u]
        if clean:
            out[str(site)] = clean
    return out


def _url(item) -> str | None:
    """A URL from a string or a {"url": ...} entry (the lab's shape is its own business)."""
    if isinstance(item, dict):
        item = item.get("url") or item.get("base_url")
    return str(item).rstrip("/") if item else None


def token_from_lab(status=None) -> str:
    """The lab's gateway API token. `status` as for `endpoints_from_lab`: the status names the
    token file (mode 0600, in the lab's state dir); the token itself never travels in it."""
    from twinsite.talk import auth
    if not isinstance(status, dict):
        from twinsite.lab import LabClient
        return LabClient(status).api_token()
    path = status.get("talk_token_file")
    if not path:
        raise auth.TokenError("the lab's status names no talk_token_file (an older lab?)")
    return auth.read_token(path)
