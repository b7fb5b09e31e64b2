"""Every NATS hop is authenticated and encrypted: real nats-server processes with the lab's users,
route credentials and TLS (twinsite/lab/credentials.py), a real gateway with its own user.

Refused: a client without credentials, with a wrong password, or in plain TCP; a route without
(or with wrong) credentials; the gateway user doing what only the operations user may (stream
delete, stepdown of a stream not its own, meta stepdown, reading others' replies); the operations
user writing rooms. Nothing a refused client sent is stored (the stream's message count).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from twinsite import capacity, natsconf, procs, shards, topology
from twinsite.lab import credentials
from twinsite.natscluster import LocalNatsCluster
from twinsite.natsclient import NatsAuth

ROOT = Path(__file__).resolve().parent.parent
CHECK = "AUTHCHECK"  # a stream of the operations user, over a room subject of shard 99
CHECK_SUBJECT = "talk.room.99.auth"
INTRUDER = "intruder"  # a server with a certificate of the lab's CA but no route credentials


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    topo = topology.load_stack("lab", root=ROOT)
    d = tmp_path_factory.mktemp("secure-nats")
    creds = credentials.create(d, [z.name for z in topo.zones] + [INTRUDER])
    streams = [shards.stream_name(i) for i in range(capacity.lab_shard_count(topo))]
    cluster = LocalNatsCluster(topo, d / "nats", security=creds.security(streams))
    cluster.start(timeout=90)
    try:
        run(_create_check_stream(cluster, creds))
        yield topo, cluster, creds
    finally:
        cluster.stop()


def run(coro):
    return asyncio.run(coro)


async def _create_check_stream(cluster, creds):
    nc = await nats.connect(cluster.client_urls(), **creds.auth("ops").options())
    try:
        js = nc.jetstream(timeout=5)
        for _ in range(50):  # the meta leader may still be settling
            try:
                await js.add_stream(name=CHECK, subjects=[CHECK_SUBJECT], num_replicas=3)
                return
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.2)
        raise AssertionError("could not create the check stream")
    finally:
        await nc.close()


def check_stream(cluster, creds):
    """The check stream's info, read as the ops user."""
    async def go():
        nc = await nats.connect(cluster.client_urls(), **creds.auth("ops").options())
        try:
            return await nc.jetstream(timeout=5).stream_info(CHECK)
        finally:
            await nc.close()
    return run(go())


def stored(cluster, creds) -> int:
    return check_stream(cluster, creds).state.messages


async def _connect_refused(url: str, **opts) -> str:
    errors: list[str] = []

    async def on_error(e):
        errors.append(str(e))
    try:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                connect_timeout=3, error_cb=on_error, **opts)
    except Exception as e:  # noqa: BLE001 - nats-py raises various types for a refusal
        return f"{type(e).__name__}: {e} {' '.join(errors)}"
    await nc.close()
    raise AssertionError("the server accepted the connection")


def violations(cluster) -> list[str]:
    return [ln for n in cluster.nodes.values() if n.log_path.exists()
            for ln in n.log_path.read_text(errors="replace").splitlines()
            if "Permissions Violation" in ln]


def test_credentials_files_are_private_and_certificates_fit(secure):
    _, cluster, creds = secure
    assert creds.dir.stat().st_mode & 0o777 == 0o700
    for role in credentials.ROLES:
        assert creds.password_file(role).stat().st_mode & 0o777 == 0o600
    for zone, cert in creds.pki.servers.items():
        assert Path(cert.key_file).stat().st_mode & 0o777 == 0o600
        c = x509.load_pem_x509_certificate(Path(cert.cert_file).read_bytes())
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert zone in san.get_values_for_type(x509.DNSName)
        assert "127.0.0.1" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    for n in cluster.nodes.values():  # client passwords only as bcrypt hashes; configs private
        text = n.config_path.read_text()
        assert creds.passwords["gateway"] not in text and creds.passwords["ops"] not in text
        assert "$2b$" in text and n.config_path.stat().st_mode & 0o777 == 0o600


