"""The talk gateway's HTTP API against a real lab cluster, through a real `twinsite talk serve`."""

from __future__ import annotations

import json
import signal
import uuid

import httpx
import pytest




@pytest.fixture
def gw(shared_gateway, auth_headers):
    with httpx.Client(base_url=shared_gateway, timeout=10, headers=auth_headers) as client:
        yield client


def room() -> str:
    return "r-" + uuid.uuid4().hex[:12]


def post(client, room_, id_, body="hello", sender="alice"):
    return client.post(f"/v1/rooms/{room_}/messages", json={"id": id_, "sender": sender, "body": body})


def read_all(client, room_, after=0, limit=1000) -> list[dict]:
    out = []
    while True:
        r = client.get(f"/v1/rooms/{room_}/messages", params={"after": after, "limit": limit})
        assert r.status_code == 200, r.text
        page = r.json()["messages"]
        out += page
        if len(page) < limit:
            return out
        after = page[-1]["seq"]


def test_send_then_read_in_order(gw):
    rm, other = room(), room()
    seqs = []
    for i in range(5):
        r = post(gw, rm, f"m{i}", body=f"body {i}")
        assert r.status_code == 201, r.text
        assert r.json()["room"] == rm and r.json()["id"] == f"m{i}"
        seqs.append(r.json()["seq"])
        assert post(gw, other, f"o{i}").status_code == 201  # interleave another room
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    msgs = read_all(gw, rm)
    assert [m["id"] for m in msgs] == [f"m{i}" for i in range(5)]
    assert [m["seq"] for m in msgs] == seqs
    assert [m["body"] for m in msgs] == [f"body {i}" for i in range(5)]
    assert all(m["sender"] == "alice" and isinstance(m["ts"], float) for m in msgs)
    # paging: after and limit
    page = gw.get(f"/v1/rooms/{rm}/messages", params={"after": seqs[1], "limit": 2}).json()
    assert [m["seq"] for m in page["messages"]] == seqs[2:4]
    assert gw.get(f"/v1/rooms/{rm}/messages", params={"after": seqs[-1]}).json() == {"messages": []}
    assert gw.get(f"/v1/rooms/{room()}/messages").json() == {"messages": []}


def test_resend_is_idempotent(gw):
    rm = room()
    first = post(gw, rm, "dup-1", body="original")
    assert first.status_code == 201
    again = post(gw, rm, "dup-1", body="changed on resend")
    assert again.status_code == 200
    assert again.json() == first.json()
    # the same id in another room is another message
    other = room()
    elsewhere = post(gw, other, "dup-1", body="other room")
    assert elsewhere.status_code == 201  # created, not a duplicate (its seq is its shard's)
    assert [(m["id"], m["body"]) for m in read_all(gw, other)] == [("dup-1", "other room")]
    msgs = read_all(gw, rm)
    assert [(m["id"], m["body"]) for m in msgs] == [("dup-1", "original")]


def sse_events(lines, n: int, on_event=None) -> list[tuple[int, dict]]:
    """Read n `message` events from an SSE line iterator: [(id, data)]."""
    events, cur = [], {}
    for line in lines:
        if line == "":
            if cur.get("event") == "message":
                events.append((int(cur["id"]), json.loads(cur["data"])))
                if on_event:
                    on_event(events)
                if len(events) >= n:
                    return events
            cur = {}
        elif not line.startswith(":") and ":" in line:
            k, v = line.split(":", 1)
            cur[k] = v[1:] if v.startswith(" ") else v
    return events


