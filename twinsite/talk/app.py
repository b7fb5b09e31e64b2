"""The talk HTTP API (FastAPI): `create_app(settings)` builds one gateway.

Live delivery (`/v1/rooms/{room}/subscribe`) is **Server-Sent Events**: one `message` event per
message, `id:` = the stream seq, `data:` = the message JSON (same fields as a read). Resume with
`?after=SEQ` or the standard `Last-Event-ID` header (the larger wins). Delivery is driven by the same
consistent read as `GET .../messages` (woken by the room's subject, polled every second as a
fallback), so a subscriber sees exactly the acknowledged messages, in stream order, across fail-over.

Every error is JSON `{"error": str, "detail": ...}`: 400 invalid input (FastAPI's 422 is turned
into 400), 401 missing or wrong bearer token (with `WWW-Authenticate`), 413 body too large, 503
JetStream unavailable (with `Retry-After`).

Authentication: every `/v1/` operation needs `Authorization: Bearer <token>` (checked in constant
time before the request body is read; a refused request stores nothing). `/healthz`, `/readyz`,
`/metrics` and this document are open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Annotated

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import auth, model
from .backend import Backend, Hooks, Settings, Unavailable

log = logging.getLogger("twinsite.talk")
RETRY_AFTER_S = "1"
SSE_POLL_S = 1.0
SSE_KEEPALIVE_EVERY = 10  # idle polls between keep-alive comments


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail=None, headers: dict | None = None):
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


def unavailable(e: Exception) -> ApiError:
    return ApiError(503, "jetstream unavailable", str(e), {"Retry-After": RETRY_AFTER_S})


def _json_error(status: int, error: str, detail=None, headers=None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class Metrics:
    def __init__(self):
        disable_created_metrics()  # *_created series only add noise here
        self.registry = r = CollectorRegistry()
        self.requests = Counter("talk_http_requests_total", "HTTP requests",
                                ["route", "method", "status"], registry=r)
        self.publish_seconds = Histogram(
            "talk_publish_seconds", "JetStream publish latency (until the ack)", ["outcome"],
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5), registry=r)
        self.connected = Gauge("talk_nats_connected", "1 when connected to NATS", registry=r)
        self.reconnects = Counter("talk_nats_reconnects_total", "NATS reconnections", registry=r)
        self.ready = Gauge("talk_ready", "1 when the last readiness probe passed", registry=r)
        self.subscribers = Gauge("talk_sse_subscribers", "open subscribe streams", registry=r)
        self.unauthorized = Counter("talk_unauthorized_total", "requests refused (401): no "
                                    "bearer token, or a wrong one", ["reason"], registry=r)

    def hooks(self) -> Hooks:
        by_outcome = {o: self.publish_seconds.labels(o)
                      for o in ("created", "duplicate", "unavailable")}
        return Hooks(connected=lambda up: self.connected.set(1 if up else 0),
                     reconnected=self.reconnects.inc,
                     published=lambda o, s: by_outcome[o].observe(s))


def metrics_middleware(app, metrics: Metrics):
    """Count every response by route template (not raw path: bounded label cardinality)."""
    children: dict[tuple, object] = {}

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            key = (route, scope["method"], status["code"])
            child = children.get(key)
            if child is None:  # labels() costs a lock and a dict walk: cache the child
                child = children[key] = metrics.requests.labels(route, key[1], str(key[2]))
            child.inc()

    return middleware


Room = Annotated[str, Path(pattern=model.ROOM_PATTERN, description="room name")]
ERRORS = {
    400: {"model": model.Error, "description": "invalid input"},
    503: {"model": model.Error, "description": "JetStream unavailable; retry after Retry-After s",
          "headers": {"Retry-After": {"schema": {"type": "string"}}}},
}


# One SSE event as schemathesis and OpenAPI 3.1 read an event-stream `schema`: the fields of one
# event, its `data` a JSON-encoded Message.
SSE_EVENT = {
    "type": "object", "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "message"},
        "id": {"type": "string", "pattern": "^[0-9]{1,18}$", "description": "the stream seq"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": "#/components/schemas/Message"}},
        "retry": {"type": "integer"},
    },
}


def create_app(settings: Settings, backend: Backend | None = None, *,
               tokens: auth.Tokens) -> FastAPI:
    """`tokens` is required: there is no open mode (see docs/tokens.md)."""
    if not isinstance(tokens, auth.Tokens) or not tokens.digests:
        raise auth.TokenError("create_app: tokens must be a non-empty auth.Tokens")
    metrics = Metrics()
    backend = backend or Backend(settings, metrics.hooks())
    stopping = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        try:
            yield
        finally:
            stopping.set()
            await backend.close()

    app = FastAPI(title="twinsite talk gateway", version="0.1.0", lifespan=lifespan,
                  description=__doc__,
                  # FastAPI's OpenTelemetry hooks cost a provider check per request; we export
                  # Prometheus metrics ourselves.
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.backend, app.state.metrics, app.state.settings = backend, metrics, settings

    # --- errors: always JSON, never a traceback ----------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _json_error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
                  for e in exc.errors()]
        return _json_error(400, "invalid request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names only the first route's methods
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(app, request.scope))}
        return _json_error(exc.status_code, str(exc.detail).lower(), None, headers)

    @app.exception_handler(Unavailable)
    async def _unavailable(request, exc: Unavailable):
        e = unavailable(exc)
        return _json_error(e.status, e.error, e.detail, e.headers)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _json_error(500, "internal error", type(exc).__name__)

    # --- messages ----------------------------------------------------------------------------------

    body_schema = model.MessageIn.model_json_schema()

    @app.post("/v1/rooms/{room}/messages", status_code=201, response_model=model.Ack,
              summary="Post a message (acknowledged once quorum-replicated)",
              responses={200: {"model": model.Ack, "description": "duplicate id: the original seq"},
                         413: {"model": model.Error, "description": "body too large"}, **ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": body_schema}}}})
    async def post_message(room: Room, request: Request):
        # Normally served by `fast_post` below; reached only if that is bypassed.
        status, doc, headers = await accept_message(backend, room, request.headers.get(
            "content-length"), request.receive)
        return JSONResponse(doc, status_code=status, headers=headers)

    @app.get("/v1/rooms/{room}/messages", response_model=model.Messages, responses=ERRORS,
             summary="Read a room's messages in stream order (all acknowledged ones)")
    async def get_messages(room: Room,
                           after: Annotated[int, Query(ge=0, description="seq to start after")] = 0,
                           limit: Annotated[int, Query(ge=1, le=model.MAX_READ_LIMIT)] = 100):
        try:
            return {"messages": await backend.read(room, after, limit)}
        except Unavailable as e:
            raise unavailable(e) from None

    @app.get("/v1/rooms/{room}/subscribe", response_class=StreamingResponse,
             summary="Live delivery as Server-Sent Events, resumable from a seq",
             responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                              "description": "event stream: `id:` seq, `data:` message JSON"},
                        **ERRORS})
    async def subscribe(room: Room,
                        after: Annotated[int, Query(ge=0)] = 0,
                        # typed without `| None`: the document must not offer null as a value
                        max_s: Annotated[float, Query(
                            gt=0, le=86400, description="close the stream after this long "
                            "(default: never)")] = None,
                        last_event_id: Annotated[str, Header(
                            pattern=r"^[0-9]{0,18}$", description="resume after this seq; "
                            "empty means none (as EventSource sends it)")] = None):
        if last_event_id:
            after = max(after, int(last_event_id))
        stream = sse_stream(backend, metrics, room, after, max_s, stopping)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- operations --------------------------------------------------------------------------------

    @app.get("/healthz", response_model=model.Health, summary="The process is alive")
    async def healthz():
        return {"status": "ok", "detail": None}

    @app.get("/readyz", response_model=model.Health, summary="A JetStream write would succeed now",
             responses={503: {"model": model.Error, "description": "not ready",
                              "headers": {"Retry-After": {"schema": {"type": "string"}}}}})
    async def readyz():
        ok, why = await backend.ready()
        metrics.ready.set(1 if ok else 0)
        if not ok:
            raise ApiError(503, "not ready", why, {"Retry-After": RETRY_AFTER_S})
        return {"status": "ready", "detail": why}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = secure_openapi(clean_openapi(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes)))
        return app.openapi_schema

    app.openapi = openapi
    wrapped = app.build_middleware_stack

    def build_middleware_stack():  # metrics outermost: it sees the final status of every request
        return metrics_middleware(require_token(fast_post(wrapped(), backend), tokens,
                                                metrics.unauthorized), metrics)

    app.build_middleware_stack = build_middleware_stack
    return app


def allowed_methods(app: FastAPI, scope) -> list[str]:
    """Every method some route serves on this path (a path can have one route per method)."""
    methods = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def clean_openapi(doc: dict) -> dict:
    """We answer 400, never 422: drop FastAPI's generated 422 responses and their schemas."""
    for item in doc.get("paths", {}).values():
        for op in item.values():
            op.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc


