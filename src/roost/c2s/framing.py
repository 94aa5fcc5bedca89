"""How a client stream is framed on the wire: one XML document (TCP), or one element per
WebSocket message (RFC 7395). Sans-I/O.

The session (:mod:`roost.c2s.session`) is the same state machine for both; what differs is
confined here, in two small objects it is given when created:

* a parser, turning what the connection delivered into the session's stream events
  (:class:`~roost.xmpp.parser.StreamOpen`, elements, :class:`~roost.xmpp.parser.StreamClose`);
* the serialization of the stream-level pieces: the header, the features, a stream error, the
  closing, and the namespace a stanza is written in.

Over TCP (RFC 6120 §4) the stream is one long document: ``<stream:stream>`` opens it, stanzas
inherit ``jabber:client`` from it, ``</stream:stream>`` closes it.

Over WebSocket (RFC 7395 §3.3) every message is a complete XML element of its own, so nothing
is inherited: ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`` stands for the header,
``<close/>`` (same namespace) for the closing tag, every stanza declares ``jabber:client``
and stream-level elements declare the ``stream:`` prefix. :class:`WebSocketParser` reads the
messages with the very parser TCP streams use, under a root element of its own that no byte
from the client ever opens or closes: the same limits (stanza size, depth) and the same
restrictions (RFC 6120 §11.1) apply, and an idle WebSocket session hibernates the same way.
It then checks that each message held exactly one element, and maps ``<open/>`` and
``<close/>`` to the session's stream events.
"""

from __future__ import annotations

from typing import Final

from roost.xmpp import ns
from roost.xmpp.element import Element, escape_attr
from roost.xmpp.errors import StreamError
from roost.xmpp.parser import STREAM_CLOSE, Event, StreamOpen, XMLStreamParser

__all__ = ["TCP", "WEBSOCKET", "Framing", "WebSocketFraming", "WebSocketParser"]

_STANZAS: Final = frozenset({"message", "presence", "iq"})


class Framing:
    """An XML stream over TCP (RFC 6120 §4): the framing a session has unless told otherwise."""

    __slots__ = ()

    name = "xml-stream"
    #: STARTTLS can be offered (RFC 6120 §5); never over WebSocket (RFC 7395 §3.9).
    starttls: bool = True
    #: The namespace a stanza is written under: inherited from the stream header here.
    stanza_parent: str = ns.CLIENT
    close: bytes = b"</stream:stream>"

    def parser(self, max_stanza: int) -> XMLStreamParser:
        return XMLStreamParser(max_stanza=max_stanza)

    def check_open(self, event: StreamOpen, parser: XMLStreamParser) -> None:
        """Raise the stream error a header deserves, after the server's header went out."""
        if event.name != "stream":
            raise StreamError("invalid-namespace", "the root must be <stream:stream/>")
        if parser.default_namespace != ns.CLIENT:
            raise StreamError("invalid-namespace", "the content namespace must be jabber:client")

    def header(self, stream_id: str, domain: str, to: str) -> bytes:
        to_attr = f" to='{escape_attr(to)}'" if to else ""
        return (
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{ns.STREAM}' id='{stream_id}' "
            f"from='{escape_attr(domain)}'{to_attr} version='1.0' xml:lang='en'>"
        ).encode()

    def features(self, features: Element) -> bytes:
        return (
            b"<stream:features>"
            + b"".join(child.to_bytes(ns.STREAM) for child in features.elements())
            + b"</stream:features>"
        )

    def error(self, error: StreamError) -> bytes:
        return error.to_bytes()

    def __repr__(self) -> str:
        return f"<Framing {self.name}>"


class WebSocketFraming(Framing):
    """XMPP over WebSocket (RFC 7395 §3.3): one element per message, each standing alone."""

    __slots__ = ()

    name = "websocket"
    starttls = False
    stanza_parent = ""  # every stanza declares xmlns='jabber:client' (RFC 7395 §3.3.3)
    close = f"<close xmlns='{ns.FRAMING}'/>".encode()

    def parser(self, max_stanza: int) -> WebSocketParser:
        return WebSocketParser(max_stanza=max_stanza)

    def check_open(self, event: StreamOpen, parser: XMLStreamParser) -> None:
        pass  # WebSocketParser emits StreamOpen for a framing <open/> only

    def header(self, stream_id: str, domain: str, to: str) -> bytes:
        # RFC 7395 §3.4: the server answers <open/> with an <open/> of its own.
        to_attr = f" to='{escape_attr(to)}'" if to else ""
        return (
            f"<open xmlns='{ns.FRAMING}' id='{stream_id}' from='{escape_attr(domain)}'"
            f"{to_attr} version='1.0' xml:lang='en'/>"
        ).encode()

    def features(self, features: Element) -> bytes:
        return (
            f"<stream:features xmlns:stream='{ns.STREAM}'>".encode()
            + b"".join(child.to_bytes(ns.STREAM) for child in features.elements())
            + b"</stream:features>"
        )

    def error(self, error: StreamError) -> bytes:
        # RFC 7395 §3.5: the error declares its prefix; the session sends <close/> after it.
        body = error.to_bytes()
        return (
            f"<stream:error xmlns:stream='{ns.STREAM}'>".encode() + body[len(b"<stream:error>") :]
        )


_ROOT: Final = b"<websocket>"  # never written by the client: the messages are its children


class WebSocketParser(XMLStreamParser):
    """Reads WebSocket messages, one complete element each (RFC 7395 §3.3.1).

    Fed one whole message at a time (the WebSocket layer reassembles fragments). Raises
    :class:`StreamError` when a message holds less or more than one element, when the first
    message is not ``<open/>``, or when a stanza does not declare ``jabber:client``.
    """

    __slots__ = ("_opened",)

    def __init__(self, *, max_stanza: int) -> None:
        self._opened = False
        super().__init__(max_stanza=max_stanza, stream_xmlns="")

    def reset(self) -> None:
        """A stream restart (RFC 7395 §3.7): the next message must be a new ``<open/>``."""
        super().reset()
        super().feed(_ROOT)
        self._opened = False

    def feed(self, data: bytes) -> list[Event]:
        events = super().feed(data)
        if len(events) != 1 or not self.at_boundary:
            if not events and self.at_boundary:
                return events  # an empty or whitespace-only message: nothing to do
            self.close()
            raise StreamError(
                "not-well-formed",
                "a WebSocket message must hold exactly one complete element (RFC 7395 §3.3.1)",
            )
        element = events[0]
        assert isinstance(element, Element)
        xmlns = element.xmlns
        if xmlns == ns.FRAMING:
            if element.name == "open":
                self._opened = True
                return [StreamOpen("open", xmlns, element.attrs)]
            if element.name == "close":
                return [STREAM_CLOSE]
        if not self._opened:
            self.close()
            raise StreamError(
                "invalid-namespace",
                f"the stream must start with <open xmlns='{ns.FRAMING}'/> (RFC 7395 §3.4)",
            )
        if not xmlns and element.name in _STANZAS:
            self.close()
            raise StreamError(
                "invalid-namespace", "stanzas must declare xmlns='jabber:client' (RFC 7395 §3.3.3)"
            )
        return events

    @property
    def default_namespace(self) -> str | None:
        return None  # nothing is inherited: every message declares its own


TCP: Final = Framing()
WEBSOCKET: Final = WebSocketFraming()
