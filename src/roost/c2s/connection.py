"""The I/O layer of a client connection: an asyncio Protocol, TLS, and write coalescing.

One :class:`C2SConnection` per TCP connection, driven by callbacks (no task per connection):
bytes from the socket go to the session, bytes from the session go to the socket. Nothing here
knows XMPP.

TLS is done here with :class:`ssl.SSLObject` over memory BIOs instead of asyncio's TLS
transport, for two reasons. asyncio's (and uvloop's) SSL protocol allocates a 256 KiB receive
buffer per connection, which would make every idle TLS session cost more than twenty times
what the rest of a session costs; here a connection holds OpenSSL's own state and nothing
else. And STARTTLS (RFC 6120 §5) becomes a mode switch on the same object rather than a
transport swap, the same code serving direct TLS (XEP-0368) too.

Writes are coalesced per event-loop turn: :meth:`C2SConnection.write` queues, and one
callback per turn flushes every connection written to, so a burst of stanzas for one client
costs one socket write (and, under TLS, as few records as possible).

Output is bounded: a client that does not read while others keep sending to it is
disconnected once ``max_output`` bytes are waiting, instead of holding memory without limit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

_READ_CHUNK = 16 * 1024  # one TLS record's worth of plaintext


class ConnectionHandler(Protocol):
    """What a connection reports to (implemented by the XMPP session)."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, reason: str | None) -> None: ...


