"""Pure shapes of the talk API: what a client sends, what the stream stores, what a read returns."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field

ROOM_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ROOM_RE = re.compile(ROOM_PATTERN)
# ids travel in the Nats-Msg-Id header: printable ASCII, no spaces or control characters
ID_PATTERN = r"^[!-~]{1,128}$"
MAX_SENDER = 128
MAX_READ_LIMIT = 1000


class MessageIn(BaseModel):
    """A message as posted by a client."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(pattern=ID_PATTERN, description="client-chosen id; a resend is deduplicated")
    sender: str = Field(min_length=1, max_length=MAX_SENDER)
    body: str


class Ack(BaseModel):
    room: str
    id: str
    seq: int = Field(description="stream sequence of the message (the same on a resend)")


class Message(BaseModel):
    id: str
    sender: str
    body: str
    seq: int
    ts: float = Field(description="unix seconds when a gateway accepted the message")


class Messages(BaseModel):
    messages: list[Message]


class Error(BaseModel):
    error: str
    detail: object = None


class Health(BaseModel):
    status: str
    detail: object = None


def encode(msg: MessageIn, ts: float) -> bytes:
    return json.dumps({"id": msg.id, "sender": msg.sender, "body": msg.body, "ts": ts}).encode()


def decode(data: bytes | None, seq: int) -> dict | None:
    """A stored payload as a read result; None when it is not a talk message (skipped)."""
    try:
        d = json.loads(data or b"")
        out = {"id": d["id"], "sender": d["sender"], "body": d["body"], "seq": seq,
               "ts": float(d["ts"])}
    except (ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(out[k], str) for k in ("id", "sender", "body")):
        return None
    return out


def msg_id_header(room: str, msg_id: str) -> str:
    """The Nats-Msg-Id: scoped by room, so one id in two rooms is two messages (a room has no ':')."""
    return f"{room}:{msg_id}"
