"""Bearer tokens at the gateway hop, against real gateways on the real 7-server cluster: without a
token, with a wrong or malformed one, nothing is stored and the answer is a 401 JSON; the right
token works; probes, metrics and the API description stay open; no gateway runs without tokens."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid

import httpx
import pytest

from twinsite.talk import auth

WRONG = [
    None,                                   # no header
    "Bearer " + "x" * 43,                   # a wrong token
    "Basic dXNlcjpwYXNz",                   # another scheme
    "Bearer",                               # no credentials
    "{token}x",                             # the token without a scheme
    "Bearer {token}x",                      # one character more
    "Bearer {token_prefix}",                # one character less
]


def room() -> str:
    return "auth-" + uuid.uuid4().hex[:12]


def _headers(value, token):
    if value is None:
        return {}
    return {"Authorization": value.format(token=token, token_prefix=token[:-1])}


def assert_refused(r: httpx.Response, value) -> None:
    assert r.status_code == 401, (value, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["error"] == "unauthorized" and doc["detail"]
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="twinsite"')
    assert ('error="invalid_token"' in challenge) == (value is not None)


@pytest.mark.parametrize("value", WRONG)
def test_refused_sends_store_nothing(shared_gateway, talk_token, auth_headers, value):
    rm = room()
    with httpx.Client(base_url=shared_gateway, timeout=10) as c:
        r = c.post(f"/v1/rooms/{rm}/messages", json={"id": "m1", "sender": "s", "body": "b"},
                   headers=_headers(value, talk_token))
        assert_refused(r, value)
        # read back with the right token: the refused message is not there
        back = c.get(f"/v1/rooms/{rm}/messages", headers=auth_headers)
        assert back.status_code == 200 and back.json() == {"messages": []}
        # and the same id is still free: it stores now, as new (201, not a duplicate's 200)
        ok = c.post(f"/v1/rooms/{rm}/messages", json={"id": "m1", "sender": "s", "body": "b"},
                    headers=auth_headers)
        assert ok.status_code == 201


@pytest.mark.parametrize("value", WRONG)
def test_refused_reads_and_subscribes(shared_gateway, talk_token, auth_headers, value):
    rm = room()
    with httpx.Client(base_url=shared_gateway, timeout=10) as c:
        assert c.post(f"/v1/rooms/{rm}/messages", json={"id": "a", "sender": "s", "body": "b"},
                      headers=auth_headers).status_code == 201
        h = _headers(value, talk_token)
        assert_refused(c.get(f"/v1/rooms/{rm}/messages", headers=h), value)
        assert_refused(c.get(f"/v1/rooms/{rm}/subscribe", params={"max_s": 0.2}, headers=h),
                       value)
        # bad input without a token is a 401 too: nothing about the API is answered first
        assert_refused(c.get("/v1/rooms/bad%20room/messages", headers=h), value)


def test_right_token_works_and_scheme_is_case_insensitive(shared_gateway, talk_token):
    rm = room()
    with httpx.Client(base_url=shared_gateway, timeout=10) as c:
        for i, scheme in enumerate(("Bearer", "bearer", "BEARER")):
            r = c.post(f"/v1/rooms/{rm}/messages", json={"id": f"m{i}", "sender": "s", "body": "b"},
                       headers={"Authorization": f"{scheme} {talk_token}"})
            assert r.status_code == 201, r.text
        r = c.get(f"/v1/rooms/{rm}/subscribe", params={"max_s": 0.3},
                  headers=auth.header(talk_token))
        assert r.status_code == 200 and r.text.count("event: message") == 3


def test_two_authorization_headers_are_refused(shared_gateway, talk_token):
    host, port = shared_gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET /v1/rooms/{room()}/messages HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {talk_token}\r\nAuthorization: Bearer x\r\n"
                     f"Connection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]


def test_refused_before_the_body_is_read(shared_gateway):
    """The fast path's 401 comes while the client still owes the whole body: the check does not
    wait for it (a gateway that read first would hang here until the timeout)."""
    host, port = shared_gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/rooms/{room()}/messages HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n".encode())
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 401"), head[:200]
    assert b"www-authenticate: bearer" in head.lower()


def test_open_endpoints_stay_open(shared_gateway):
    with httpx.Client(base_url=shared_gateway, timeout=10) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        assert "talk_unauthorized_total" in c.get("/metrics").text
        doc = c.get("/openapi.json").json()
    # the description says which operations need the token, and documents their 401
    scheme = doc["components"]["securitySchemes"][auth.SCHEME]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1/"):
                assert op["security"] == [{auth.SCHEME: []}], (method, path)
                assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
            else:
                assert "security" not in op and "401" not in op["responses"], (method, path)
    assert sum(path.startswith("/v1/") for path in doc["paths"]) == 2


def test_gateway_refuses_to_start_without_tokens(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    short = tmp_path / "short"
    short.write_text("abc\n")
    base = [sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site", "pangyo",
            "--nats", "nats://127.0.0.1:1", "--listen", "127.0.0.1:0"]
    env = {k: v for k, v in os.environ.items() if k != auth.ENV_FILE}
    for extra, needle in (([], "no API tokens"), (["--token-file", str(tmp_path / "nope")],
                                                  "No such file"),
                          (["--token-file", str(empty)], "no token in the file"),
                          (["--token-file", str(short)], "at least 16 characters")):
        p = subprocess.run(base + extra, capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 2 and needle in p.stderr, (extra, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_token_file_from_the_environment(start_gateway, tmp_path):
    """$TWINSITE_TALK_TOKEN_FILE instead of --token-file; a two-line file accepts both tokens
    (rotation: the old and the new one)."""
    first, other = auth.generate(), auth.generate()
    f = tmp_path / "two"
    f.write_text(f"{first}\n\n{other}\n")
    base = start_gateway("ansan", token_file=False, env={auth.ENV_FILE: str(f)})
    with httpx.Client(base_url=base, timeout=10) as c:
        for i, t in enumerate((first, other)):
            r = c.post(f"/v1/rooms/{room()}/messages",
                       json={"id": f"e{i}", "sender": "s", "body": "b"}, headers=auth.header(t))
            assert r.status_code == 201, r.text
        assert c.get(f"/v1/rooms/{room()}/messages",
                     headers=auth.header(auth.generate())).status_code == 401


def test_token_files_and_checks():
    t = auth.generate()
    tokens = auth.Tokens.of(t)
    assert tokens.accepts(f"Bearer {t}".encode()) and tokens.accepts(f"bearer  {t}".encode())
    for bad in (None, b"", f"Bearer {t}x".encode(), f"Basic {t}".encode(), t.encode(), b"Bearer "):
        assert not tokens.accepts(bad)
    assert t not in repr(tokens)
    with pytest.raises(auth.TokenError, match="at least 16"):
        auth.Tokens.of("short")
    with pytest.raises(auth.TokenError, match="at least 16"):
        auth.Tokens.of("x" * 20 + " y")


def test_write_is_0600_and_cli_makes_one(tmp_path):
    f = auth.write(tmp_path / "t")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    loose = tmp_path / "loose"
    loose.write_text("old\n")
    os.chmod(loose, 0o644)
    auth.write(loose, "y" * 20)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and auth.read_token(loose) == "y" * 20
    out = tmp_path / "new"
    cmd = [sys.executable, "-m", "twinsite.cli", "talk", "token", str(out)]
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and auth.load(out).digests
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr


def test_drill_targets_find_the_token(tmp_path, monkeypatch):
    """k8s: the secret `talk_token`, else the file of `talk_token_file` / $TWINSITE_TALK_TOKEN_FILE
    (e.g. from `pulumi stack output talkToken --show-secrets`); none: one line."""
    from chaoslib.exceptions import ActivityFailed

    from twinsite.chaos.drivers.k8s import K8sDriver
    monkeypatch.delenv(auth.ENV_FILE, raising=False)
    t = auth.generate()
    assert K8sDriver({"stack": "lab"}, {"talk_token": t}).api_token() == t
    f = auth.write(tmp_path / "tok")
    assert K8sDriver({"stack": "lab", "talk_token_file": str(f)}).api_token() == auth.read_token(f)
    monkeypatch.setenv(auth.ENV_FILE, str(f))
    assert K8sDriver({"stack": "lab"}).api_token() == auth.read_token(f)
    monkeypatch.delenv(auth.ENV_FILE)
    with pytest.raises(ActivityFailed, match="no API token for the gateways"):
        K8sDriver({"stack": "lab"}).api_token()
    with pytest.raises(ActivityFailed, match="at least 16"):
        K8sDriver({"stack": "lab"}, {"talk_token": "short"}).api_token()