# Served without a token: probes, metrics scrapes and the API's own description.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs",
                        "/docs/oauth2-redirect", "/redoc"})
UNAUTHORIZED = {"model": model.Error, "description": "missing, malformed or wrong bearer token",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"},
                                                 "description": "the Bearer challenge (RFC 6750)"}}}


def secure_openapi(doc: dict) -> dict:
    """Declare the bearer scheme, and on every operation that needs it, its security and 401."""
    doc.setdefault("components", {})["securitySchemes"] = {auth.SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "a token of the gateway's token file (`talk serve --token-file`)"}}
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, item in doc.get("paths", {}).items():
        if path in OPEN_PATHS:
            continue
        for op in item.values():
            op["security"] = [{auth.SCHEME: []}]
            op.setdefault("responses", {})["401"] = {
                "description": UNAUTHORIZED["description"],
                "headers": UNAUTHORIZED["headers"],
                "content": {"application/json": {"schema": error_ref}}}
    return doc


def require_token(app, tokens: auth.Tokens, refused: Counter | None = None):
    """Refuse (401 JSON) every request outside OPEN_PATHS without a right bearer token, before
    anything reads its body. Outside the fast path, so it guards that too."""
    challenge = f'Bearer realm="{auth.REALM}"'.encode()
    count = {r: (refused.labels(r).inc if refused is not None else lambda: None)
             for r in ("missing", "invalid")}

    async def middleware(scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await app(scope, receive, send)
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(given) == 1 and tokens.accepts(given[0]):
            return await app(scope, receive, send)
        count["invalid" if given else "missing"]()
        if given:
            detail = "wrong or malformed bearer token"
            www = challenge + b', error="invalid_token"'
        else:
            detail = "an Authorization: Bearer <token> header is required"
            www = challenge
        body = json.dumps({"error": "unauthorized", "detail": detail}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", www)]})
        await send({"type": "http.response.body", "body": body})

    return middleware


async def read_limited(content_length: str | None, receive, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` by header or by bytes actually sent."""
    if content_length is not None:
        if not DECIMAL.fullmatch(content_length):
            raise ApiError(400, "invalid Content-Length")
        if int(content_length) > limit:
            raise ApiError(413, "body too large", f"limit is {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body too large", f"limit is {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def accept_message(backend: Backend, room: str, content_length: str | None,
                         receive) -> tuple[int, dict, dict]:
    """POST a message: (status, JSON document, headers). The one implementation of the endpoint."""
    try:
        raw = await read_limited(content_length, receive, backend.settings.max_body_bytes)
        try:
            msg = model.MessageIn.model_validate_json(raw)
        except ValidationError as e:
            detail = [{"loc": list(x["loc"]), "msg": x["msg"], "type": x["type"]}
                      for x in e.errors(include_url=False, include_input=False,
                                        include_context=False)]
            raise ApiError(400, "invalid message", detail) from None
        try:
            seq, dup = await backend.publish(room, msg)
        except Unavailable as e:
            raise unavailable(e) from None
    except ApiError as e:
        return e.status, {"error": e.error, "detail": e.detail}, e.headers
    return (200 if dup else 201), {"room": room, "id": msg.id, "seq": seq}, {}


POST_PATH = re.compile(r"/v1/rooms/([A-Za-z0-9_-]{1,64})/messages")  # used with fullmatch
DECIMAL = re.compile(r"[0-9]{1,18}")  # str.isdigit() also accepts '²', which int() refuses
POST_ROUTE = SimpleNamespace(path="/v1/rooms/{room}/messages")  # the metrics label


def fast_post(app, backend: Backend):
    """Serve valid-room POSTs straight from ASGI: the hot path skips FastAPI's routing and
    dependency machinery (about half the gateway's CPU per message). Anything else — including a
    bad room name, so its 400 stays FastAPI's — goes to the app, whose route documents this one."""

    async def middleware(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            m = POST_PATH.fullmatch(scope["path"])
            if m:
                scope["route"] = POST_ROUTE
                length = next((v.decode("latin-1") for k, v in scope["headers"]
                               if k == b"content-length"), None)
                try:
                    status, doc, headers = await accept_message(backend, m.group(1), length,
                                                                receive)
                except Exception as e:  # noqa: BLE001 - a bug must still answer JSON
                    log.exception("unhandled error on %s", scope["path"])
                    status, doc, headers = 500, {"error": "internal error",
                                                 "detail": type(e).__name__}, {}
                body = json.dumps(doc).encode()
                raw_headers = [(b"content-type", b"application/json"),
                               (b"content-length", str(len(body)).encode())]
                raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
                await send({"type": "http.response.start", "status": status,
                            "headers": raw_headers})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return middleware


async def sse_stream(backend: Backend, metrics: Metrics, room: str, after: int,
                     max_s: float | None, stopping: asyncio.Event):
    """Server-Sent Events for one subscriber: consistent reads, woken by the room's subject."""
    wake = asyncio.Event()
    sub = None
    cursor = after
    end = time.monotonic() + max_s if max_s else None
    retry = []  # quick re-reads after a wake-up: the ack may trail the core message by ms
    idle = 0
    metrics.subscribers.inc()
    try:
        yield f"retry: 1000\n: subscribed to {room} after {after}\n\n"
        while not stopping.is_set() and (end is None or time.monotonic() < end):
            if sub is None and backend.nc is not None and backend.nc.is_connected:
                try:
                    async def _wake(_msg):
                        wake.set()
                    sub = await backend.nc.subscribe(backend.settings.subject(room), cb=_wake)
                except Exception:  # noqa: BLE001 - fall back to polling until it works
                    sub = None
            try:
                msgs = await backend.read(room, cursor, 500)
            except Unavailable:
                msgs = []
            for m in msgs:
                yield f"id: {m['seq']}\nevent: message\ndata: {json.dumps(m)}\n\n"
                cursor = m["seq"]
            if len(msgs) == 500:
                continue
            if msgs:
                retry, idle = [], 0
            wait = retry.pop(0) if retry else SSE_POLL_S
            if end is not None:
                wait = max(0.0, min(wait, end - time.monotonic()))
            try:
                await asyncio.wait_for(wake.wait(), timeout=wait)
                wake.clear()
                retry = [0.005, 0.02, 0.05, 0.1, 0.25]
            except asyncio.TimeoutError:
                if not retry:
                    idle += 1
                    if idle % SSE_KEEPALIVE_EVERY == 0:
                        yield ": keep-alive\n\n"
    finally:
        metrics.subscribers.dec()
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                pass