def test_subscribe_live_and_resume(gw):
    rm = room()
    seqs = [post(gw, rm, f"s{i}").json()["seq"] for i in range(2)]

    def post_more(events):
        if len(events) == 2:  # history delivered; now a live one
            seqs.append(post(gw, rm, "s2").json()["seq"])

    with gw.stream("GET", f"/v1/rooms/{rm}/subscribe", params={"max_s": 20}) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        events = sse_events(s.iter_lines(), 3, post_more)
    assert [e[0] for e in events] == seqs
    assert [e[1]["id"] for e in events] == ["s0", "s1", "s2"]
    assert all(e[0] == e[1]["seq"] for e in events)

    # resume after the first one, by query and by Last-Event-ID
    with gw.stream("GET", f"/v1/rooms/{rm}/subscribe",
                   params={"after": seqs[0], "max_s": 20}) as s:
        assert [e[0] for e in sse_events(s.iter_lines(), 2)] == seqs[1:]
    with gw.stream("GET", f"/v1/rooms/{rm}/subscribe", params={"max_s": 20},
                   headers={"Last-Event-ID": str(seqs[1])}) as s:
        assert [e[0] for e in sse_events(s.iter_lines(), 1)] == seqs[2:]
    for bad_id in (b"x", "²".encode(), b"-1"):
        bad = gw.get(f"/v1/rooms/{rm}/subscribe", headers={"Last-Event-ID": bad_id})
        assert bad.status_code == 400 and bad.json()["error"]


