"""The lab on real processes: one shared lab per module, restored between fault tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from twinsite import lab as labapi
from twinsite import capacity, procs, shards, topology
from twinsite.faults import (Heal, LinkPartition, LinkShape, Restore, SitePowerLoss,
                             ZoneOutage)
from twinsite.lab import LabClient, LabError, state
from twinsite.talk import auth
from twinsite.workload import token_from_lab

ROOT = Path(__file__).resolve().parent.parent
LAB_DIR: list[str] = []  # the module's lab (set by the `lab` fixture), for post_message's token


def cli(*args: str, state_dir: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinsite.cli", "lab", "--state-dir",
                           str(state_dir), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def monitor(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=2) as r:
        return json.loads(r.read())


def nodes(st: dict, kind: str | None = None, site: str | None = None) -> list[dict]:
    return [n for n in st["nodes"] if (kind is None or n["kind"] == kind)
            and (site is None or n["site"] == site)]


def post_message(base: str, token: str | None = None, timeout: float = 3.0) -> int:
    """POST one message through a client endpoint (with the running lab's API token unless
    given; "" sends none); the HTTP status, or 0 on a network error."""
    if token is None:
        token = token_from_lab(LabClient(LAB_DIR[0]).status())
    body = json.dumps({"id": uuid.uuid4().hex, "sender": "t", "body": "hi"}).encode()
    headers = {"Content-Type": "application/json", **(auth.header(token) if token else {})}
    req = urllib.request.Request(base + "/v1/rooms/lab-test/messages", data=body, method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def raw_get(base: str, timeout: float) -> bytes:
    """A raw HTTP GET /readyz; raises what the network does (timeout, reset, refusal)."""
    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(100)


def stream_state(monitor_url: str, stream: str) -> dict | None:
    doc = monitor(monitor_url, "/jsz?streams=true")
    for acc in doc.get("account_details", []) or []:
        for s in acc.get("stream_detail", []) or []:
            if s["name"] == stream:
                return s
    return None


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lab") / "state"


@pytest.fixture(scope="module")
def lab(lab_dir):
    t0 = time.monotonic()
    client = labapi.up(state_dir=str(lab_dir), timeout=90, die_with_parent=True)
    print(f"lab up in {time.monotonic() - t0:.1f}s")
    LAB_DIR[:] = [str(lab_dir)]
    try:
        yield client
    finally:
        labapi.down(str(lab_dir))
        LAB_DIR.clear()


def test_status_describes_the_topology(lab, lab_dir):
    st = lab.status()
    assert st["stack"] == "lab" and st["ready"] is True
    assert [(s["name"], s["role"]) for s in st["sites"]] == [
        ("pangyo", "primary"), ("ansan", "primary"), ("witness", "tiebreaker")]
    assert len(nodes(st, "nats")) == 7 and len(nodes(st, "gateway")) == 4
    assert all(n["state"] == "up" and procs.pid_alive(n["pid"]) for n in st["nodes"])
    assert all(n["monitor_url"].startswith("http://127.0.0.1:") for n in nodes(st, "nats"))
    assert len(st["links"]) == 21 and all(ln["state"] == "ok" for ln in st["links"])
    inter = [ln for ln in st["links"] if {ln["a"][:6], ln["b"][:5]} == {"pangyo", "ansan"}
             or {ln["a"][:5], ln["b"][:6]} == {"ansan", "pangyo"}]
    assert inter and all(ln["latency_ms"] == 2 for ln in inter)
    assert sorted(st["client_endpoints"]) == ["ansan", "pangyo"]
    for site, urls in st["client_endpoints"].items():
        assert len(urls) == 2
        assert all(post_message(u) == 201 for u in urls)  # clients reach JetStream via the edge
    assert labapi.is_running(str(lab_dir))
    # no route bypasses the fabric: nobody dialled a server's own cluster port (pooled and
    # gossiped routes included)
    cluster_ports = {n["cluster_port"] for n in nodes(st, "nats")}
    for n in nodes(st, "nats"):
        routes = monitor(n["monitor_url"], "/routez")["routes"]
        assert len({r["remote_name"] for r in routes}) == 6, n["name"]
        direct = [r for r in routes if r["did_solicit"] and r["port"] in cluster_ports]
        assert not direct, (n["name"], direct)

    r = cli("status", "--json", state_dir=lab_dir)
    assert r.returncode == 0 and json.loads(r.stdout)["client_endpoints"] == st["client_endpoints"]


def test_the_lab_has_its_own_api_token(lab, lab_dir):
    """One token per lab, 0600 in the state dir; no gateway has the token on its command line or
    in its environment; a client without it or with another is refused (401)."""
    st = lab.status()
    f = Path(st["talk_token_file"])
    assert f.parent == Path(lab_dir).resolve() and (f.stat().st_mode & 0o777) == 0o600
    token = auth.read_token(f)
    for gw in nodes(st, "gateway"):
        argv = Path(f"/proc/{gw['pid']}/cmdline").read_bytes().split(b"\0")
        assert token.encode() not in b" ".join(argv)
        assert token.encode() not in Path(f"/proc/{gw['pid']}/environ").read_bytes()
    url = st["client_endpoints"]["pangyo"][0]
    assert post_message(url, token="") == 401
    assert post_message(url, token=auth.generate()) == 401
    assert post_message(url, token=token) == 201
    r = cli("up", state_dir=lab_dir)
    assert r.returncode == 0 and "already up" in r.stdout and "gw-pangyo-a" in r.stdout


def test_every_server_configures_every_route_and_expects_the_whole_meta_group(lab):
    """Only one side of each pair dials at boot, but every server has all six routes configured
    (nats-server sizes a fresh meta group from them: fewer would let it elect with too few
    votes), and after the boot every server counts all seven members and the same leader."""
    st = lab.status()
    leaders = set()
    for n in nodes(st, "nats"):
        assert len(monitor(n["monitor_url"], "/varz")["cluster"]["urls"]) == 6, n["name"]
        g = monitor(n["monitor_url"], "/raftz?group=_meta_")["$SYS"]["_meta_"]
        assert g["size"] == 7 and len(g["peers"]) == 6, (n["name"], g)
        meta = monitor(n["monitor_url"], "/jsz")["meta_cluster"]
        assert meta["cluster_size"] == 7, (n["name"], meta)
        leaders.add(meta.get("leader"))
    assert len(leaders) == 1 and None not in leaders


def test_status_shows_every_shards_leader_split_over_the_primary_sites(lab, lab_dir):
    """The gateways' balancer leads shard i from primary site i mod 2; status shows it, none in the
    witness."""
    topo = topology.load_stack("lab")
    n = capacity.lab_shard_count(topo)

    def balanced() -> bool:
        sh = lab.status(shards=True)["shards"]
        return len(sh) == n and all(s["site"] == s["preferred"] for s in sh.values())
    procs.wait_until(balanced, 60, interval=0.5, what="every shard led by its preferred site")
    sh = lab.status(shards=True)["shards"]
    assert sorted(sh) == [shards.stream_name(i) for i in range(n)]
    assert {s["site"] for s in sh.values()} == {"pangyo", "ansan"}
    out = cli("status", state_dir=lab_dir).stdout
    assert f"shards: {n}; leaders ansan {n // 2}, pangyo {n // 2}" in out
    doc = json.loads(cli("status", "--json", state_dir=lab_dir).stdout)
    assert doc["shards"]["TALK-01"]["site"] == "ansan"


@pytest.mark.parametrize("args", [
    ("fault", "kill-zone", "mars-a"), ("fault", "partition", "pangyo", "moon"),
    ("fault", "restore", "nowhere"), ("fault", "throttle", "pangyo", "x", "5"),
    ("fault", "heal", "pangyo")])
def test_bad_names_are_one_line_exit_2(lab, lab_dir, args):
    r = cli(*args, state_dir=lab_dir)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    if args[1] != "heal":
        assert "pangyo-a" in lines[0] and "witness" in lines[0]  # lists the valid names


def cross_site_rtt_ms(st: dict, src_zone: str, dst_zone: str, n: int = 5) -> float:
    """The best of `n` NATS request/reply round trips from a client on `src_zone`'s server to a
    responder on `dst_zone`'s server: the messages cross the route between them."""
    import asyncio

    import nats

    from twinsite.lab.credentials import client_auth

    url = {x["zone"]: x["url"] for x in nodes(st, "nats")}
    auth = client_auth(st).options()  # the lab's operations user, over TLS

    async def measure() -> float:
        a = await nats.connect(url[src_zone], **auth)
        b = await nats.connect(url[dst_zone], **auth)
        try:
            subject = f"_lab.rtt.{uuid.uuid4().hex}"

            async def echo(msg):
                await msg.respond(msg.data)
            await b.subscribe(subject, cb=echo)
            await b.flush()
            deadline = time.monotonic() + 10
            best = None
            while time.monotonic() < deadline:
                t = time.monotonic()
                try:
                    await a.request(subject, b"x", timeout=2)
                except Exception:  # noqa: BLE001 - interest not yet propagated: retry
                    continue
                dt = (time.monotonic() - t) * 1000
                best = dt if best is None else min(best, dt)
                n_left[0] -= 1
                if n_left[0] <= 0:
                    break
            return best if best is not None else -1.0
        finally:
            await a.close()
            await b.close()

    n_left = [n]
    return asyncio.run(measure())


