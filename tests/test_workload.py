"""The traffic driver against real gateways on a real JetStream cluster, with and without faults,
judged by the checker; plus its behaviour against endpoints that refuse or never answer."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid

import pytest

from twinsite import procs
from twinsite.faults import Restore, SitePowerLoss
from twinsite.checker import anomalies, check
from twinsite.history import HistoryWriter, read_history
from twinsite.talk import auth
from twinsite.workload import (BackgroundTraffic, DriverConfig, TrafficDriver,
                               endpoints_from_lab, token_from_lab)
from twinsite.workload.cli import main as traffic_main, parse_endpoints

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


# --- pure bits -----------------------------------------------------------------------------------


def test_endpoints_from_lab_status_shapes():
    assert endpoints_from_lab({"client_endpoints": {"pangyo": ["http://a:1/", "http://b:2"],
                                                    "ansan": "http://c:3",
                                                    "witness": []}}) == \
        {"pangyo": ["http://a:1", "http://b:2"], "ansan": ["http://c:3"]}
    assert endpoints_from_lab({"client_endpoints": {"p": {"p-a": "http://a:1"},
                                                    "q": [{"url": "http://q:1"}]}}) == \
        {"p": ["http://a:1"], "q": ["http://q:1"]}
    assert endpoints_from_lab({}) == {}


def test_config_and_cli_reject_bad_input(capsys):
    with pytest.raises(ValueError, match="no client endpoints"):
        DriverConfig(endpoints={}, rate=10, rooms=1).validate()
    with pytest.raises(ValueError, match="rate"):
        DriverConfig(endpoints={"a": ["http://x"]}, rate=0, rooms=1, token="t" * 20).validate()
    with pytest.raises(ValueError, match="no API token"):
        DriverConfig(endpoints={"a": ["http://x"]}, rate=1, rooms=1).validate()
    secret = auth.generate()
    assert secret not in repr(DriverConfig(endpoints={"a": ["http://x"]}, rate=1, rooms=1,
                                           token=secret))
    assert parse_endpoints(["a=http://x:1/", "a=http://y:2"]) == {"a": ["http://x:1", "http://y:2"]}
    with pytest.raises(ValueError, match="SITE=http"):
        parse_endpoints(["nourl"])
    assert traffic_main(["run", "--duration", "1", "--rate", "5", "--history", "/tmp/never.jsonl",
                         "--endpoint", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SITE=http" in err
    assert traffic_main(["run", "--duration", "0", "--rate", "5", "--history", "x",
                         "--endpoint", "a=http://127.0.0.1:1"]) == 2


# --- against endpoints that refuse or never answer (no cluster needed) --------------------------


def test_refused_and_silent_endpoints_are_recorded_as_fail_info_and_overload(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts connections (kernel backlog) and never answers: a silent site
    refused_port = procs.free_port()  # nothing listens: connection refused
    try:
        cfg = DriverConfig(endpoints={"a": [f"http://127.0.0.1:{silent.getsockname()[1]}"],
                                      "b": [f"http://127.0.0.1:{refused_port}"]},
                           rate=40, rooms=2, subscribers=1, request_timeout_s=0.3,
                           max_in_flight=3, settle_s=0, final_read_timeout_s=1,
                           message_deadline_s=1.0, token=auth.generate())
        h = HistoryWriter(tmp_path / "h.jsonl")
        driver = TrafficDriver(cfg, h)
        t0 = time.monotonic()
        asyncio.run(driver.run(1.0))
        h.close()
        assert time.monotonic() - t0 < 15  # deadlines bound the run even when nothing answers
    finally:
        silent.close()
    events = read_history(tmp_path / "h.jsonl")
    sends = [e for e in events if e.get("f") == "send"]
    errors = {e["error"] for e in sends if e["type"] in ("fail", "info")}
    assert "client-overload" in errors and "timeout" in errors and "connection refused" in errors
    assert not any(e["type"] == "ok" for e in sends)
    # the same id was retried on the other site
    by_id: dict[str, set] = {}
    for e in sends:
        if e["type"] == "invoke":
            by_id.setdefault(e["id"], set()).add(e["site"])
    assert any(sites == {"a", "b"} for sites in by_id.values())
    assert [e["type"] for e in events if e.get("f") == "final-read"] == ["fail", "fail"]
    v = check(events)
    assert v["acked"] == 0 and v["attempted"] == 40 and v["failed"] + v["indeterminate"] == 40
    assert anomalies(v) == ["unread_rooms"] and v["unread_rooms"] == 2
    assert driver.stats.overload > 0 and driver.stats.scheduled == 40


def test_one_slow_old_request_does_not_send_a_healthy_sites_traffic_to_a_dead_one(tmp_path):
    """The site-power-cut finding: one write to the home site, sent just before the fire, timed
    out after newer writes there had succeeded; the driver then sent 1.5 s of the room's writes
    to the dead site (each waiting out its timeout) and the room stalled 1.6 s. A failure of an
    attempt older than a success at the same site is stale and must not make the site suspect."""
    from aiohttp import web

    first = asyncio.Event()

    async def post(request):  # home: the first write hangs past the client's timeout, the rest
        if not first.is_set():  # are acknowledged at once
            first.set()
            await asyncio.sleep(1.0)
        return web.json_response({"seq": 1}, status=201)

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the burning site: accepts and never answers

    async def scenario():
        app = web.Application()
        app.router.add_post("/v1/rooms/{room}/messages", post)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        home = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            cfg = DriverConfig(endpoints={"a": [home],
                                          "b": [f"http://127.0.0.1:{silent.getsockname()[1]}"]},
                               rate=20, rooms=1, subscribers=0, request_timeout_s=0.4,
                               max_in_flight=20, settle_s=0, final_read_timeout_s=1,
                               message_deadline_s=3.0, token=auth.generate())
            h = HistoryWriter(tmp_path / "h.jsonl")
            await TrafficDriver(cfg, h).run(1.5)
            h.close()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(scenario())
    finally:
        silent.close()
    sends = [e for e in read_history(tmp_path / "h.jsonl") if e.get("f") == "send"]
    slow = sends[0]["id"]
    assert [e["error"] for e in sends if e["type"] == "info"][:1] == ["timeout"]
    assert {e["id"] for e in sends if e["type"] == "info" and e["site"] == "a"} == {slow}
    # only the slow write itself was retried on the dead site; every other write stayed home
    to_dead = {e["id"] for e in sends if e["type"] == "invoke" and e["site"] == "b"}
    assert to_dead <= {slow}, f"{len(to_dead)} writes sent to the silent site"
    acked = {e["id"] for e in sends if e["type"] == "ok"}
    assert len(acked) >= 25  # 30 due; the run is not just the slow one


# --- against real gateways ------------------------------------------------------------------------


@pytest.fixture
def two_sites(nats_cluster, start_gateway):
    """A gateway per primary site, this test's own (it may kill them)."""
    return {"pangyo": [start_gateway("pangyo", cluster=nats_cluster)],
            "ansan": [start_gateway("ansan", cluster=nats_cluster)]}