@pytest.mark.parametrize("content, why", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"id": "a", "sender": "b"}', "missing body"),
    (b'{"sender": "b", "body": "c"}', "missing id"),
    (b'{"id": 5, "sender": "b", "body": "c"}', "id not a string"),
    (b'{"id": "a", "sender": "b", "body": null}', "body null"),
    (b'{"id": "", "sender": "b", "body": "c"}', "empty id"),
    (b'{"id": "a", "sender": "", "body": "c"}', "empty sender"),
    (b'{"id": "' + b"x" * 129 + b'", "sender": "b", "body": "c"}', "id too long"),
    (b'{"id": "a b", "sender": "b", "body": "c"}', "id with a space"),
    (b'{"id": "a", "sender": "' + b"s" * 129 + b'", "body": "c"}', "sender too long"),
    (b'{"id": "a", "sender": "b", "body": "c", "extra": 1}', "unknown field"),
    (b"\xff\xfe", "not UTF-8"),
    (b"", "empty body"),
])
def test_bad_message_is_400_json(gw, content, why):
    r = gw.post(f"/v1/rooms/{room()}/messages", content=content,
                headers={"content-type": "application/json"})
    assert r.status_code == 400, (why, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error", "detail"}


@pytest.mark.parametrize("bad_room", ["has space", "x" * 65, "dot.ted", "star*", "ünï"])
def test_bad_room_is_400(gw, bad_room):
    for r in (gw.post(f"/v1/rooms/{bad_room}/messages", json={"id": "a", "sender": "b", "body": "c"}),
              gw.get(f"/v1/rooms/{bad_room}/messages")):
        assert r.status_code == 400, (bad_room, r.text)
        assert r.json()["error"]


def test_bad_query_is_400(gw):
    rm = room()
    for params in ({"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": 1001}):
        r = gw.get(f"/v1/rooms/{rm}/messages", params=params)
        assert r.status_code == 400, (params, r.text)


def test_oversize_is_413(gw):
    rm = room()
    big = {"id": "big", "sender": "b", "body": "x" * 70_000}
    r = post(gw, rm, "big", body="x" * 70_000)
    assert r.status_code == 413 and r.json()["error"] == "body too large"

    def chunks():  # no Content-Length: the limit must hold on the bytes actually read
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    r = gw.post(f"/v1/rooms/{rm}/messages", content=chunks())
    assert "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert read_all(gw, rm) == []
    # just under the limit is fine
    ok = post(gw, rm, "fits", body="y" * 60_000)
    assert ok.status_code == 201


def test_max_body_bytes_flag(start_gateway, auth_headers):
    base = start_gateway("ansan", extra_args=["--max-body-bytes", "300"])
    with httpx.Client(base_url=base, timeout=10, headers=auth_headers) as c:
        assert post(c, room(), "s", body="x" * 100).status_code == 201
        assert post(c, room(), "l", body="x" * 400).status_code == 413


def test_odd_paths_and_headers(gw):
    r = gw.post(f"/v1/rooms/{room()}/messages%0A", json={"id": "a", "sender": "b", "body": "c"})
    assert r.status_code < 500 and r.headers["content-type"] == "application/json"
    # a Content-Length httpx refuses to send: talk raw HTTP
    import socket
    host, port = str(gw.base_url).removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        token = gw.headers["authorization"]
        sock.sendall(f"POST /v1/rooms/{room()}/messages HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: {token}\r\n".encode()
                     + "Content-Length: ²\r\nConnection: close\r\n\r\n{}".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


def test_unknown_route_and_method_are_json(gw):
    r = gw.get("/nope")
    assert r.status_code == 404 and r.json()["error"]
    r = gw.delete(f"/v1/rooms/{room()}/messages")
    assert r.status_code == 405 and r.json()["error"]


def test_health_ready_metrics(gw):
    assert gw.get("/healthz").json()["status"] == "ok"
    r = gw.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    rm = room()
    post(gw, rm, "x")
    post(gw, rm, "x")
    text = gw.get("/metrics").text
    assert 'talk_http_requests_total{method="POST",route="/v1/rooms/{room}/messages",status="201"}' in text
    assert 'status="200"}' in text
    assert 'talk_publish_seconds_count{outcome="created"}' in text
    assert 'talk_publish_seconds_count{outcome="duplicate"}' in text
    assert "talk_nats_connected 1.0" in text
    assert "talk_nats_reconnects_total" in text


def test_openapi_describes_the_api(gw):
    doc = gw.get("/openapi.json").json()
    post_op = doc["paths"]["/v1/rooms/{room}/messages"]["post"]
    assert {"200", "201", "400", "413", "503"} <= set(post_op["responses"])
    assert "422" not in json.dumps(doc["paths"])
    schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"id", "sender", "body"}
    assert "text/event-stream" in json.dumps(doc["paths"]["/v1/rooms/{room}/subscribe"])
    assert {"/healthz", "/readyz", "/metrics"} <= set(doc["paths"])


def test_cli_rejects_bad_arguments():
    import subprocess
    import sys
    for args, needle in ((["--site", "nowhere"], "unknown site"),
                         (["--site", "pangyo", "--listen", "nohost"], "--listen"),
                         (["--site", "pangyo", "--listen", "127.0.0.1:²"], "--listen")):
        argv = [sys.executable, "-m", "twinsite.cli", "talk", "serve", "--nats",
                "nats://127.0.0.1:1", "--listen", "127.0.0.1:0", *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_sigterm_drains_and_exits_cleanly(start_gateway, auth_headers):
    base = start_gateway("ansan")
    with httpx.Client(base_url=base, timeout=10, headers=auth_headers) as c:
        assert post(c, room(), "before-term").status_code == 201
    proc = start_gateway.procs[base]
    proc.terminate()
    # uvicorn re-raises the signal after its graceful shutdown: exit by SIGTERM, not a crash
    assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
    log = start_gateway.logs[base].read_text()
    assert "NATS connection drained" in log and "Traceback" not in log


def test_paging_through_many_messages(gw):
    rm = room()
    with httpx.Client(base_url=gw.base_url, timeout=10, headers=gw.headers) as c:
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(8) as pool:  # concurrent writers: seqs interleave with others
            acks = list(pool.map(lambda i: post(c, rm, f"p{i}").json(), range(40)))
    seqs = sorted(a["seq"] for a in acks)
    for limit in (1, 7, 40, 1000):
        got = read_all(gw, rm, limit=limit)
        assert [m["seq"] for m in got] == seqs, limit
    assert {m["id"] for m in read_all(gw, rm, after=seqs[19], limit=7)} == {
        a["id"] for a in acks if a["seq"] > seqs[19]}
