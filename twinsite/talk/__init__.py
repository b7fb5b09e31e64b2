"""`talk`: the messaging gateway — a small async HTTP service in front of NATS JetStream.

- `model`   pure: request/response shapes, validation, stored payload encoding.
- `backend` the NATS edge: connection, stream creation, publish, consistent reads, readiness.
- `auth`    bearer tokens: generate, token files (0600), constant-time check.
- `app`     the FastAPI app (`create_app(settings, tokens=...)`), metrics and error handlers.
- `cli`     `twinsite talk serve ...` (uvicorn).

The server side is imported lazily: clients (the lab, the traffic driver) use `talk.auth` without
paying for FastAPI, pydantic and nats-py.
"""

from . import auth

_LAZY = {"Backend": "backend", "Settings": "backend", "Unavailable": "backend",
         "create_app": "app"}

__all__ = ["Backend", "Settings", "Unavailable", "auth", "create_app"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
