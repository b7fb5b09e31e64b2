"""Bearer tokens of the talk API: generate, keep (mode 0600), load, and check in constant time.

The one home of these facts: the gateway (`talk serve --token-file`), the lab (which writes one
token per lab into its state dir), the traffic driver, the drill, the benches and the tests all
use this module. A token file holds one token per line (more than one line: all are accepted, so a
token can be rotated without downtime); blank lines are ignored.

Hand-written rather than FastAPI's `HTTPBearer` dependency because the check must also guard the
ASGI fast path (`app.fast_post`), before a single byte of the body is read, and answer the same
JSON 401 everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ENV_FILE = "TWINSITE_TALK_TOKEN_FILE"  # where a gateway or a client finds its token file
LAB_TOKEN_FILE = "talk-token"  # the lab's token, in the lab's state dir
SCHEME = "bearer"  # the OpenAPI securitySchemes name
REALM = "twinsite"
MIN_LENGTH = 16
# RFC 6750 b64token
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class TokenError(ValueError):
    """A token file that cannot be used; the message is one line naming the file."""


def _digest(token: bytes) -> bytes:
    # compare_digest's time depends on the lengths: compare fixed-size digests instead
    return hashlib.sha256(token).digest()


@dataclass(frozen=True)
class Tokens:
    """The tokens a gateway accepts (digests only: a repr or a core dump shows no token)."""

    digests: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def of(cls, *tokens: str) -> "Tokens":
        for t in tokens:
            check_token(t, "token")
        if not tokens:
            raise TokenError("no token given")
        return cls(tuple(_digest(t.encode()) for t in tokens))

    def accepts(self, authorization: bytes | None) -> bool:
        """Is this `Authorization` header value `Bearer <one of our tokens>`? Constant time in
        the token (every digest is compared, no early exit)."""
        token = bearer(authorization)
        if token is None:
            return False
        d = _digest(token)
        ok = False
        for want in self.digests:
            ok |= hmac.compare_digest(d, want)
        return ok


def bearer(authorization: bytes | None) -> bytes | None:
    """The credentials of `Bearer <token>` (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    token = token.strip(b" ")
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


def check_token(token: str, where: str) -> str:
    if len(token) < MIN_LENGTH or not TOKEN_RE.fullmatch(token):
        raise TokenError(f"{where}: a token must be at least {MIN_LENGTH} characters of "
                         f"A-Z a-z 0-9 - . _ ~ + / (RFC 6750)")
    return token


def parse(text: str, where: str) -> Tokens:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TokenError(f"{where}: no token in the file")
    return Tokens.of(*(check_token(t, f"{where} line {i + 1}") for i, t in enumerate(lines)))


def _read(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise TokenError(f"token file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise TokenError(f"token file {path}: not text") from None


def load(path: str | os.PathLike) -> Tokens:
    """Every token of a token file (what a gateway accepts)."""
    return parse(_read(path), f"token file {path}")


def read_token(path: str | os.PathLike) -> str:
    """The first token of a token file (what a client sends)."""
    text = _read(path)
    parse(text, f"token file {path}")
    return next(ln.strip() for ln in text.splitlines() if ln.strip())


def generate() -> str:
    return secrets.token_urlsafe(32)  # 256 bits from the OS CSPRNG, 43 URL-safe characters


def write(path: str | os.PathLike, token: str | None = None) -> Path:
    """Write a token file (a new token unless given), mode 0600 from its first byte on, replaced
    atomically. Returns the path."""
    path = Path(path)
    token = check_token(token, "token") if token is not None else generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing tmp file keeps its mode with O_CREAT: force it
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_token(path: str | os.PathLike | None = None) -> str:
    """A client's token: from `path`, else the file named by $TWINSITE_TALK_TOKEN_FILE."""
    path = path or os.environ.get(ENV_FILE)
    if not path:
        raise TokenError(f"no API token: set {ENV_FILE} to a token file")
    return read_token(path)