def test_throttle_raises_cross_site_rtt_and_heal_restores(lab):
    st = lab.status()
    base = cross_site_rtt_ms(st, "pangyo-a", "ansan-a")
    assert 0 <= base < 40, base
    res = lab.apply(LinkShape("pangyo", "ansan", latency_ms=40))
    assert "ansan-a~pangyo-a" in res["shaped"] and len(res["shaped"]) == 9
    throttled = [ln for ln in lab.status()["links"] if ln["state"] == "throttled"]
    assert len(throttled) == 9 and all(ln["latency_ms"] == 40 for ln in throttled)
    rtt = cross_site_rtt_ms(st, "pangyo-a", "ansan-a")
    assert rtt >= 40 * 2, rtt  # the request and the reply each cross the link once
    assert cross_site_rtt_ms(st, "pangyo-a", "witness-a") < 40  # other links untouched
    lab.apply(Heal("pangyo", "ansan"))
    assert all(ln["state"] == "ok" for ln in lab.status()["links"])
    assert cross_site_rtt_ms(st, "pangyo-a", "ansan-a") < 40


def test_partition_shows_in_status_and_heals(lab):
    res = lab.apply(LinkPartition("witness", "pangyo-b"))
    assert res["cut"] == ["pangyo-b~witness-a"]
    links = {(ln["a"], ln["b"]): ln["state"] for ln in lab.status()["links"]}
    assert links[("pangyo-b", "witness-a")] == "partitioned"
    assert list(links.values()).count("partitioned") == 1
    lab.apply(Heal())
    assert all(ln["state"] == "ok" for ln in lab.status()["links"])


