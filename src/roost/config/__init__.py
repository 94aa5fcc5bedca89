"""Configuration: one typed schema, layered sources with provenance, safe reloads.

:class:`ServerConfig` is the schema and the value a node runs with. Each field is declared
with :func:`~roost.config.schema.option` (key in the file, documentation, bounds, whether it
may change at run time). :mod:`roost.config.pipeline` builds a ServerConfig from the layers
(defaults < file < environment < command-line flags < runtime overrides) and remembers which
layer set every value and which ones it shadowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roost.config.schema import option

DEFAULT_MODULES = [
    "roster",
    "presence",
    "offline",
    "disco",
    "ping",
    "version",
    "vcard",
    "register",
    "mam",
    "carbons",
    "blocking",
    "csi",
]


@dataclass(slots=True)
class ServerConfig:
    """Everything a node needs to start. Defaults are the in-a-box defaults."""

    data_dir: Path = option(
        Path("./roost-data"), key="server.data_dir", doc="where roost keeps its data"
    )
    domain: str = option("localhost", key="server.domain", doc="the XMPP domain served")
    log_level: str = option(
        "info",
        key="server.log_level",
        doc="logging verbosity",
        runtime=True,
        choices=("debug", "info", "warning", "error"),
    )
    storage_url: str | None = option(
        None,
        key="storage.url",
        doc="PostgreSQL database shared by the nodes (`postgresql://user@host:5432/roost`; "
        "a password may come from PGPASSWORD or ~/.pgpass); none: SQLite in server.data_dir. "
        "`roost storage migrate --to URL` copies an SQLite store into it",
        secret=True,
    )
    storage_thread_nice: int = option(
        10,
        key="storage.thread_nice",
        doc="added to the SQLite storage thread's nice value (Linux), so that archive writes "
        "give way to the event loop on a shared core; 0 keeps the process's priority",
        minimum=0,
        maximum=19,
    )
    host: str = option("127.0.0.1", key="c2s.host", doc="address the client listeners bind")
    c2s_port: int = option(
        5222,
        key="c2s.port",
        doc="STARTTLS port (RFC 6120); 0 picks a free port",
        minimum=0,
        maximum=65535,
    )
    c2s_tls_port: int = option(
        5223,
        key="c2s.tls_port",
        doc="direct TLS port (XEP-0368); 0 picks a free port, -1 disables",
        minimum=-1,
        maximum=65535,
    )
    c2s_reuse_port: bool = option(
        False,
        key="c2s.reuse_port",
        doc="share the client ports with other processes (SO_REUSEPORT), as the nodes "
        "of `roost up --nodes N` do",
    )
    websocket_port: int = option(
        5280,
        key="websocket.port",
        doc="XMPP over WebSocket (RFC 7395) for browser clients, at /xmpp-websocket; "
        "0 picks a free port, -1 disables",
        minimum=-1,
        maximum=65535,
    )
    websocket_tls: bool = option(
        True,
        key="websocket.tls",
        doc="serve wss:// with the server's certificate; false (ws://) only behind a proxy "
        "that terminates TLS, and then c2s.require_tls applies as on an unencrypted stream",
    )
    websocket_host: str = option(
        "", key="websocket.host", doc="address the WebSocket listener binds; empty: c2s.host"
    )
    websocket_origins: list[str] = option(
        [],
        key="websocket.origins",
        doc='web origins allowed to connect ("https://chat.example.com"); empty: any. '
        "Clients that send no Origin (not browsers) are always allowed",
        runtime=True,
    )
    require_tls: bool = option(
        True, key="c2s.require_tls", doc="clients must use TLS before authenticating", runtime=True
    )
    allow_plain_without_tls: bool = option(
        False,
        key="c2s.allow_plain_without_tls",
        doc="allow SASL PLAIN on unencrypted streams (trusted networks and benchmarks only)",
        runtime=True,
    )
    tls_cert: Path | None = option(
        None,
        key="tls.cert",
        doc="certificate chain (PEM); default: a self-signed one. A reload (SIGHUP, "
        "`roost ctl config reload`) reads the files again, for new connections",
        runtime=True,
    )
    tls_key: Path | None = option(
        None, key="tls.key", doc="private key (PEM) of tls.cert", runtime=True, secret=True
    )
    scram_iterations: int = option(
        4096,
        key="auth.scram_iterations",
        doc="PBKDF2 iterations for new SCRAM credentials (RFC 7677: at least 4096)",
        runtime=True,
        minimum=4096,
        maximum=10_000_000,
    )
    registration: bool = option(
        False,
        key="auth.registration",
        doc="let anyone create an account in-band (XEP-0077)",
        runtime=True,
    )
    max_stanza_size: int = option(
        256 * 1024,
        key="limits.max_stanza_size",
        doc="largest stanza accepted, in bytes",
        runtime=True,
        minimum=1024,
        maximum=64 * 1024 * 1024,
    )
    auth_timeout: float = option(
        30.0,
        key="limits.auth_timeout",
        doc="seconds a connection may stay unauthenticated",
        runtime=True,
        minimum=1,
    )
    idle_timeout: float = option(
        0.0,
        key="limits.idle_timeout",
        doc="seconds without input before a stream is closed; 0 disables",
        runtime=True,
        minimum=0,
    )
    keepalive_interval: float = option(
        60.0,
        key="limits.keepalive_interval",
        doc="send a whitespace keepalive after this many seconds of output silence",
        runtime=True,
        minimum=1,
    )
    # 1 s rather than longer: during a login storm every stream still awake holds an expat
    # parser (~5 KiB, much of it small blocks), and the parsers freed later leave the
    # allocator's pools fragmented around the sessions' long-lived objects. 10,000 idle
    # sessions measured 12.5 KiB each at 5 s, 11.7 at 2 s, 10.9 at 1 s (benchmarks.roost_server,
    # docs/benchmarks.md). Waking a parser costs ~7 µs on the next stanza, and a stream woken
    # only now and then sleeps again at once (see C2SSession.data_received); a busy one stays
    # awake.
    hibernate_after: float = option(
        1.0,
        key="limits.hibernate_after",
        doc="seconds of silence after which a stream releases its parser buffers",
        runtime=True,
        minimum=0,
    )
    offline_limit: int = option(
        1000,
        key="limits.offline_messages",
        doc="messages kept per user while offline; more are bounced",
        runtime=True,
        minimum=0,
    )
    offline_expire_after: float = option(
        0.0,
        key="limits.offline_expire_after",
        doc="seconds an offline message is kept before it expires (checked hourly); 0 keeps "
        "messages until their recipient comes back",
        runtime=True,
        minimum=0,
    )
    sm_timeout: float = option(
        300.0,
        key="limits.resume_timeout",
        doc="seconds a dropped stream can be resumed (XEP-0198); 0 disables resumption",
        runtime=True,
        minimum=0,
    )
    sm_max_queue: int = option(
        5000,
        key="limits.unacked_stanzas",
        doc="unacknowledged stanzas kept per stream before it is closed",
        runtime=True,
        minimum=10,
    )
    cluster_node: str | None = option(
        None,
        key="cluster.node",
        doc="this node's name in a cluster; none runs a single node",
    )
    cluster_listen: str = option(
        "127.0.0.1:7400",
        key="cluster.listen",
        doc="HOST:PORT the node listens on for other nodes (mutual TLS; port 0 picks one)",
    )
    cluster_join: list[str] = option(
        [], key="cluster.join", doc="HOST:PORT of nodes to join (seeds); the rest is discovered"
    )
    cluster_heartbeat_timeout: float = option(
        5.0,
        key="cluster.heartbeat_timeout",
        doc="seconds of silence after which a peer node is considered down",
        minimum=0.5,
    )
    modules: list[str] = option(
        DEFAULT_MODULES, key="modules.enabled", doc="the XMPP feature modules to run"
    )
    mam_max_page: int = option(
        250,
        key="mam.max_page",
        doc="most messages one archive query (XEP-0313) returns; larger requests are capped",
        runtime=True,
        minimum=1,
        maximum=10_000,
    )
    mam_default: str = option(
        "always",
        key="mam.default",
        doc="what is archived for users who set no preference (XEP-0313 §6)",
        runtime=True,
        choices=("always", "roster", "never"),
    )
    mam_expire_after: float = option(
        0.0,
        key="mam.expire_after",
        doc="seconds archived messages are kept (checked hourly); 0 keeps them for ever",
        runtime=True,
        minimum=0,
    )
    gate_consecutive_failures: int = option(
        5,
        key="gates.consecutive_failures",
        doc="a gate's partition opens after this many failed calls in a row; 0 disables",
        runtime=True,
        minimum=0,
    )
    gate_failure_rate: float = option(
        0.5,
        key="gates.failure_rate",
        doc="... or when this share of its calls in gates.window failed (given "
        "gates.minimum_calls); 0 disables",
        runtime=True,
        minimum=0,
        maximum=1,
    )
    gate_slow_call_rate: float = option(
        0.8,
        key="gates.slow_call_rate",
        doc="... or when this share of its calls in gates.window were slow; 0 disables",
        runtime=True,
        minimum=0,
        maximum=1,
    )
    gate_slow_call_threshold: float = option(
        2.0,
        key="gates.slow_call_threshold",
        doc="seconds after which a call counts as slow; 0 disables",
        runtime=True,
        minimum=0,
    )
    gate_minimum_calls: int = option(
        20,
        key="gates.minimum_calls",
        doc="calls a window must hold before its failure and slow-call rates count",
        runtime=True,
        minimum=1,
    )
    gate_window: float = option(
        10.0,
        key="gates.window",
        doc="seconds of outcomes the failure and slow-call rates are computed over",
        runtime=True,
        minimum=0.1,
    )
    gate_open_for: float = option(
        5.0,
        key="gates.open_for",
        doc="seconds an open partition refuses calls before trial calls are let through",
        runtime=True,
        minimum=0.01,
    )
    gate_half_open_calls: int = option(
        3,
        key="gates.half_open_calls",
        doc="trial calls a half-open partition lets through; all must succeed to close it",
        runtime=True,
        minimum=1,
    )
    gate_max_concurrent: int = option(
        0,
        key="gates.max_concurrent",
        doc="calls in flight per partition beyond which calls are refused at once "
        "(bulkhead); 0 means no limit",
        runtime=True,
        minimum=0,
    )
    gate_call_timeout: float = option(
        5.0,
        key="gates.call_timeout",
        doc="seconds a gated call may take before it is abandoned and counts as failed; "
        "0 waits forever",
        runtime=True,
        minimum=0,
    )
    gate_max_open_share: float = option(
        0.5,
        key="gates.max_open_share",
        doc="largest share of a gate's partitions open at once (one may always open)",
        runtime=True,
        minimum=0,
        maximum=1,
    )
    admin_socket: Path = option(
        Path("ctl.sock"),
        key="admin.socket",
        doc="unix socket of `roost ctl` and `roost shell` (mode 0600, same user or root only); "
        "a relative path is in the data directory",
    )
    admin_shell: bool = option(
        True,
        key="admin.shell",
        doc="allow `roost shell`, a Python prompt inside the running node (audited in audit.log)",
        runtime=True,
    )
    admin_eval_timeout: float = option(
        30.0,
        key="admin.eval_timeout",
        doc="seconds one `roost shell` evaluation may run before it is cancelled",
        runtime=True,
        minimum=0.1,
        maximum=86400,
    )
    admin_node_timeout: float = option(
        10.0,
        key="admin.node_timeout",
        doc="seconds each other node of the cluster has to answer `roost ctl --node/--all` "
        "before it is reported as not answering",
        runtime=True,
        minimum=0.1,
        maximum=3600,
    )
    admin_listen: str = option(
        "",
        key="admin.listen",
        doc="HOST:PORT of a TLS listener for `roost ctl --remote`: mutual TLS with the cluster "
        "CA, administrator certificates only (`roost cluster issue --admin NAME`); needs "
        "cluster.node; empty: off",
    )
    metrics_listen: str = option(
        "",
        key="metrics.listen",
        doc="HOST:PORT of a Prometheus /metrics endpoint (sessions, connections, every gate "
        "partition's state and counters); no authentication, so loopback or a monitoring "
        "network only; port 0 picks a free one; empty: off",
    )