@pytest.fixture(scope="module")
def shared_two_sites(request, tmp_path_factory, nats_cluster):
    """A gateway per primary site shared by the module's tests that only send and read through
    them (each with its own run id, so its rooms are its own); do not stop them."""
    from conftest import GatewayStarter
    starter = GatewayStarter(request, tmp_path_factory.mktemp("two-sites"))
    try:
        yield {"pangyo": [starter("pangyo", cluster=nats_cluster)],
               "ansan": [starter("ansan", cluster=nats_cluster)]}
    finally:
        starter.reap_all()


def test_driver_against_real_gateways_is_clean(shared_two_sites, talk_token, tmp_path):
    cfg = DriverConfig(endpoints=shared_two_sites, rate=60, rooms=4, subscribers=2, settle_s=0.5,
                       token=talk_token)
    h = HistoryWriter(tmp_path / "h.jsonl")
    driver = TrafficDriver(cfg, h)
    asyncio.run(driver.run(3.0))
    h.close()
    events = read_history(tmp_path / "h.jsonl")
    v = check(events)
    assert anomalies(v) == [], v
    assert v["attempted"] == 180 and v["acked"] == 180 and v["failed"] == v["indeterminate"] == 0
    assert v["rooms_read"] == 4 and v["subscribers"] == 2
    assert v["deliveries"] == 2 * 45  # rooms 0 and 1 each got 45 messages, every one delivered
    sites = {e["site"] for e in events if e.get("f") == "send" and e["type"] == "ok"}
    assert sites == {"pangyo", "ansan"}  # rooms alternate home sites
    oks = [e for e in events if e.get("f") == "send" and e["type"] == "ok"]
    assert all(isinstance(e["seq"], int) and e["seq"] > 0 for e in oks)