def test_power_cut_times_out_clients_and_the_other_site_takes_over(lab):
    before = lab.status()
    victims = nodes(before, site="pangyo")
    res = lab.apply(SitePowerLoss("pangyo"))
    assert set(res["effect"]["zones"]) == {"pangyo-a", "pangyo-b", "pangyo-c"}
    assert {"pangyo-a", "pangyo-b", "pangyo-c"} <= set(res["killed"]) and res["silenced"]
    st = lab.status()
    assert all(n["state"] == "down" for n in nodes(st, site="pangyo"))
    for n in victims:
        assert not procs.pid_alive(n["pid"]), n["name"]
    assert {ln["state"] for ln in st["links"] if "pangyo" in ln["a"] + ln["b"]} == {"down"}
    # a powered-off site does not refuse or reset: its clients just hear nothing
    for url in st["client_endpoints"]["pangyo"]:
        with pytest.raises(socket.timeout):
            raw_get(url, timeout=1.0)
    # writes through the other site resume once the stream leader is re-elected
    t0 = time.monotonic()
    ansan = st["client_endpoints"]["ansan"][0]
    procs.wait_until(lambda: post_message(ansan) == 201, 45, interval=0.2,
                     what="a write through ansan after the power cut")
    print(f"writes resumed {time.monotonic() - t0:.1f}s after the power cut")
    for _ in range(5):
        assert post_message(ansan) == 201

    res = lab.apply(Restore("pangyo"))
    assert set(res["started"]) == {"pangyo-a", "pangyo-b", "pangyo-c"}
    st = lab.status()
    assert all(n["state"] == "up" and procs.pid_alive(n["pid"]) for n in st["nodes"])
    assert all(ln["state"] == "ok" for ln in st["links"])
    # the restored replicas caught up: the shard of the room written to is held by 3 nodes (one
    # per site) to the same last seq
    shard = shards.stream_of("lab-test", capacity.lab_shard_count(topology.load_stack("lab")))
    seqs = {n["zone"]: (stream_state(n["monitor_url"], shard) or {}).get("state", {})
            .get("last_seq") for n in nodes(st, "nats")}
    holders = {z: s for z, s in seqs.items() if s is not None}
    assert len(holders) == 3 and len(set(holders.values())) == 1, seqs
    assert any(z.startswith("pangyo") for z in holders), seqs
    assert all(post_message(u) == 201 for u in st["client_endpoints"]["pangyo"])


