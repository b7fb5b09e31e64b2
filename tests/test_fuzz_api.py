"""schemathesis against a real gateway (on the suite's real 7-server cluster): every check, every
phase, a fixed seed, the SSE endpoint included (fuzz/hooks.py bounds its streams with `max_s`).

`make fuzz` runs the same for minutes with a random seed (fuzz/__main__.py).
"""

from __future__ import annotations

import json

from fuzz import api

SEED = 20261202
EXAMPLES = 40  # per operation and phase: about half a minute on an idle machine


def refused(base: str) -> dict[str, float]:
    """talk_unauthorized_total by reason, from the gateway's /metrics."""
    import httpx
    text = httpx.get(base + "/metrics", timeout=10).text
    return {r: sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith(f'talk_unauthorized_total{{reason="{r}"}}'))
            for r in ("missing", "invalid")}


def test_schemathesis_finds_nothing(shared_gateway, talk_token, tmp_path):
    before = refused(shared_gateway)
    outcome = api.run(shared_gateway, tmp_path, token=talk_token, seed=SEED,
                      max_examples=EXAMPLES, timeout_s=600)
    log = outcome.log.read_text(errors="replace")
    assert outcome.ok, f"{outcome.line()}\n{log[-8000:]}"
    print(f"\nschemathesis: {outcome.line()}")
    assert outcome.seed == SEED and outcome.complete
    report = json.loads((tmp_path / "schemathesis.json").read_text())
    # every operation was reached with requests it accepted, the SSE stream among them
    rates = report["valid_rates"]
    assert outcome.operations == len(rates) == 6
    for op, phases in rates.items():
        assert phases["fuzzing"]["accepted"] > 0, (op, phases)
    assert rates["GET /v1/rooms/{room}/subscribe"]["fuzzing"]["accepted"] >= EXAMPLES // 2
    assert all(report["phases"][p]["status"] == "success"
               for p in ("coverage", "fuzzing", "stateful")), report["phases"]
    # it sent the token (no missing-auth warning) and its ignored_auth check probed the 401s
    assert not report["warnings"]["missing_auth"] and not report["warnings"]["unused_openapi_auth"]
    after = refused(shared_gateway)
    assert all(after[r] > before[r] for r in after), (before, after)


def test_hooks_bound_only_valid_max_s():
    from fuzz.hooks import MAX_S, bounded
    assert bounded(None) == MAX_S and bounded(3600) == MAX_S and bounded("86400") == MAX_S
    assert bounded(0.05) == 0.05
    assert bounded([10, "x"]) == [MAX_S, "x"]
    for invalid in (0, -1, "abc", 86401, float("inf"), True):
        assert bounded(invalid) == invalid  # negative cases stay negative


def test_what_the_fuzzer_found_stays_fixed(shared_gateway, auth_headers):
    """Regressions of schemathesis findings, each a plain request."""
    import httpx
    with httpx.Client(base_url=shared_gateway, timeout=10, headers=auth_headers) as gw:
        # 405 names every method the path serves (two routes share it), per RFC 9110
        r = gw.request("OPTIONS", "/v1/rooms/r1/messages")
        assert r.status_code == 405 and r.json()["error"] == "method not allowed"
        assert set(r.headers["allow"].split(", ")) >= {"GET", "POST"}
        assert gw.delete("/healthz").headers["allow"] == "GET"
        # an empty Last-Event-ID (as EventSource sends before any id) means "from the start"
        room = f"fz-{SEED}-{__import__('uuid').uuid4().hex[:8]}"
        posted = gw.post(f"/v1/rooms/{room}/messages", json={"id": "a", "sender": "s", "body": "b"})
        assert posted.status_code == 201
        r = gw.get(f"/v1/rooms/{room}/subscribe", params={"max_s": 0.3},
                   headers={"Last-Event-ID": ""})
        assert r.status_code == 200 and f"id: {posted.json()['seq']}\nevent: message\n" in r.text
        assert gw.get(f"/v1/rooms/{room}/subscribe",
                      headers={"Last-Event-ID": "1x"}).status_code == 400
        # the document offers no null for optional parameters, and describes one SSE event
        doc = gw.get("/openapi.json").json()
        op = doc["paths"]["/v1/rooms/{room}/subscribe"]["get"]
        params = {p["name"]: p["schema"] for p in op["parameters"]}
        assert "anyOf" not in params["max_s"] and params["max_s"]["type"] == "number"
        assert "anyOf" not in params["last-event-id"]
        sse = op["responses"]["200"]["content"]["text/event-stream"]["schema"]
        data = sse["properties"]["data"]
        assert data["contentSchema"] == {"$ref": "#/components/schemas/Message"}