class _Flusher:
    """Flushes every connection written to during this event-loop turn, once."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[C2SConnection] = []
        self._scheduled = False

    def add(self, connection: C2SConnection) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        for connection in dirty:
            connection.flush()


_FLUSHERS: dict[asyncio.AbstractEventLoop, _Flusher] = {}


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    flusher = _FLUSHERS.get(loop)
    if flusher is None:
        flusher = _FLUSHERS[loop] = _Flusher(loop)
    return flusher


class C2SConnection(asyncio.Protocol):
    """See the module docstring."""

    __slots__ = (
        "_closed",
        "_closing",
        "_direct_tls",
        "_factory",
        "_flusher",
        "_handler",
        "_max_output",
        "_out",
        "_ssl",
        "_ssl_in",
        "_ssl_out",
        "_transport",
        "connected_at",
        "last_received",
        "last_sent",
        "on_close",
        "tls_version",
    )

    def __init__(
        self,
        handler_factory: Callable[[C2SConnection], ConnectionHandler],
        *,
        tls_context: ssl.SSLContext | None = None,
        max_output: int = 8 * 1024 * 1024,
    ) -> None:
        self._handler: ConnectionHandler | None = None
        self._factory: Callable[[C2SConnection], ConnectionHandler] | None = handler_factory
        self._transport: asyncio.Transport | None = None
        self._ssl: ssl.SSLObject | None = None
        self._ssl_in: ssl.MemoryBIO | None = None
        self._ssl_out: ssl.MemoryBIO | None = None
        self._direct_tls = tls_context
        self._out: list[bytes] = []
        self._closing = False
        self._closed = False
        self._max_output = max_output
        self.connected_at = 0.0
        self.last_received = 0.0
        self.last_sent = 0.0
        self.tls_version: str | None = None
        self.on_close: Callable[[C2SConnection], None] | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._flusher = _flusher(loop)
        self.connected_at = self.last_received = self.last_sent = loop.time()
        # No socket options here: uvloop already sets TCP_NODELAY, dead peers are found by
        # whitespace keepalives, and asking for the socket object would keep one per
        # connection alive.
        if self._direct_tls is not None:
            self.start_tls(self._direct_tls)
        self._direct_tls = None
        factory = self._factory
        self._factory = None  # needed once; not kept for the life of the connection
        assert factory is not None
        self._handler = factory(self)

    def data_received(self, data: bytes) -> None:
        self.last_received = self._flusher._loop.time()
        if self._ssl is not None:
            data = self._decrypt(data)
            if not data:
                return
        self._received(data)

    def _received(self, data: bytes) -> None:
        """Plaintext from the client; a WebSocket connection unframes it first."""
        handler = self._handler
        if handler is not None:
            handler.data_received(data)

    def eof_received(self) -> bool:
        return False  # close our side too; the session learns it in connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._out.clear()
        handler = self._handler
        self._handler = None
        if self.on_close is not None:
            self.on_close(self)
        if handler is not None:
            handler.connection_lost(str(exc) if exc else None)

    # -- output ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; it is sent at the end of this event-loop turn."""
        if self._closing:
            return
        out = self._out
        if not out:
            self._flusher.add(self)
        out.append(data)

    def flush(self) -> None:
        out = self._out
        transport = self._transport
        if not out or transport is None or self._closed:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self._ssl is not None:
            data = self._encrypt(data)
        transport.write(data)
        self.last_sent = self._flusher._loop.time()
        if transport.get_write_buffer_size() > self._max_output:
            log.info("%s: client is not reading; disconnecting", self.peer)
            transport.abort()

    def keepalive(self) -> None:
        """Show the peer that the connection is alive: a whitespace keepalive (RFC 6120 §4.6.1)."""
        self.write(b" ")

    def close(self) -> None:
        """Flush what is queued, then close the connection."""
        if self._closing:
            return
        self._closing = True
        if self._closed:
            return  # already gone (a detached session being replaced, say): nothing to close
        self.flush()
        transport = self._transport
        if transport is not None:
            if self._ssl is not None:
                try:
                    self._ssl.unwrap()
                except ssl.SSLError:
                    pass
                tail = self._drain_ssl_out()
                if tail:
                    transport.write(tail)
            transport.close()

    def abort(self) -> None:
        """Drop the connection without flushing (the peer misbehaved or vanished)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    @property
    def handler(self) -> ConnectionHandler | None:
        return self._handler

    def set_handler(self, handler: ConnectionHandler | None) -> None:
        """Hand the connection to another session (stream resumption), or to nobody."""
        self._handler = handler

    @property
    def peer(self) -> str:
        """``host:port`` of the client, for logs (computed on demand, not stored)."""
        transport = self._transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    @property
    def closing(self) -> bool:
        """True once the connection is being closed or is gone."""
        return self._closing or self._closed

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # -- TLS ---------------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self._ssl is not None

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Switch to TLS as a server; everything after this point is encrypted."""
        self.flush()  # e.g. STARTTLS <proceed/> must go out in the clear
        self._ssl_in = ssl.MemoryBIO()
        self._ssl_out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._ssl_in, self._ssl_out, server_side=True)

    def _decrypt(self, data: bytes) -> bytes:
        sslobj = self._ssl
        assert sslobj is not None
        assert self._ssl_in is not None
        self._ssl_in.write(data)
        chunks: list[bytes] = []
        try:
            if self.tls_version is None:
                sslobj.do_handshake()
                self.tls_version = sslobj.version()
            while True:
                chunk = sslobj.read(_READ_CHUNK)
                if not chunk:
                    # An empty read is the peer's close_notify: answer it and close.
                    self._send_raw_tls()
                    self.close()
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass  # everything buffered has been read
        except ssl.SSLZeroReturnError:
            self._send_raw_tls()
            self.close()
        except ssl.SSLError as exc:
            log.info("%s: TLS failed: %s", self.peer, exc.reason or exc)
            self._send_raw_tls()
            self.abort()
            return b""
        self._send_raw_tls()
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _encrypt(self, data: bytes) -> bytes:
        sslobj = self._ssl
        assert sslobj is not None
        try:
            sslobj.write(data)
        except ssl.SSLError as exc:
            log.info("%s: TLS write failed: %s", self.peer, exc)
            self.abort()
            return b""
        return self._drain_ssl_out()

    def _drain_ssl_out(self) -> bytes:
        out = self._ssl_out
        return out.read() if out is not None and out.pending else b""

    def _send_raw_tls(self) -> None:
        tail = self._drain_ssl_out()
        if tail and self._transport is not None:
            self._transport.write(tail)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        tls = f" {self.tls_version}" if self.tls_version else ""
        return f"<C2SConnection {self.peer} {state}{tls}>"