def test_driver_with_a_wrong_token_is_refused_and_stores_nothing(shared_two_sites, tmp_path):
    cfg = DriverConfig(endpoints=shared_two_sites, rate=20, rooms=2, subscribers=1, settle_s=0,
                       final_read_timeout_s=1, token=auth.generate())
    h = HistoryWriter(tmp_path / "h.jsonl")
    asyncio.run(TrafficDriver(cfg, h).run(0.5))
    h.close()
    sends = [e for e in read_history(tmp_path / "h.jsonl") if e.get("f") == "send"]
    assert {e["error"] for e in sends if e["type"] != "invoke"} == {"http 401"}
    assert not any(e["type"] == "ok" for e in sends)


def test_traffic_cli_then_check_cli(shared_two_sites, talk_token_file, tmp_path):
    hist = tmp_path / "cli.jsonl"
    argv = ["run", "--duration", "1.5", "--rate", "40", "--rooms", "2", "--subscribers", "1",
            "--history", str(hist), "--settle", "0.2", "--json", "--token-file",
            str(talk_token_file)]
    for site, urls in shared_two_sites.items():
        argv += ["--endpoint", f"{site}={urls[0]}"]
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "traffic", *argv], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["scheduled"] == 60 and stats["acked"] == 60 and stats["rooms_read"] == 2
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "check", str(hist), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["acked"] == 60


def _acked(bg) -> int:
    return sum(1 for e in bg.events() if e.get("f") == "send" and e.get("type") == "ok")


def test_background_traffic_bridges_a_killed_gateway(two_sites, start_gateway, talk_token,
                                                    tmp_path):
    """One site's only gateway dies (kill -9: resets, then refused): senders fail over to the other
    site with the same ids, nothing acknowledged is lost, and the fault window is in the history."""
    cfg = DriverConfig(endpoints=two_sites, rate=50, rooms=4, subscribers=2, settle_s=0.5,
                       token=talk_token)
    bg = BackgroundTraffic(cfg, tmp_path / "h.jsonl")
    bg.start()
    try:
        procs.wait_until(lambda: _acked(bg) >= 20, 20, what="20 acks before the fault")
        bg.mark_fault("gateway-kill:ansan", "start")
        procs.reap(start_gateway.procs[two_sites["ansan"][0]], sig=9)
        n = _acked(bg)
        procs.wait_until(lambda: _acked(bg) >= n + 50, 20, what="50 acks during the fault")
        bg.mark_fault("gateway-kill:ansan", "stop")
        n = _acked(bg)
        procs.wait_until(lambda: _acked(bg) >= n + 20, 20, what="20 acks after the fault")
    finally:
        bg.stop()
    events = bg.events()
    v = check(events)
    assert anomalies(v) == [], v
    assert v["lost"] == 0 and v["acked"] == v["attempted"]  # every message found its way
    assert v["latency_during"]["count"] > 0 and v["faults"][0]["stop"] is not None
    sends = [e for e in events if e.get("f") == "send"]
    errors = [e for e in sends if e["type"] in ("fail", "info")]
    assert errors and all(e["site"] == "ansan" for e in errors)
    ok_sites = {e["id"]: e["site"] for e in sends if e["type"] == "ok"}
    assert all(ok_sites[e["id"]] == "pangyo" for e in errors)  # same id, acked by the other site
    # rooms r0, r2 are homed at ansan (sites sorted); once ansan failed, their new messages went to
    # pangyo first instead of each paying a failed attempt
    start, stop = v["faults"][0]["start"], v["faults"][0]["stop"]
    first: dict[str, dict] = {}
    for e in sends:
        if e["type"] == "invoke":
            first.setdefault(e["id"], e)
    ansan_homed = [e for e in first.values() if start <= e["time"] <= stop
                   and int(e["room"].rsplit("-r", 1)[1]) % 2 == 0]
    assert len({e["id"] for e in errors}) < len(ansan_homed) / 2, (len(errors), len(ansan_homed))
    assert bg.stats["rooms_read"] == 4


