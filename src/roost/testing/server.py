"""A complete roost server on ephemeral ports, for tests and tools.

Start-up cost matters here because every end-to-end test pays it: the self-signed certificate
is generated once per process and copied into each server's data directory, so that a server
starts in a few milliseconds.

The configuration is built like ``roost up`` builds it (:mod:`roost.config.pipeline`), with the
test's settings as typed values given in code (see :class:`roost.admin.reload.ConfigSource`;
they are not range-checked) and without the environment: a ``roost.toml`` and the runtime
overrides in the data directory apply, so a second server on the same data directory sees
what ``roost ctl config set`` persisted, and ``config reload`` works as on a real node.

White-box tests evaluate code inside the node with :meth:`RunningServer.eval` and
:meth:`RunningServer.call`, with the semantics of ``roost shell`` (top-level ``await``, one
namespace with the shell's helpers, a timeout). Here the node runs in the test's own event
loop, so values come back as objects; a node in another process offers the same through its
control channel (:class:`roost.admin.client.AsyncControlClient`), with JSON values.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from roost.admin.reload import ConfigSource
from roost.admin.shell import Evaluation, Evaluator
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
    websocket_port: int = -1  # XMPP over WebSocket (RFC 7395); -1 when disabled
    _evaluator: Evaluator | None = field(default=None, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def websocket_url(self) -> str:
        """Where a browser client connects (``wss://`` unless ``websocket_tls`` is off)."""
        scheme = "wss" if self.server.config.websocket_tls else "ws"
        return f"{scheme}://{self.host}:{self.websocket_port}/xmpp-websocket"

    async def create_user(self, name: str, password: str = "secret") -> str:
        """Create ``name@domain`` and return its bare JID."""
        jid = name if "@" in name else f"{name}@{self.domain}"
        if not await self.server.auth.create_user(jid, password):
            raise ValueError(f"{jid} already exists")
        return jid

    @property
    def socket(self) -> Path:
        """The node's control socket (for ``roost ctl --socket`` or the admin client)."""
        assert self.server.control.path is not None
        return self.server.control.path

    async def evaluate(self, code: str) -> Evaluation:
        """Evaluate ``code`` in the node as ``roost shell`` does; the whole outcome."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.server)
        return await self._evaluator.evaluate(code, limit=self.server.config.admin_eval_timeout)

    async def eval(self, code: str) -> Any:
        """The value of ``code`` evaluated in the node; what it raised is raised here."""
        return _outcome(await self.evaluate(code))

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` run in the node (awaited if it returns an awaitable)."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.server)
        limit = self.server.config.admin_eval_timeout
        return _outcome(await self._evaluator.call(function, *args, limit=limit, **kwargs))


def _outcome(evaluation: Evaluation) -> Any:
    if evaluation.error is not None:
        raise evaluation.error
    return evaluation.value


@asynccontextmanager
async def running_server(
    data_dir: Path, config: ServerConfig | None = None, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """Start a server in ``data_dir`` on free loopback ports; stop it on exit."""
    base = config if config is not None else ServerConfig()
    settings = {
        "data_dir": data_dir,
        "c2s_port": 0,
        "c2s_tls_port": 0,
        "websocket_port": 0,
        **overrides,
    }
    source = ConfigSource.of_config(replace(base, **settings))
    loaded = source.build()
    config = loaded.config
    tls_dir = data_dir / "tls"
    if config.tls_cert is None and not (tls_dir / "cert.pem").exists():
        tls_dir.mkdir(parents=True, exist_ok=True)
        shared = _shared_certificate(config.domain)
        shutil.copy(shared / "cert.pem", tls_dir / "cert.pem")
        shutil.copy(shared / "key.pem", tls_dir / "key.pem")
    server = Server(config, loaded=loaded, source=source)
    await server.start()
    try:
        ports = server.ports
        yield RunningServer(
            server=server,
            host=config.host,
            port=ports["c2s"],
            tls_port=ports.get("c2s_tls", -1),
            websocket_port=ports.get("websocket", -1),
            domain=config.domain,
            data_dir=data_dir,
            cert=config.tls_cert or tls_dir / "cert.pem",
        )
    finally:
        await server.stop()


_CLUSTER_CACHE: dict[tuple[str, ...], Path] = {}


def _cluster_credentials(data_dir: Path, names: list[str]) -> None:
    """A cluster CA and a certificate per node under ``data_dir/cluster`` (made once per
    process and copied: key generation is the slow part)."""
    from roost.cluster.ca import init_cluster, issue

    key = tuple(names)
    cached = _CLUSTER_CACHE.get(key)
    if cached is None:
        cached = Path(tempfile.mkdtemp(prefix="roost-cluster-"))
        init_cluster(cached, names[0])
        for name in names:
            issue(cached, name)
        _CLUSTER_CACHE[key] = cached
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cached / "cluster", data_dir / "cluster", dirs_exist_ok=True)


@dataclass
class RunningCluster:
    """Nodes of one cluster in this process, all on loopback."""

    nodes: list[RunningServer]

    def __getitem__(self, index: int) -> RunningServer:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    async def until(self, condition: Callable[[], bool], limit: float = 10.0) -> None:
        """Wait (on cluster membership changes) until ``condition()`` holds."""
        import asyncio

        async def wait() -> None:
            while not condition():
                waits = [
                    n.server.cluster.registry.changed()  # type: ignore[union-attr]
                    for n in self.nodes
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()

        async with asyncio.timeout(limit):
            await wait()

    async def connected(self) -> None:
        """Wait until every node has a link to every other."""
        want = len(self.nodes) - 1
        await self.until(
            lambda: all(
                len(n.server.cluster.mesh.peers()) == want  # type: ignore[union-attr]
                for n in self.nodes
            )
        )


@asynccontextmanager
async def running_cluster(
    data_dir: Path, nodes: int = 3, **overrides: Any
) -> AsyncIterator[RunningCluster]:
    """Start ``nodes`` nodes of one cluster sharing ``data_dir`` (and its SQLite store)."""
    from contextlib import AsyncExitStack

    names = [f"node{i + 1}" for i in range(nodes)]
    _cluster_credentials(data_dir, names)
    started: list[RunningServer] = []
    heartbeat = overrides.pop("cluster_heartbeat_timeout", 2.0)
    async with AsyncExitStack() as stack:
        seed: list[str] = []
        for name in names:
            node = await stack.enter_async_context(
                running_server(
                    data_dir,
                    cluster_node=name,
                    cluster_listen="127.0.0.1:0",
                    cluster_join=list(seed),
                    cluster_heartbeat_timeout=heartbeat,
                    admin_socket=Path(f"ctl-{name}.sock"),
                    **overrides,
                )
            )
            if not seed:
                host, port = node.server.cluster.address  # type: ignore[union-attr]
                seed = [f"{host}:{port}"]
            started.append(node)
        cluster = RunningCluster(started)
        await cluster.connected()
        yield cluster
