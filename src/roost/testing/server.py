"""A complete roost server on ephemeral ports, for tests and tools.

Start-up cost matters here because every end-to-end test pays it: the self-signed certificate
is generated once per process and copied into each server's data directory, so that a server
starts in a few milliseconds.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from roost.c2s.tls import ensure_self_signed
from roost.config import ServerConfig
from roost.core.server import Server

_CERT_CACHE: dict[str, Path] = {}


def _shared_certificate(domain: str) -> Path:
    directory = _CERT_CACHE.get(domain)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="roost-tls-"))
        ensure_self_signed(directory, domain)
        _CERT_CACHE[domain] = directory
    return directory


@dataclass
class RunningServer:
    """A started server and what a test needs to reach it."""

    server: Server
    host: str
    port: int  # STARTTLS
    tls_port: int  # direct TLS
    domain: str
    data_dir: Path
    cert: Path  # the server's self-signed certificate, to trust in clients

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def create_user(self, name: str, password: str = "secret") -> str:
        """Create ``name@domain`` and return its bare JID."""
        jid = name if "@" in name else f"{name}@{self.domain}"
        if not await self.server.auth.create_user(jid, password):
            raise ValueError(f"{jid} already exists")
        return jid


@asynccontextmanager
async def running_server(
    data_dir: Path, config: ServerConfig | None = None, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """Start a server in ``data_dir`` on free loopback ports; stop it on exit."""
    base = config if config is not None else ServerConfig()
    settings = {"data_dir": data_dir, "c2s_port": 0, "c2s_tls_port": 0, **overrides}
    config = replace(base, **settings)
    tls_dir = data_dir / "tls"
    if config.tls_cert is None and not (tls_dir / "cert.pem").exists():
        tls_dir.mkdir(parents=True, exist_ok=True)
        shared = _shared_certificate(config.domain)
        shutil.copy(shared / "cert.pem", tls_dir / "cert.pem")
        shutil.copy(shared / "key.pem", tls_dir / "key.pem")
    server = Server(config)
    await server.start()
    try:
        ports = server.ports
        yield RunningServer(
            server=server,
            host=config.host,
            port=ports["c2s"],
            tls_port=ports.get("c2s_tls", -1),
            domain=config.domain,
            data_dir=data_dir,
            cert=config.tls_cert or tls_dir / "cert.pem",
        )
    finally:
        await server.stop()