def test_killing_the_stream_leader_zone_loses_nothing(make_cluster, start_gateway, talk_token,
                                                     tmp_path):
    """kill -9 of the nats-server leading a room's shard: writes stall for the election, the driver
    retries the same ids across sites, and every acknowledged message is in the final read."""
    from conftest import LAB_SHARDS
    from test_talk_faults import stream_leader
    from twinsite import shards
    cluster = make_cluster(name="leader")
    eps = {"pangyo": [start_gateway("pangyo", cluster=cluster)],
           "ansan": [start_gateway("ansan", cluster=cluster)]}
    cfg = DriverConfig(endpoints=eps, rate=40, rooms=4, subscribers=2, settle_s=1.0,
                       token=talk_token)
    bg = BackgroundTraffic(cfg, tmp_path / "h.jsonl")
    bg.start()
    try:
        stream = shards.stream_of(bg.driver.rooms[0], LAB_SHARDS)
        procs.wait_until(lambda: _acked(bg) >= 20 and stream_leader(cluster, stream), 30,
                         what=f"traffic flowing and a {stream} leader")
        leader = stream_leader(cluster, stream)
        bg.mark_fault(f"zone-kill:{leader}", "start")
        cluster.kill_node(leader)
        n = _acked(bg)
        procs.wait_until(lambda: _acked(bg) >= n + 40, 60, what="40 acks after the leader's death")
        cluster.start_node(leader)
        bg.mark_fault(f"zone-kill:{leader}", "stop")
        n = _acked(bg)
        procs.wait_until(lambda: _acked(bg) >= n + 20, 30, what="20 acks after the restart")
    finally:
        bg.stop()
    v = check(bg.events())
    print(f"\nleader {leader} killed: max_unavailable_s={v['max_unavailable_s']} "
          f"p99_during={v['p99_during_ms']}ms acked={v['acked']} failed={v['failed']} "
          f"indeterminate={v['indeterminate']} recovered={v['recovered']}")
    assert v["lost"] == 0 and v["duplicates"] == 0 and v["order_violations"] == 0
    assert anomalies(v) == [], v
    assert v["acked"] > 80


# --- against the lab (link fabric, supervisor) ---------------------------------------------------


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    import twinsite.lab as lab
    d = str(tmp_path_factory.mktemp("lab-state"))
    lab.up(state_dir=d, die_with_parent=True, timeout=120)
    try:
        yield d
    finally:
        lab.down(state_dir=d)


def test_traffic_run_and_check_against_the_lab(lab_dir, tmp_path):
    hist = tmp_path / "lab.jsonl"
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "traffic", "run", "--duration", "2",
                        "--rate", "50", "--rooms", "4", "--subscribers", "2", "--history",
                        str(hist), "--state-dir", lab_dir, "--settle", "0.5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "acked 100" in r.stdout and "rooms read back 4/4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "twinsite.cli", "check", str(hist)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "verdict: VALID" in r.stdout, r.stdout + r.stderr


def test_site_power_cut_in_the_lab_loses_no_acknowledged_message(lab_dir, tmp_path):
    """pangyo loses power silently (processes SIGKILLed, links silent): senders time out after
    1.5 s and fail over to ansan with the same ids; every acknowledged message is read back."""
    from twinsite import capacity, shards
    from twinsite.lab import LabClient
    from twinsite.topology import load_stack
    client = LabClient(lab_dir)
    # rooms go to the site their shard prefers: choose a run id whose rooms include some homed at
    # pangyo (else no client would ever meet the silent site), with a fresh prefix per run
    topo = load_stack("lab")
    n = capacity.lab_shard_count(topo)
    base = uuid.uuid4().hex[:6]
    run_id = next(f"p{base}{k}" for k in range(1000)
                  if "pangyo" in {shards.room_home(f"p{base}{k}-r{i}", n, topo)
                                  for i in range(4)})
    cfg = DriverConfig(endpoints=endpoints_from_lab(lab_dir), rate=50, rooms=4, subscribers=2,
                       settle_s=1.0, run_id=run_id, token=token_from_lab(lab_dir))
    bg = BackgroundTraffic(cfg, tmp_path / "h.jsonl")
    bg.start()
    try:
        procs.wait_until(lambda: _acked(bg) >= 30, 30, what="30 acks before the fault")
        bg.mark_fault("site-power:pangyo", "start")
        client.apply(SitePowerLoss("pangyo"))
        try:
            n = _acked(bg)
            procs.wait_until(lambda: _acked(bg) >= n + 60, 60, what="60 acks during the power cut")
        finally:
            client.apply(Restore("pangyo"))
            bg.mark_fault("site-power:pangyo", "stop")
        n = _acked(bg)
        procs.wait_until(lambda: _acked(bg) >= n + 30, 60, what="30 acks after the restore")
    finally:
        bg.stop()
    events = bg.events()
    v = check(events)
    print(f"\nlab power cut: max_unavailable_s={v['max_unavailable_s']} "
          f"p99_during={v['p99_during_ms']}ms acked={v['acked']}/{v['attempted']} "
          f"indeterminate={v['indeterminate']} recovered={v['recovered']}")
    assert anomalies(v) == [], v
    assert v["lost"] == 0 and v["latency_during"]["count"] >= 60
    timeouts = [e for e in events if e.get("f") == "send" and e.get("error") == "timeout"]
    # the silent site is detected by timeouts (ansan may time out too while the stream elects a
    # new leader, when pangyo held it)
    assert any(e["site"] == "pangyo" for e in timeouts)
