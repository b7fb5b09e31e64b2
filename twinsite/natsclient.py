"""How a twinsite NATS client proves who it is: user, password and the CA that signed the servers.

One small value handed to every client (gateway, supervisor, chaos drivers, tests, benches), so a
new hop cannot forget TLS or credentials. `options()` is what `nats.connect` takes.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NatsAuth:
    user: str
    password: str = field(repr=False)
    ca_file: str | None = None  # TLS with this CA (server names verified); None: plain TCP

    def tls_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def options(self) -> dict:
        """Keyword arguments for `nats.connect` / `NATS().connect`."""
        out: dict = {"user": self.user, "password": self.password}
        tls = self.tls_context()
        if tls is not None:
            out["tls"] = tls
        return out


def from_files(user: str, password_file: str | Path, ca_file: str | Path | None) -> NatsAuth:
    """A password kept in a file (mode 0600), never on a command line."""
    password = Path(password_file).read_text().strip()
    if not password:
        raise ValueError(f"{password_file}: empty password file")
    return NatsAuth(user, password, str(ca_file) if ca_file else None)


def connect_options(auth: NatsAuth | None) -> dict:
    return auth.options() if auth is not None else {}


class _QuietSslEof(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes ("returning true from eof_received()
    has no effect when using ssl"): harmless, and it drowned the drill's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietSslEof())
