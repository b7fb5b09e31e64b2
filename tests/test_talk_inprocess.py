"""`create_app(settings)` in-process, with no NATS reachable: the app is importable and testable
without servers, and every JetStream-dependent answer is a 503 JSON with Retry-After."""

from __future__ import annotations

import httpx
import pytest

from twinsite.talk import Settings, auth, create_app

TOKEN = auth.generate()


@pytest.fixture
async def client():
    app = create_app(Settings(site="pangyo", nats_urls=("nats://127.0.0.1:1",)),
                     tokens=auth.Tokens.of(TOKEN))
    # no lifespan: the backend never connects, as when every server is down
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://talk",
                                 headers=auth.header(TOKEN)) as c:
        yield c


async def test_without_nats_everything_is_503_or_400(client):
    assert (await client.get("/healthz")).status_code == 200
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {"error": "not ready", "detail": "not connected to NATS"}
    r = await client.post("/v1/rooms/a/messages", json={"id": "1", "sender": "s", "body": "b"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "jetstream unavailable"
    r = await client.get("/v1/rooms/a/messages")
    assert r.status_code == 503 and r.json()["error"] == "jetstream unavailable"
    # input is validated before JetStream is asked
    assert (await client.post("/v1/rooms/a/messages", content=b"{")).status_code == 400
    assert (await client.post("/v1/rooms/a%2Fb/messages", json={})).status_code in (400, 404)
    metrics = (await client.get("/metrics")).text
    assert 'talk_publish_seconds_count{outcome="unavailable"} 1.0' in metrics
    assert "talk_nats_connected 0.0" in metrics


def test_no_open_mode():
    with pytest.raises(TypeError):
        create_app(Settings(site="pangyo", nats_urls=("nats://127.0.0.1:1",)))  # no tokens
    with pytest.raises(auth.TokenError):
        create_app(Settings(site="pangyo", nats_urls=("nats://127.0.0.1:1",)), tokens=None)
