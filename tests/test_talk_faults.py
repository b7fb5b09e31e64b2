"""The gateway under faults, each on its own cluster (the shared one stays healthy):
quorum loss turns /readyz and POST into 503 and back; losing the stream leader's whole site
stalls writes only for the election, and every acknowledged message survives."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx

from twinsite import procs, shards
from conftest import LAB_SHARDS, site_first_urls


def stream_leader(cluster, stream: str) -> str | None:
    """The server (zone) name leading `stream`, asked of any running server's monitor."""
    for n in cluster.nodes.values():
        if not n.running:
            continue
        try:
            jsz = n.monitor("/jsz?accounts=true&streams=true")
        except (OSError, ValueError):
            continue
        for acc in jsz.get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                if st.get("name") == stream and (st.get("cluster") or {}).get("leader"):
                    return st["cluster"]["leader"]
    return None


def read_room(client, room: str, **params) -> list[dict]:
    """The room's messages once a read succeeds. Right after a fault a read may meet a stream
    leader election; the contract for that is 503 + Retry-After, so honour it and ask again."""
    seen: list[httpx.Response] = []

    def answered() -> bool:
        r = client.get(f"/v1/rooms/{room}/messages", params=params)
        seen.append(r)
        return r.status_code == 200

    procs.wait_until(answered, 30, interval=0.2, what=f"a read of room {room}")
    for r in seen[:-1]:
        assert r.status_code == 503 and "retry-after" in r.headers, r.text
        assert r.json()["error"] == "jetstream unavailable", r.text
    return seen[-1].json()["messages"]


def status(client, path) -> int:
    try:
        return client.get(path).status_code
    except httpx.HTTPError:
        return -1


def test_readyz_and_post_503_without_quorum(make_cluster, start_gateway, auth_headers):
    cluster = make_cluster(name="quorum")
    base = start_gateway("pangyo", cluster=cluster)
    with httpx.Client(base_url=base, timeout=10, headers=auth_headers) as c:
        assert c.post("/v1/rooms/q/messages", json={"id": "1", "sender": "s", "body": "b"}
                      ).status_code == 201
        lost = [z for z, n in cluster.nodes.items() if n.site != "pangyo"]
        for z in lost:  # only pangyo's servers remain: 1 of 3 sites, no quorum anywhere
            cluster.kill_node(z)
        t0 = time.monotonic()
        procs.wait_until(lambda: status(c, "/readyz") == 503, 30, what="/readyz 503")
        print(f"\n/readyz turned 503 {time.monotonic() - t0:.1f}s after losing quorum")
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"] == "not ready"
        r = c.post("/v1/rooms/q/messages", json={"id": "2", "sender": "s", "body": "b"})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and r.json()["error"] == "jetstream unavailable"
        assert c.get("/healthz").status_code == 200  # alive, just not ready

        for z in lost:
            cluster.start_node(z)
        t0 = time.monotonic()
        procs.wait_until(lambda: status(c, "/readyz") == 200, 60, what="/readyz 200 again")
        print(f"/readyz 200 again {time.monotonic() - t0:.1f}s after restart")
        ok = None

        def posted() -> bool:
            nonlocal ok
            ok = c.post("/v1/rooms/q/messages", json={"id": "2", "sender": "s", "body": "b"})
            return ok.status_code in (200, 201)

        procs.wait_until(posted, 30, interval=0.2, what="a write after quorum is back")
        ids = [m["id"] for m in read_room(c, "q")]
        assert ids == ["1", "2"]


def test_gateway_starts_before_jetstream(make_cluster, start_gateway, lab_topology, tmp_path,
                                        auth_headers):
    """A gateway pointed at servers that are not up yet keeps retrying and becomes ready."""
    from twinsite.natscluster import LocalNatsCluster
    cluster = LocalNatsCluster(lab_topology, tmp_path / "late")
    cluster.write_configs()
    base = start_gateway("ansan", site_first_urls(cluster, "ansan"), wait_ready=False)
    try:
        with httpx.Client(base_url=base, timeout=10, headers=auth_headers) as c:
            assert c.get("/readyz").status_code == 503
            cluster.start(timeout=60)
            procs.wait_until(lambda: status(c, "/readyz") == 200, 60, what="ready once up")
            assert c.post("/v1/rooms/late/messages", json={"id": "1", "sender": "s", "body": "b"}
                          ).status_code == 201
    finally:
        cluster.stop()


