"""`talk`: the messaging gateway — a small async HTTP service in front of NATS JetStream.

- `model`   pure: request/response shapes, validation, stored payload encoding.
- `backend` the NATS edge: connection, stream creation, publish, consistent reads, readiness.
- `app`     the FastAPI app (`create_app(settings)`), metrics and error handlers.
- `cli`     `twinsite talk serve ...` (uvicorn).
"""

from .backend import Backend, Settings, Unavailable
from .app import create_app

__all__ = ["Backend", "Settings", "Unavailable", "create_app"]
