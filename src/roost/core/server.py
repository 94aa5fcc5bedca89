"""The server: one roost node, from storage to listeners, started and stopped as a whole.

:class:`Server` owns the parts every module reaches through it: ``config``, ``storage``,
``auth``, ``hooks``, ``iq`` (the IQ handler tables), ``sessions`` (the session registry),
``router`` and ``modules``. ``start()`` opens storage, starts the modules, then the listeners;
``stop()`` reverses that, closing every stream with ``<system-shutdown/>`` first and flushing
storage last, so that nothing accepted is lost on the way down.

Each node also runs its control channel (:mod:`roost.admin`): a unix socket in the data
directory for ``roost ctl`` and ``roost shell``. Claiming it is the first thing ``start()``
does, so a second node on the same data directory refuses to start; closing it is the last
thing ``stop()`` does, so ``roost ctl stop`` returns once everything is flushed. The server
keeps the configuration as loaded (``loaded``: provenance, files), the inputs it came from
(``config_source``) and a ``config_version`` bumped by every reload that changes something
(:mod:`roost.admin.reload`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from roost import __version__
from roost.admin.channel import ControlChannel
from roost.c2s.listener import C2SListener
from roost.c2s.resumption import ResumptionTable
from roost.c2s.tls import ensure_self_signed, server_context
from roost.cluster.node import ClusterNode
from roost.cluster.sessions import ClusterRegistry
from roost.config import ServerConfig
from roost.core.auth import Authenticator
from roost.core.hooks import Hooks
from roost.core.iq import IQTable
from roost.core.module import Module, module_class
from roost.gate import Gates, policy_of
from roost.gate.cluster import GateSync
from roost.gate.storage import STORAGE_GATE, GatedStorage
from roost.router.registry import SessionRegistry
from roost.router.router import Router
from roost.storage import Storage, open_storage

if TYPE_CHECKING:
    from roost.admin.reload import ConfigSource
    from roost.config.pipeline import LoadedConfig
    from roost.core.metrics import MetricsEndpoint

log = logging.getLogger(__name__)


class Server:
    """One roost node. See the module docstring."""

    def __init__(
        self,
        config: ServerConfig,
        storage: Storage | None = None,
        *,
        loaded: LoadedConfig | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.config = config
        self.loaded = loaded
        self.config_source = source
        self.config_version = loaded.version if loaded is not None else 1
        self.version = __version__
        # Every call to a dependency passes its gate (roost.gate); the store's is "storage".
        self.gates = Gates(policy_of(config), node=config.cluster_node or "")
        if storage is None:
            storage = open_storage(
                config.data_dir,
                url=config.storage_url,
                thread_nice=config.storage_thread_nice,
            )
        backend = storage
        if not isinstance(backend, GatedStorage):
            backend = GatedStorage(backend, self.gates.gate(STORAGE_GATE))
        self.storage: Storage = backend
        self.auth = Authenticator(self.storage, config.scram_iterations)
        self.hooks = Hooks()
        self.iq = IQTable()
        # Forwarded stanza being delivered right now, and whether routing is restricted to
        # local sessions (set by roost.cluster.forwarding around one delivery).
        self.delivery_token: tuple[str, int] | None = None
        self.cluster_local_only = False
        self.cluster: ClusterNode | None = None
        self.sessions: SessionRegistry | ClusterRegistry
        self.gate_sync: GateSync | None = None
        if config.cluster_node:
            self.cluster = ClusterNode(self)
            self.sessions = self.cluster.registry
            self.gate_sync = GateSync(self.cluster.mesh, self.gates)  # trips shared cluster-wide
        else:
            self.sessions = SessionRegistry()
        self.resumption = ResumptionTable()
        self._expiry: asyncio.TimerHandle | None = None
        self.router = Router(self)
        self.modules: dict[str, Module] = {}
        self.tls_context: ssl.SSLContext | None = None
        self.listeners: list[C2SListener] = []
        self.started_at = 0.0
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.control = ControlChannel(self)
        self.metrics: MetricsEndpoint | None = None  # with metrics.listen

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work that belongs to no session (a disconnect's presence broadcast, say).

        The task is tracked, its failure logged, and ``stop()`` waits for it, so nothing
        started this way is lost or fails silently.
        """
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    async def settle(self) -> None:
        """Wait until background work (reroutes, disconnect broadcasts) is done."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def confirm_delivery(self, tokens: list[tuple[str, int]]) -> None:
        """Forwarded stanzas are safe here now (acknowledged, or routed on)."""
        if self.cluster is not None:
            self.cluster.forwarder.confirm(tokens)

    @property
    def domain(self) -> str:
        return self.config.domain

    async def start(self) -> None:
        config = self.config
        self.started_at = time.time()
        self.control.claim()  # raises when another node runs on this data directory
        try:
            await self.storage.open()
        except BaseException:
            self.control.release()
            raise
        try:
            self.tls_context = self.make_tls_context(config)
            for name in config.modules:
                self.modules[name] = module_class(name)(self)
            for module in self.modules.values():
                module.start()
            if self.cluster is not None:
                await self.cluster.start()
            self._expiry = asyncio.get_running_loop().call_later(1.0, self._expire_detached)
            self.listeners.append(
                await C2SListener.start(self, config.host, config.c2s_port, direct_tls=False)
            )
            if config.c2s_tls_port >= 0:
                self.listeners.append(
                    await C2SListener.start(self, config.host, config.c2s_tls_port, direct_tls=True)
                )
            if config.websocket_port >= 0:
                self.listeners.append(
                    await C2SListener.start(
                        self,
                        config.websocket_host or config.host,
                        config.websocket_port,
                        direct_tls=config.websocket_tls,
                        websocket=True,
                    )
                )
            await self.control.start()
            if config.metrics_listen:
                from roost.core.metrics import MetricsEndpoint  # prometheus-client: only if on

                self.metrics = MetricsEndpoint(self)
                self.metrics.start(config.metrics_listen)
        except BaseException:
            await self.stop()
            raise

    def _expire_detached(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for session in self.resumption.expired(loop.time()):
                session.expire()
        finally:
            self._expiry = loop.call_later(1.0, self._expire_detached)

    def make_tls_context(self, config: ServerConfig) -> ssl.SSLContext:
        """A TLS context from the configured certificate (raises if it cannot be loaded)."""
        if config.tls_cert is not None and config.tls_key is not None:
            cert, key = config.tls_cert, config.tls_key
        else:
            cert, key = ensure_self_signed(config.data_dir / "tls", config.domain)
        context = server_context(cert, key)
        context.sni_callback = self._current_tls
        return context

    def _current_tls(self, tls: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        # A reload replaces tls_context; whoever captured an older context (the direct TLS
        # listener keeps the one it started with) hands new handshakes to the current one.
        current = self.tls_context
        if current is not None and current is not context:
            tls.context = current

    @property
    def ports(self) -> dict[str, int]:
        """The bound ports by listener kind (``c2s``, ``c2s_tls``, ``websocket``)."""
        return {listener.kind: listener.port for listener in self.listeners}

    def request_stop(self) -> None:
        """Stop soon, in a task of its own (the ``stop`` admin command's reply goes first)."""
        if self._stop_task is None and not self._stopping:
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began: background work should finish, not wait for better
        times."""
        return self._stopping

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            await self._stop()
        finally:
            await self.control.close()
            self._stopped.set()

    async def _stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        self.control.stop_accepting()
        for listener in self.listeners:
            listener.stop_accepting()
        for listener in self.listeners:
            await listener.close_all()
        if self._expiry is not None:
            self._expiry.cancel()
        for session in self.resumption.expired(float("inf")):
            session.expire()  # detached sessions end now; their unacked stanzas are rerouted
        await self.settle()
        if self.cluster is not None:
            await self.cluster.stop()
        for module in reversed(list(self.modules.values())):
            try:
                module.stop()
            except Exception:
                log.exception("module %s failed to stop", module.name)
        self.modules.clear()
        await self.storage.close()

    def statistics(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "domain": self.domain,
            "uptime": time.time() - self.started_at if self.started_at else 0.0,
            "connections": sum(len(listener) for listener in self.listeners),
            **({"cluster": self.cluster.statistics()} if self.cluster is not None else {}),
            **self.router.statistics(),
        }

    def __repr__(self) -> str:
        return f"<Server {self.domain} {self.ports} sessions={len(self.sessions)}>"