def test_clients_without_credentials_wrong_password_or_plain_tcp_are_refused(secure):
    _, cluster, creds = secure
    url = cluster.nodes["pangyo-a"].client_url
    tls = creds.auth("ops").tls_context()
    before = stored(cluster, creds)
    assert "Authorization Violation" in run(_connect_refused(url, tls=tls))
    assert "Authorization Violation" in run(_connect_refused(
        url, tls=tls, user="gateway", password="not-" + creds.passwords["gateway"]))
    assert "Authorization Violation" in run(_connect_refused(  # a route's password is no client's
        url, tls=tls, user="route", password=creds.passwords["route"]))
    assert "ssl" in run(_connect_refused(  # nats-py itself will not speak plain to a TLS server
        url, user="gateway", password=creds.passwords["gateway"])).lower()
    # A plain-TCP client that ignores `tls_required` and writes anyway: cut off, nothing stored.
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        info = json.loads(s.makefile("rb").readline().split(b" ", 1)[1])
        assert info["tls_required"] is True and info["auth_required"] is True
        connect = {"user": "gateway", "pass": creds.passwords["gateway"], "verbose": False,
                   "headers": True}
        s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                  + f"PUB {CHECK_SUBJECT} 5\r\nplain\r\nPING\r\n".encode())
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        assert b"PONG" not in got, got
    assert stored(cluster, creds) == before


def test_a_write_with_the_right_credentials_is_stored(secure):
    """The control for the refusals: the same publish, authenticated over TLS, is stored."""
    _, cluster, creds = secure
    before = stored(cluster, creds)

    async def go():
        nc = await nats.connect(cluster.nodes["ansan-a"].client_url,
                                inbox_prefix=natsconf.GATEWAY_INBOX,
                                **creds.auth("gateway").options())
        try:
            ack = json.loads((await nc.request(CHECK_SUBJECT, b"ok", timeout=5)).data)
            assert ack.get("stream") == CHECK, ack
        finally:
            await nc.close()
    run(go())
    assert stored(cluster, creds) == before + 1


async def _attempt(nc, errors, subject: str, *, sub: bool = False) -> None:
    def refused() -> bool:
        return any(subject.lower() in e.lower() for e in errors)  # nats-py lowercases the error

    if sub:
        await nc.subscribe(subject)
    else:
        # A refused request is never answered: it would only time out (1 s). Stop waiting for
        # the answer once the server's refusal is in; an answer (not refused) ends it too.
        request = asyncio.ensure_future(nc.request(subject, b"{}", timeout=1))
        while not request.done() and not refused():
            await asyncio.wait({request}, timeout=0.02)
        request.cancel()
        try:
            await request
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                asyncio.CancelledError):
            pass
    await nc.flush()
    for _ in range(50):
        if refused():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no permissions violation for {subject}: {errors}")


@pytest.mark.parametrize("role,subject,sub", [
    ("gateway", f"$JS.API.STREAM.DELETE.{shards.stream_name(0)}", False),
    ("gateway", f"$JS.API.STREAM.PURGE.{shards.stream_name(0)}", False),
    ("gateway", f"$JS.API.STREAM.LEADER.STEPDOWN.{CHECK}", False),
    ("gateway", "$JS.API.META.LEADER.STEPDOWN", False),
    ("gateway", f"$JS.API.STREAM.CREATE.{CHECK}2", False),
    ("gateway", "_lab.probe", False),
    ("gateway", "_INBOX.>", True),  # the operations user's replies are not the gateway's
    ("ops", CHECK_SUBJECT, False),  # only gateways write rooms
])
def test_each_role_is_refused_what_it_does_not_need(secure, role, subject, sub):
    _, cluster, creds = secure
    before = stored(cluster, creds)
    errors: list[str] = []

    async def on_error(e):
        errors.append(str(e))

    async def go():
        nc = await nats.connect(cluster.nodes["pangyo-b"].client_url, error_cb=on_error,
                                inbox_prefix=natsconf.GATEWAY_INBOX if role == "gateway"
                                else "_INBOX", **creds.auth(role).options())
        try:
            await _attempt(nc, errors, subject, sub=sub)
        finally:
            await nc.close()
    run(go())
    assert any("permissions violation" in e.lower() for e in errors), errors
    assert stored(cluster, creds) == before
    assert check_stream(cluster, creds).config.name == CHECK  # the delete / purge did not happen