def test_crash_mode_gives_resets_and_restore_brings_it_back(lab):
    st = lab.status()
    gw = next(n for n in nodes(st, "gateway") if n["zone"] == "ansan-b")
    res = lab.apply(ZoneOutage("ansan-b", mode="crash"))
    assert res["silenced"] == []
    assert set(res["killed"]) == {"ansan-b", gw["name"]}
    assert not procs.pid_alive(gw["pid"])
    links = [ln for ln in lab.status()["links"] if "ansan-b" in (ln["a"], ln["b"])]
    assert all(ln["state"] == "ok" for ln in links)  # a crash is not an outage of the links
    t0 = time.monotonic()
    with pytest.raises((ConnectionResetError, BrokenPipeError, ConnectionRefusedError)):
        if raw_get(gw["client_url"], timeout=5.0) == b"":
            raise ConnectionResetError("closed")
    assert time.monotonic() - t0 < 2.0  # answered at once, unlike a power loss
    lab.apply(Restore("ansan-b"))
    st = lab.status()
    assert all(n["state"] == "up" for n in st["nodes"])
    assert post_message(gw["client_url"]) == 201


def test_bad_faults_are_one_line_lab_errors(lab):
    from twinsite.lab.client import _call
    with pytest.raises(LabError, match="unknown site 'ansan-a'"):
        lab.apply(SitePowerLoss("ansan-a"))
    with pytest.raises(LabError, match="no link"):
        lab.apply(LinkPartition("ansan-a", "ansan-a"))
    # the wire format is checked by the supervisor too (another client, the same rules)
    with pytest.raises(LabError, match="mode must be one of power, crash"):
        _call(lab.api, "POST", "/op/apply", {"fault": {"kind": "kill-zone", "zone": "ansan-a",
                                                       "mode": "meteor"}})
    with pytest.raises(LabError, match="unknown fault kind 'flood'"):
        _call(lab.api, "POST", "/op/apply", {"fault": {"kind": "flood"}})
    with pytest.raises(LabError, match="unknown operation"):
        _call(lab.api, "POST", "/op/kill_zone", {"zone": "ansan-a"})
    assert all(n["state"] == "up" for n in lab.status()["nodes"])  # nothing was touched


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (the gateways' forkserver, its forks, helpers...)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.update(kids)
        todo.extend(kids)
    return out


def test_supervisor_death_takes_everything_and_down_cleans_up(lab, lab_dir):
    st = lab.status()
    sup = st["supervisor_pid"]
    pids = [n["pid"] for n in st["nodes"]]
    everyone = descendants(sup)
    assert set(pids) <= everyone and len(everyone) > len(pids)  # + forkserver, resource tracker
    os.kill(sup, signal.SIGKILL)  # a crashed supervisor
    procs.wait_until(lambda: not any(procs.pid_alive(p) for p in everyone | {sup}), 10,
                     what="every descendant to die with the supervisor")
    assert (lab_dir / state.STATE_FILE).exists()  # stale state is left behind...
    assert not labapi.is_running(str(lab_dir))
    with pytest.raises(LabError, match="no lab is running"):
        LabClient(str(lab_dir))
    labapi.down(str(lab_dir))  # ...and down cleans it (idempotent)
    labapi.down(str(lab_dir))
    assert not (lab_dir / state.STATE_FILE).exists()
    assert not (lab_dir / auth.LAB_TOKEN_FILE).exists()  # a dead lab's token does not linger


def test_cli_up_over_stale_state_then_down_leaves_nothing(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    # a stale state file from a supervisor that no longer exists
    state.write_json(d / state.STATE_FILE, {"supervisor": {"pid": 2 ** 22 + 7, "start": 1},
                                            "api": "http://127.0.0.1:9", "children": {}})
    try:
        t0 = time.monotonic()
        r = cli("up", state_dir=d)
        assert r.returncode == 0, r.stderr
        print(f"cli lab up in {time.monotonic() - t0:.1f}s")
        assert "clients of pangyo: http://127.0.0.1:" in r.stdout
        st = LabClient(str(d)).status()
        pids = descendants(st["supervisor_pid"]) | {st["supervisor_pid"]}
        r = cli("down", state_dir=d)
        assert r.returncode == 0 and "down" in r.stdout
        assert not [p for p in pids if procs.pid_alive(p)]  # gone when `down` returns
        r = cli("down", state_dir=d)
        assert r.returncode == 0
        r = cli("status", state_dir=d)
        assert r.returncode == 2 and "no lab is running" in r.stderr
    finally:
        labapi.down(str(d))

