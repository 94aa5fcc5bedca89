"""The I/O layer of XMPP over WebSocket (RFC 7395), for browser clients.

A :class:`WebSocketConnection` is a :class:`~roost.c2s.connection.C2SConnection` (same asyncio
Protocol, same TLS over memory BIOs, same write coalescing and output bound) with the
WebSocket protocol (RFC 6455) between the bytes and the session:

* input: the HTTP upgrade request is answered, then frames are read and reassembled into
  messages, and each text message is handed to the session as one unit (the session's
  :class:`~roost.c2s.framing.WebSocketParser` requires exactly one XML element in it);
* output: every :meth:`write` from the session is one XML element (header, features, stanza,
  ``<close/>``), sent as one text message;
* keepalives are WebSocket pings (RFC 7395 §3.8) rather than whitespace, which a WebSocket
  message may not carry; the client's pings are answered with pongs.

The WebSocket protocol itself (the opening handshake, framing, masking, fragmentation, control
frames, the closing handshake) is the ``websockets`` library's Sans-I/O core,
:class:`websockets.server.ServerProtocol`: fed bytes, it returns events and bytes to send, and
never touches a socket or the event loop. Its edge cases are many and well tested there, and a
Sans-I/O core lets this connection keep its own transport, TLS and coalescing instead of
handing the socket to another server loop.

The handshake (RFC 7395 §3.1) is accepted at ``/xmpp-websocket`` or ``/ws`` only, with the
``xmpp`` subprotocol only (a request without it gets ``400``), and, when origins are configured,
from those origins only (``403``; a request without an Origin header, which browsers always
send, comes from a native client and is accepted). ``GET /`` over HTTPS gets a short page, so
that a user can accept a self-signed certificate in a browser once.

Discovery (XEP-0156 §3): ``GET /.well-known/host-meta`` (XRD) and ``/.well-known/host-meta.json``
(JRD) name the WebSocket endpoint, so that a web client given only the domain (Converse.js's
``discover_connection_methods``) finds it. The link is built from the request's ``Host`` header
and whether this connection is TLS: a server behind a proxy or on another port than the
domain's is described as the client reached it. The header is checked against the shape of a
host and port before it is echoed; anything else gets ``400``. Both answers allow any origin
(CORS), as XEP-0156 asks, since the web client runs on another origin.

Closing (RFC 7395 §3.6, RFC 6455 §7.1.1): after ``<close/>`` the server sends a Close frame and
waits up to :data:`CLOSE_TIMEOUT` seconds for the client's before closing TCP itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final
from xml.sax.saxutils import quoteattr

from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from roost.c2s.connection import C2SConnection, ConnectionHandler

__all__ = ["CLOSE_TIMEOUT", "PATHS", "WebSocketConnection"]

log = logging.getLogger(__name__)

#: Where the XMPP subprotocol is served: Prosody's default, which most clients assume, and a
#: short alias.
PATHS: Final = frozenset({"/xmpp-websocket", "/ws"})
ENDPOINT: Final = "/xmpp-websocket"  # the one discovery names
SUBPROTOCOL: Final = Subprotocol("xmpp")  # RFC 7395 §3.1
CLOSE_TIMEOUT: Final = 5.0  # seconds to wait for the client's Close frame

_INDEX: Final = (
    b"roost: XMPP over WebSocket (RFC 7395) is served at /xmpp-websocket with the 'xmpp' "
    b"subprotocol.\n"
)

HOST_META: Final = "/.well-known/host-meta"  # XEP-0156 §3: XRD; with .json, JRD
WEBSOCKET_REL: Final = "urn:xmpp:alt-connections:websocket"
# A Host header fit to echo into a link: a DNS name or an IP address, an optional port.
_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?"
)


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The WebSocket core's log, with its per-connection INFO lines ("connection open")
    demoted to DEBUG: roost logs connections itself."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG if level == logging.INFO else level, msg, *args, **kwargs)


_PROTOCOL_LOG: Final = _Quiet(logging.getLogger("roost.c2s.websocket.protocol"))


class WebSocketConnection(C2SConnection):
    """See the module docstring."""

    __slots__ = ("_close_timer", "_message", "_ws", "_ws_closing")

    def __init__(
        self,
        handler_factory: Callable[[C2SConnection], ConnectionHandler],
        *,
        tls_context: ssl.SSLContext | None = None,
        max_output: int = 8 * 1024 * 1024,
        max_message: int = 1024 * 1024,
        origins: Sequence[str] = (),
    ) -> None:
        super().__init__(handler_factory, tls_context=tls_context, max_output=max_output)
        allowed: list[Origin | None] | None = None
        if origins:
            allowed = [Origin(origin) for origin in origins]
            allowed.append(None)  # not a browser: cross-site hijacking is a browser's attack
        self._ws = ServerProtocol(
            origins=allowed,
            subprotocols=[SUBPROTOCOL],
            max_size=max_message,
            logger=_PROTOCOL_LOG,
        )
        self._message: list[bytes] | None = None  # fragments of a message being received
        self._ws_closing = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- input -------------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._handshake(event)
        self._pump()

    def _handshake(self, request: Request) -> None:
        ws = self._ws
        path = request.path.partition("?")[0]
        if path in PATHS:
            response = ws.accept(request)
            if response.status_code != 101:
                log.info("%s: WebSocket handshake refused: %s", self.peer, ws.handshake_exc)
        elif path == "/" and not request.headers.get("Upgrade"):
            response = _plain(200, "OK", _INDEX)
        elif path in (HOST_META, HOST_META + ".json"):
            response = self._host_meta(request, json_format=path.endswith(".json"))
        else:
            response = _plain(404, "Not Found", b"Not found.\n")
        ws.send_response(response)

    def _host_meta(self, request: Request, *, json_format: bool) -> Response:
        host = request.headers.get("Host", "")
        if not _HOST.fullmatch(host):
            return _plain(400, "Bad Request", b"A Host header naming this server is needed.\n")
        scheme = "wss" if self.tls_version is not None else "ws"
        href = f"{scheme}://{host}{ENDPOINT}"
        if json_format:
            body = json.dumps({"links": [{"rel": WEBSOCKET_REL, "href": href}]}).encode()
            kind = "application/json"
        else:
            body = (
                "<?xml version='1.0' encoding='utf-8'?>\n"
                "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
                f"  <Link rel='{WEBSOCKET_REL}' href={quoteattr(href)}/>\n"
                "</XRD>\n"
            ).encode()
            kind = "application/xrd+xml; charset=utf-8"
        return _plain(200, "OK", body, kind, [("Access-Control-Allow-Origin", "*")])

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            if frame.fin:
                self._deliver(bytes(frame.data))
            else:
                self._message = [bytes(frame.data)]
        elif opcode is Opcode.CONT:
            parts = self._message
            if parts is not None:  # else continuing a refused binary message: dropped
                parts.append(bytes(frame.data))
                if frame.fin:
                    self._message = None
                    self._deliver(b"".join(parts))
        elif opcode is Opcode.BINARY:
            # RFC 7395 §3.2: XMPP travels in text messages only.
            self._ws.fail(CloseCode.UNSUPPORTED_DATA, "XMPP uses text messages")
        # PING is answered by the core; PONG needs nothing; after CLOSE the core has
        # answered and asked for the end of the TCP stream, which _pump does.

    def _deliver(self, message: bytes) -> None:
        handler = self._handler
        if handler is not None and self._ws.state is OPEN and not self.closing:
            handler.data_received(message)

    # -- output ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send ``data`` (one complete XML element) as one text message."""
        ws = self._ws
        if ws.state is not OPEN or self._ws_closing or self._closing:
            return  # before the handshake, or once closing: nothing more for the client
        ws.send_text(data)
        self._pump()

    def keepalive(self) -> None:
        # RFC 7395 §3.8: a WebSocket ping instead of a whitespace keepalive.
        ws = self._ws
        if ws.state is OPEN and not self._ws_closing:
            ws.send_ping(b"")
            self._pump()

    def _pump(self) -> None:
        """Queue what the WebSocket core has to send; close TCP when it says so."""
        eof = False
        for chunk in self._ws.data_to_send():
            if chunk:
                C2SConnection.write(self, chunk)
            else:
                eof = True  # the core's end-of-stream marker
        if eof:
            self._close_tcp()

    def close(self) -> None:
        """Close the WebSocket (RFC 6455 §7.1.1), then the connection."""
        if self.closing:
            return
        ws = self._ws
        if ws.state is not OPEN:
            self._close_tcp()
            return
        self._ws_closing = True
        ws.send_close(CloseCode.NORMAL_CLOSURE)
        self._pump()
        if not self._closing:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, self._close_tcp)

    def _close_tcp(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        C2SConnection.close(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        super().connection_lost(exc)

    @property
    def closing(self) -> bool:
        return self._ws_closing or self._closing or self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self.closing else "open"
        tls = f" {self.tls_version}" if self.tls_version else ""
        return f"<WebSocketConnection {self.peer} {state} ws={self._ws.state.name}{tls}>"


def _plain(
    status: int,
    reason: str,
    body: bytes,
    kind: str = "text/plain; charset=utf-8",
    extra: Sequence[tuple[str, str]] = (),
) -> Response:
    headers = Headers(
        [
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", kind),
            *extra,
        ]
    )
    return Response(status, reason, headers, body)