@pytest.mark.parametrize("route_password", [None, "wrong"])
def test_a_route_without_the_route_credentials_is_refused(secure, tmp_path, route_password):
    topo, cluster, creds = secure
    target = cluster.nodes["witness-a"]
    client_port, cluster_port, http_port = procs.free_ports(3)
    cert = creds.pki.servers[INTRUDER]
    plan = natsconf.ServerPlan(
        zone="witness-a", server_name=INTRUDER, client_listen=f"127.0.0.1:{client_port}",
        cluster_listen=f"127.0.0.1:{cluster_port}", http_listen=f"127.0.0.1:{http_port}",
        store_dir=str(tmp_path / "js"), routes=(f"127.0.0.1:{target.cluster_port}",),
        security=natsconf.Security(
            users=(), route_password="x", route_url_password=route_password or "x",
            tls=natsconf.Tls(cert.cert_file, cert.key_file, creds.pki.ca_file)))
    doc = natsconf.server_document(topo, plan)
    if route_password is None:  # no userinfo at all in the route URL
        doc["cluster"]["routes"] = [f"nats-route://127.0.0.1:{target.cluster_port}"]
    conf = tmp_path / "intruder.conf"
    conf.write_text(natsconf.render(doc))
    log = tmp_path / "intruder.log"
    seen = len(target.log_path.read_text(errors="replace"))
    p = procs.spawn([procs.nats_server_binary(), "-c", str(conf)], log=log)
    try:
        procs.wait_until(lambda: "Router connection closed: Authentication Failure" in
                         target.log_path.read_text(errors="replace")[seen:], 30,
                         what="the witness to refuse the intruder's route")
        routez = target.monitor("/routez")
        assert INTRUDER not in {r.get("remote_name") for r in routez["routes"]}
        with __import__("urllib.request").request.urlopen(
                f"http://127.0.0.1:{http_port}/routez", timeout=2) as r:
            assert json.loads(r.read())["num_routes"] == 0
    finally:
        procs.reap(p)


def test_the_gateway_serves_with_its_user_and_violates_nothing(secure, start_gateway, tmp_path,
                                                               auth_headers):
    topo, cluster, creds = secure
    own = cluster.client_urls("pangyo")
    urls = own + [u for u in cluster.client_urls() if u not in own]
    base = start_gateway("pangyo", urls, extra_args=(
        "--nats-user", "gateway", "--nats-password-file", str(creds.password_file("gateway")),
        "--nats-ca", creds.pki.ca_file))
    import httpx
    r = httpx.post(f"{base}/v1/rooms/authroom/messages",
                   json={"id": "m1", "sender": "s", "body": "over TLS"}, headers=auth_headers,
                   timeout=10)
    assert r.status_code == 201, r.text
    got = httpx.get(f"{base}/v1/rooms/authroom/messages?after=0", headers=auth_headers,
                    timeout=10).json()
    assert [m["body"] for m in got["messages"]] == ["over TLS"]
    with httpx.stream("GET", f"{base}/v1/rooms/authroom/subscribe?after=0", headers=auth_headers,
                      timeout=10) as s:
        for line in s.iter_lines():  # the SSE path subscribes to the room subject
            if line.startswith("data:"):
                assert "over TLS" in line
                break
    argv = Path(f"/proc/{start_gateway.procs[base].pid}/cmdline").read_bytes().decode()
    assert creds.passwords["gateway"] not in argv  # a file path, never the password
    assert violations(cluster) == []


def test_talk_serve_without_a_password_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site", "pangyo",
                        "--nats", "nats://127.0.0.1:1", "--listen", "127.0.0.1:0",
                        "--nats-user", "gateway"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "TWINSITE_NATS_PASSWORD" in r.stderr


def test_tls_context_verifies_the_lab_ca(secure):
    _, _, creds = secure
    ctx = NatsAuth("ops", "x", creds.pki.ca_file).tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
