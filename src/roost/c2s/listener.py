"""Client listeners: accept connections, and sweep them for timeouts and hibernation.

Timers are not per connection. One sweep a second walks every connection of the listener and
applies the time-based rules: unauthenticated connections past ``auth_timeout`` and silent
ones past ``idle_timeout`` are closed with ``<connection-timeout/>``; a whitespace keepalive
(RFC 6120 §4.6.1) goes to connections that have been sent nothing for ``keepalive_interval``,
which is how a dead peer is eventually noticed; and streams idle for ``hibernate_after``
release their parser's buffers (see :mod:`roost.xmpp.parser`); stream-management clients
with unacknowledged stanzas are asked for an acknowledgement on their turn (see
:mod:`roost.c2s.sm`, ``SWEEP_TURN``). A sweep over ten thousand
connections costs a few milliseconds, far less than a timer per connection re-armed on every
read.

The same listener serves XMPP over WebSocket (RFC 7395, :mod:`roost.c2s.websocket`) when
started with ``websocket=True``: only the connection class and the session's framing differ.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from roost.c2s.connection import C2SConnection
from roost.c2s.framing import TCP, WEBSOCKET
from roost.c2s.session import C2SSession
from roost.c2s.state import State
from roost.c2s.websocket import WebSocketConnection
from roost.core.memory import release_free_memory
from roost.xmpp.errors import StreamError

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
TRIM_AFTER = 256  # hibernations in one sweep that make returning memory to the OS worth it


class C2SListener:
    def __init__(self, server: Server, direct_tls: bool, websocket: bool = False) -> None:
        self._server = server
        self.direct_tls = direct_tls
        self.websocket = websocket
        self._framing = WEBSOCKET if websocket else TCP
        self.kind = "websocket" if websocket else "c2s_tls" if direct_tls else "c2s"
        self.port = 0
        # The session of a connection is its handler, which stream resumption may change.
        self._connections: set[C2SConnection] = set()
        self._aserver: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    async def start(
        cls, server: Server, host: str, port: int, *, direct_tls: bool, websocket: bool = False
    ) -> C2SListener:
        self = cls(server, direct_tls, websocket)
        loop = asyncio.get_running_loop()
        tls = server.tls_context if direct_tls else None
        self._aserver = await loop.create_server(
            self._connection_factory(tls),
            host,
            port,
            reuse_address=True,
            reuse_port=server.config.c2s_reuse_port or None,
            backlog=4096,
        )
        self.port = self._aserver.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._tick)
        return self

    def _connection_factory(self, tls: ssl.SSLContext | None) -> Callable[[], C2SConnection]:
        if not self.websocket:
            return lambda: C2SConnection(self._new_session, tls_context=tls)
        server = self._server

        def websocket() -> C2SConnection:
            config = server.config  # read per connection: a reload applies to new ones
            # A message may be up to twice the stanza limit, so that a stanza just over it is
            # read and answered with <policy-violation/>; beyond that the WebSocket layer
            # refuses the message unread (close code 1009).
            return WebSocketConnection(
                self._new_session,
                tls_context=tls,
                max_message=2 * config.max_stanza_size,
                origins=config.websocket_origins,
            )

        return websocket

    def _new_session(self, connection: C2SConnection) -> C2SSession:
        session = C2SSession(self._server, connection, self._framing)
        self._connections.add(connection)
        connection.on_close = self._connections.discard
        return session

    def __len__(self) -> int:
        return len(self._connections)

    def sessions(self) -> list[C2SSession]:
        return [s for c in self._connections if isinstance(s := c.handler, C2SSession)]

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.sweep(loop.time())
        finally:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._tick)

    def sweep(self, now: float) -> None:
        """Apply the time-based rules as of ``now`` (the loop's clock); see the module doc."""
        config = self._server.config
        auth_deadline = now - config.auth_timeout
        idle_deadline = now - config.idle_timeout if config.idle_timeout > 0 else None
        keepalive_deadline = now - config.keepalive_interval
        hibernate_deadline = now - config.hibernate_after
        hibernated = 0
        for connection in list(self._connections):
            session = connection.handler
            if connection.closing or not isinstance(session, C2SSession):
                continue
            if session.state is not State.ESTABLISHED:
                if connection.connected_at < auth_deadline:
                    session.stream_error(
                        StreamError("connection-timeout", "authentication took too long")
                    )
                continue
            received = connection.last_received
            if idle_deadline is not None and received < idle_deadline:
                session.stream_error(StreamError("connection-timeout", "idle too long"))
                continue
            if connection.last_sent < keepalive_deadline:
                connection.keepalive()
            session.sweep_sm()
            if received < hibernate_deadline and not session.hibernating and session.hibernate():
                hibernated += 1
        if hibernated >= TRIM_AFTER:
            # Many streams just gave their buffers back; let the process shrink too.
            release_free_memory()

    def stop_accepting(self) -> None:
        if self._aserver is not None:
            self._aserver.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def close_all(self) -> None:
        """End every stream with <system-shutdown/> (RFC 6120 §4.9.3.22) and wait for them."""
        for session in self.sessions():
            session.stream_error(StreamError("system-shutdown"))
        if self._aserver is not None:
            try:
                await asyncio.wait_for(self._aserver.wait_closed(), timeout=5)
            except TimeoutError:
                log.warning("%s listener: some connections did not close in time", self.kind)
