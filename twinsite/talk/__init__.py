"""`talk`: the messaging gateway — a small async HTTP service in front of NATS JetStream.

- `model`   pure: request/response shapes, validation, stored payload encoding.
- `backend` the NATS edge: connection, stream creation, publish, consistent reads, readiness.
- `auth`    bearer tokens: generate, token files (0600), constant-time check.
- `app`     the FastAPI app (`create_app(settings, tokens=...)`), metrics and error handlers.
- `cli`     `twinsite talk serve ...` (uvicorn).
"""

from .backend import Backend, Settings, Unavailable
from . import auth
from .app import create_app

__all__ = ["Backend", "Settings", "Unavailable", "auth", "create_app"]