def test_failover_of_the_leader_site_loses_nothing(make_cluster, start_gateway, auth_headers):
    cluster = make_cluster(name="failover")
    room = "fo-" + uuid.uuid4().hex[:8]
    stream = shards.stream_of(room, LAB_SHARDS)
    # A gateway in each primary site: their balancer puts the room's shard leader in the site the
    # shard prefers; that site is the one to lose, the writes go through the other.
    gateways = {site: start_gateway(site, cluster=cluster) for site in ("pangyo", "ansan")}
    leader_site = shards.preferred_site(shards.shard_index(stream), cluster.topo)
    procs.wait_until(lambda: (stream_leader(cluster, stream) or "").startswith(leader_site), 60,
                     what=f"the {stream} leader in {leader_site} (the gateways' balancer)")
    leader = stream_leader(cluster, stream)
    writer_site = "ansan" if leader_site == "pangyo" else "pangyo"
    base = gateways[writer_site]

    acked: dict[str, int] = {}
    ack_times: list[float] = []
    delivered: list[tuple[int, str]] = []  # (seq, id) seen by a live subscriber across the fault
    stop = threading.Event()

    def subscriber():
        with httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=30),
                          headers=auth_headers) as sc:
            with sc.stream("GET", f"/v1/rooms/{room}/subscribe", params={"max_s": 120}) as s:
                for line in s.iter_lines():
                    if line.startswith("data: "):
                        m = json.loads(line[6:])
                        delivered.append((m["seq"], m["id"]))
                    if stop.is_set():
                        return

    sub = threading.Thread(target=subscriber, daemon=True)
    sub.start()
    with httpx.Client(base_url=base, timeout=5, headers=auth_headers) as c:
        def write(i: int, deadline: float) -> None:
            """Write message i, resending the same id until acknowledged (idempotent)."""
            mid = f"m{i}"
            while time.monotonic() < deadline:
                try:
                    r = c.post(f"/v1/rooms/{room}/messages",
                               json={"id": mid, "sender": "w", "body": f"n{i}"})
                except httpx.HTTPError:
                    continue
                if r.status_code in (200, 201):
                    acked[mid] = r.json()["seq"]
                    ack_times.append(time.monotonic())
                    return
                assert r.status_code == 503, r.text
                assert "retry-after" in r.headers
                time.sleep(0.05)  # a short client back-off, not a wait for a condition
            raise AssertionError(f"{mid} never acknowledged")

        i = 0
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            write(i, time.monotonic() + 10)
            i += 1
        before = len(acked)
        t_kill = time.monotonic()
        for z, n in cluster.nodes.items():
            if n.site == leader_site:
                cluster.kill_node(z)  # SIGKILL
        deadline = t_kill + 60
        while len(acked) < before + 20:
            write(i, deadline)
            i += 1
        gaps = [b - a for a, b in zip(ack_times, ack_times[1:])]
        stall = max(gaps)
        first_after = next(t for t in ack_times if t > t_kill)
        print(f"\nleader {leader} ({leader_site}) killed; writes via {writer_site}: "
              f"stall {stall:.2f}s (first ack {first_after - t_kill:.2f}s after the kill), "
              f"{len(acked)} acked")
        new_leader = stream_leader(cluster, stream)
        assert new_leader and cluster.topo.site_of(new_leader) != leader_site

        got = read_room(c, room, limit=1000)
        ids = [m["id"] for m in got]
        assert len(ids) == len(set(ids)), "duplicates"
        assert set(acked) <= set(ids), f"lost: {sorted(set(acked) - set(ids))}"
        assert {m["id"]: m["seq"] for m in got if m["id"] in acked} == acked
        assert [m["seq"] for m in got] == sorted(m["seq"] for m in got)
        assert ids == [f"m{k}" for k in range(len(ids))]  # written in order, read in order

        # the live subscriber saw every acknowledged message, once, in order, despite the fault
        try:
            procs.wait_until(lambda: set(acked) <= {i for _, i in delivered}, 30,
                             what="the subscriber to catch up")
        finally:
            stop.set()
            c.post(f"/v1/rooms/{room}/messages", json={"id": "end", "sender": "w", "body": ""})
            sub.join(timeout=35)
        seen = [i for _, i in delivered]
        assert len(seen) == len(set(seen)) and [q for q, _ in delivered] == sorted(
            q for q, _ in delivered)


def test_many_gateways_create_one_stream_one_replica_per_site(make_cluster, start_gateway,
                                                             auth_headers):
    cluster = make_cluster(name="race")
    bases = [start_gateway(site, cluster=cluster, wait_ready=False)
             for site in ("pangyo", "ansan", "pangyo", "ansan")]  # all racing to create the shards
    with httpx.Client(timeout=10, headers=auth_headers) as c:
        for b in bases:
            procs.wait_until(lambda b=b: status(c, b + "/readyz") == 200, 60, what=f"{b} ready")
        for i, b in enumerate(bases):
            assert c.post(f"{b}/v1/rooms/race/messages",
                          json={"id": f"g{i}", "sender": "s", "body": "b"}).status_code == 201
    details = []
    for n in cluster.nodes.values():
        jsz = n.monitor("/jsz?accounts=true&streams=true&config=true")
        for acc in jsz.get("account_details") or []:
            details += [st for st in acc.get("stream_detail") or []
                        if st["name"] == shards.stream_of("race", LAB_SHARDS)]
    names = {st["name"] for n in cluster.nodes.values() for acc in n.monitor(
        "/jsz?accounts=true&streams=true").get("account_details") or []
        for st in acc.get("stream_detail") or []}
    assert names == {shards.stream_name(i) for i in range(LAB_SHARDS)}, names  # each exactly once
    assert details, "no stream for the room"
    st = details[0]
    assert st["config"]["num_replicas"] == 3 and st["config"]["allow_direct"] is True
    # each member reports the *other* peers as replicas: the union is the peer group
    peers = {d["cluster"]["leader"] for d in details} | {
        r["name"] for d in details for r in d["cluster"].get("replicas", [])}
    assert len(peers) == 3, peers
    assert sorted(cluster.topo.site_of(p) for p in peers) == ["ansan", "pangyo", "witness"]
