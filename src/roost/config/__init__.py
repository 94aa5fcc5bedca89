"""Server settings.

One typed record for now; the layered configuration pipeline (file, environment, flags,
runtime overrides with provenance) builds this same record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(slots=True)
class ServerConfig:
    """Everything a node needs to start. Defaults are the in-a-box defaults."""

    data_dir: Path = Path("./roost-data")
    domain: str = "localhost"
    host: str = "127.0.0.1"
    c2s_port: int = 5222  # STARTTLS (RFC 6120 §5); 0 picks a free port
    c2s_tls_port: int = 5223  # direct TLS (XEP-0368); 0 picks a free port, -1 disables
    log_level: str = "info"
    tls_cert: Path | None = None  # default: a self-signed certificate in data_dir/tls
    tls_key: Path | None = None
    require_tls: bool = True  # clients must STARTTLS before authenticating
    allow_plain_without_tls: bool = False  # SASL PLAIN on an unencrypted stream
    max_stanza_size: int = 256 * 1024
    auth_timeout: float = 30.0  # seconds a connection may stay unauthenticated
    idle_timeout: float = 0.0  # seconds without input before closing; 0 disables
    keepalive_interval: float = 60.0  # whitespace keepalive after this much output silence
    hibernate_after: float = 5.0  # release an idle stream's parser buffers after this long
    scram_iterations: int = 4096
    registration: bool = False  # XEP-0077 account creation by anyone who connects
    offline_limit: int = 1000  # messages kept per user while offline
    sm_timeout: float = 300.0  # seconds a dropped stream can be resumed (XEP-0198); 0 disables
    sm_max_queue: int = 5000  # unacknowledged stanzas kept per stream
    modules: list[str] = field(
        default_factory=lambda: [
            "roster",
            "presence",
            "offline",
            "disco",
            "ping",
            "version",
            "vcard",
            "register",
        ]
    )
