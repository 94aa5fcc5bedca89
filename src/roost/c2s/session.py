"""The client session: one XMPP stream from negotiation to close (RFC 6120 §4-§7).

Theory of operation. The connection hands over bytes; the session feeds them to the XML stream
parser and handles the events in order. Stream negotiation is a table of
``(state, element) -> handler`` (:data:`_NEGOTIATION`); an element the table does not list for
the current state is a protocol violation and ends the stream with an error naming both.
Its handlers for SASL (:mod:`roost.c2s.sasl_negotiation`), resource binding
(:mod:`roost.c2s.binding`) and stream management (:mod:`roost.c2s.sm_session`) live in files
of their own, as friends of the session. The states::

    HEADER ──open──▶ FEATURES ──<starttls/>──▶ (TLS) ──▶ HEADER           (restart)
                     FEATURES ──<auth/>──▶ SASL ──<success/>──▶ HEADER     (restart)
                     FEATURES(authenticated) ──bind──▶ ESTABLISHED ──close──▶ CLOSED

The same machine serves XMPP over WebSocket (RFC 7395): what differs between the two (the
header, ``<close/>``, the namespace stanzas are written in, no STARTTLS, a message-per-element
parser) is the session's :class:`~roost.c2s.framing.Framing`, chosen by its listener.

Handling an element may need I/O (reading credentials, storing an offline message). A handler
then returns an awaitable, and the session queues the elements that follow until it
completes: each client's stanzas are processed in the order sent, with no task per stanza and
none at all on the synchronous fast path.

Once established, every stanza gets its ``from`` stamped with the session's full JID
(RFC 6120 §8.1.2.1), goes through the ``c2s.inbound`` hook (where the presence, roster and
other modules act) and then to the router. Stanzas to the client pass the ``c2s.outbound``
hook and are serialized once, into the connection's coalescing buffer.

When the connection goes away, whatever complete stanzas the client had sent are still
handled before the session is torn down (``c2s.closed``), so nothing it fully sent is lost.
With stream management and resumption enabled (XEP-0198, :mod:`roost.c2s.sm_session`) a lost
connection only *detaches* the session (``c2s.detached``): it stays routable and queues what
arrives until the client resumes or the window closes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from roost.c2s import binding, sm_session
from roost.c2s import sasl_negotiation as sasl
from roost.c2s.framing import TCP, Framing
from roost.c2s.sm import StreamManagement
from roost.c2s.state import State
from roost.gate.storage import storage_stanza_error
from roost.storage.base import StorageError
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StanzaError, StreamError
from roost.xmpp.jid import JID, InvalidJID, parse_jid
from roost.xmpp.parser import StreamClose, StreamOpen, XMLStreamParser
from roost.xmpp.sasl import ScramExchange

if TYPE_CHECKING:
    from roost.c2s.connection import C2SConnection
    from roost.core.server import Server

log = logging.getLogger(__name__)

Pending = Awaitable[Any] | None

MAX_QUEUED: Final = 256  # queued stanzas before the session stops reading from the socket


_STANZAS: Final = frozenset({"message", "presence", "iq"})


class C2SSession:
    """One client stream. Also the registry's route for its full JID (see roost.router)."""

    __slots__ = (
        "_auth_attempts",
        "_busy",
        "_conn",
        "_detached",
        "_finished",
        "_framing",
        "_header_sent",
        "_held",
        "_idle",
        "_parser",
        "_queue",
        "_sasl",
        "_server",
        "_successor",
        "_woken_at",
        "authenticated",
        "available",
        "data",
        "id",
        "jid",
        "presence",
        "priority",
        "sm",
        "state",
        "username",
    )

    def __init__(self, server: Server, connection: C2SConnection, framing: Framing = TCP) -> None:
        self._server = server
        self._conn = connection
        self._framing = framing  # TCP or WebSocket (RFC 7395): see roost.c2s.framing
        self._parser: XMLStreamParser = framing.parser(server.config.max_stanza_size)
        self._queue: deque[StreamOpen | Element | StreamClose] | None = None
        self._busy = False
        self._idle: asyncio.Future[None] | None = None  # set when no longer busy (settled())
        self._finished = False
        self._held: list[Element] | None = None
        self._woken_at = 0.0
        self._detached = False
        self._successor: C2SSession | None = None
        self.sm: StreamManagement | None = None
        self._header_sent = False
        self._sasl: ScramExchange | str | None = None
        self._auth_attempts = 0
        self.state = State.HEADER
        self.id = ""
        self.authenticated = False
        self.username: str | None = None  # bare JID string once authenticated
        self.jid: JID = JID(None, server.config.domain)
        self.available = False
        self.priority = 0
        self.presence: Element | None = None
        self.data: dict[str, Any] = {}

    # -- input from the connection -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        parser = self._parser
        # Read live, so that a reloaded limit applies to streams already open.
        parser.max_stanza = self._server.config.max_stanza_size
        doze = False
        if parser.hibernating:
            # A stream that wakes up only now and then (a presence change, a ping) goes back
            # to sleep at once; one woken again soon is busy and stays awake until the sweep.
            now = self._conn.last_received
            doze = now - self._woken_at > self._server.config.hibernate_after
            self._woken_at = now
        try:
            events = parser.feed(data)
        except StreamError as exc:
            self.stream_error(exc)
            return
        if doze:
            parser.hibernate()
        if not events:
            return
        if self._busy:
            assert self._queue is not None
            self._queue.extend(events)
            if len(self._queue) > MAX_QUEUED:
                self._conn.pause_reading()
            return
        self._run(events)

    def connection_lost(self, reason: str | None) -> None:
        if reason:
            log.debug("%s: connection lost: %s", self, reason)
        sm = self.sm
        if sm is not None and sm.resume and self.state is State.ESTABLISHED:
            # XEP-0198 §5: stay routable and keep queueing for the client to come back.
            self._detached = True
            loop_now = asyncio.get_running_loop().time()
            self._server.resumption.detached(sm.id, loop_now + self._server.config.sm_timeout)
            self._server.hooks.run("c2s.detached", self)
            return
        if not self._busy:
            self._finish()
        else:  # the queue is still being worked through; _drain finishes the session
            self._unroute()

    # -- event processing --------------------------------------------------------------------

    def _run(self, events: list[StreamOpen | Element | StreamClose]) -> None:
        for i, event in enumerate(events):
            pending = self._handle(event)
            if self._successor is not None:
                # A resumed session took this connection over; what follows is its input.
                self._successor._continue(events[i + 1 :])
                return
            if pending is not None:
                self._busy = True
                self._queue = deque(events[i + 1 :])
                asyncio.get_running_loop().create_task(self._drain(pending))
                return
            if self.state is State.CLOSED:
                return

    async def _drain(self, first: Awaitable[Any]) -> None:
        queue = self._queue
        assert queue is not None
        pending: Pending = first
        try:
            while pending is not None:
                try:
                    await pending
                except StreamError as exc:
                    self.stream_error(exc)
                except Exception:
                    log.exception("%s: failed handling a stanza", self)
                    self.stream_error(StreamError("internal-server-error"))
                pending = None
                if self._successor is not None:
                    # A resumption completed while it was awaited (sm_session.on_resume): what
                    # this connection sent since is the resumed session's input.
                    self._successor._continue(list(queue))
                    queue.clear()
                while queue and pending is None and self.state is not State.CLOSED:
                    pending = self._handle(queue.popleft())
                    if self._successor is not None:
                        self._successor._continue(list(queue))
                        queue.clear()
                        pending = None
        finally:
            self._busy = False
            self._queue = None
            idle, self._idle = self._idle, None
            if idle is not None and not idle.done():
                idle.set_result(None)
            if self._successor is not None:
                pass  # this husk handed its connection to a resumed session
            elif self.state is State.CLOSED or (self._conn.closing and not self._detached):
                self._finish()
            else:
                self._conn.resume_reading()

    async def settled(self) -> None:
        """Return once every stanza this session has read is handled (it is not busy)."""
        while self._busy:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    def _continue(self, events: list[StreamOpen | Element | StreamClose]) -> None:
        """Take over input that arrived on a connection before it was handed to us."""
        if not events:
            return
        if self._busy:
            assert self._queue is not None
            self._queue.extend(events)
        else:
            self._run(events)

    def _handle(self, event: StreamOpen | Element | StreamClose) -> Pending:
        try:
            if type(event) is Element:
                if self.state is State.ESTABLISHED:
                    pending = self._on_stanza(event)
                    if pending is not None and event.name in _STANZAS and event.xmlns == ns.CLIENT:
                        pending = _storage_failure_answered(self, event, pending)
                    sm = self.sm
                    if sm is not None and event.name in _STANZAS and event.xmlns == ns.CLIENT:
                        # XEP-0198: a stanza counts as handled once its handling is done.
                        if pending is None:
                            sm.count_handled()
                        else:
                            pending = sm_session.counted(pending, sm)
                    return pending
                return self._negotiate(event)
            if type(event) is StreamOpen:
                self._on_stream_open(event)
            else:
                self._on_stream_close()
        except StreamError as exc:
            self.stream_error(exc)
        return None

    # -- stream header and features (RFC 6120 §4.2-§4.3) -------------------------------------

    def _on_stream_open(self, event: StreamOpen) -> None:
        config = self._server.config
        if self.state is not State.HEADER:
            raise StreamError("not-well-formed", "a second stream header")
        self.id = secrets.token_hex(8)  # a new id for every stream, restarts included
        self._send_header(event.attrs.get("from"))
        self._framing.check_open(event, self._parser)
        to = event.attrs.get("to", "")
        try:
            host = parse_jid(to).domain if to else ""
        except InvalidJID:
            host = ""
        if host != config.domain:
            raise StreamError("host-unknown", f"this server is {config.domain}")
        version = event.attrs.get("version", "0.9")
        try:
            major = int(version.split(".", 1)[0])
        except ValueError:
            major = 0
        if major < 1:
            raise StreamError("unsupported-version", "XMPP 1.0 streams only")
        self.state = State.FEATURES
        features = self._features()
        self._send(self._framing.features(features))

    def _send_header(self, client_from: str | None) -> None:
        if self._header_sent:
            return
        self._header_sent = True
        if not self.id:
            self.id = secrets.token_hex(8)
        domain = self._server.config.domain
        to = ""
        if client_from:
            try:
                to = str(parse_jid(client_from))
            except InvalidJID:
                pass
        self._send(self._framing.header(self.id, domain, to))

    def _features(self) -> Element:
        features = Element("features", ns.STREAM)
        config = self._server.config
        if not self.authenticated:
            if not self._conn.secure and self._framing.starttls:
                starttls = features.add("starttls", ns.TLS)
                if config.require_tls:
                    starttls.add("required")
            if self._conn.secure or not config.require_tls:
                mechanisms = features.add("mechanisms", ns.SASL)
                for mechanism in sasl.mechanisms(self):
                    mechanisms.add_text("mechanism", mechanism)
            self._server.hooks.run("c2s.features.unauthenticated", features, self)
        else:
            features.add("bind", ns.BIND)
            features.add("session", ns.SESSION).add("optional")
            features.add("sm", ns.SM)
            self._server.hooks.run("c2s.features", features, self)
        return features

    def _on_stream_close(self) -> None:
        # RFC 6120 §4.4: answer the closing tag with ours, then close the connection.
        self.close()

    # -- negotiation (table-driven) ----------------------------------------------------------

    def _negotiate(self, element: Element) -> Pending:
        handler = _NEGOTIATION.get((self.state, element.xmlns, element.name))
        if handler is None:
            if element.name in _STANZAS and element.xmlns == ns.CLIENT:
                if self.authenticated:
                    raise StreamError("not-authorized", "bind a resource first")
                raise StreamError("not-authorized", "authenticate first")
            raise StreamError(
                "unsupported-stanza-type",
                f"<{element.name} xmlns='{element.xmlns}'/> is not expected in state "
                f"{self.state.value}",
            )
        return handler(self, element)

    def _on_starttls(self, element: Element) -> None:
        if self._conn.secure or self.authenticated:
            raise StreamError("policy-violation", "TLS is already negotiated")
        if not self._framing.starttls:
            # RFC 7395 §3.9: TLS is the WebSocket's (wss), never negotiated inside it.
            raise StreamError("policy-violation", "no STARTTLS over WebSocket; use wss")
        context = self._server.tls_context
        if context is None:
            self._send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>")
            self.close()
            return
        self._send(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self._conn.start_tls(context)
        self._restart()

    def _restart(self) -> None:
        """RFC 6120 §5.4.3.3, §6.4.6: a new stream on the same connection.

        Whatever the old parser had buffered or queued is dropped: bytes after <starttls/>
        arrived in the clear and must not be trusted (the STARTTLS injection attack).
        """
        self._parser.reset()
        if self._queue is not None:
            self._queue.clear()
        self._header_sent = False
        self.state = State.HEADER

    # -- established stream ----------------------------------------------------------------

    def _on_stanza(self, stanza: Element) -> Pending:
        name = stanza.name
        if stanza.xmlns == ns.SM:
            sm_session.on_sm(self, stanza)
            return None
        if name not in _STANZAS or stanza.xmlns != ns.CLIENT:
            handled = self._server.hooks.fold("c2s.stream_element", stanza, self)
            if not isinstance(handled, Element):
                return handled  # type: ignore[no-any-return]
            raise StreamError(
                "unsupported-stanza-type", f"<{name} xmlns='{stanza.xmlns}'/> is not a stanza"
            )
        attrs = stanza.attrs
        claimed = attrs.get("from")
        if claimed is not None and claimed != str(self.jid) and claimed != self.jid.bare_str:
            # RFC 6120 §8.1.2.1: a client may only speak for itself.
            try:
                valid = parse_jid(claimed) in (self.jid, self.jid.bare)
            except InvalidJID:
                valid = False
            if not valid:
                raise StreamError("invalid-from", "the 'from' address is not yours")
        attrs["from"] = str(self.jid)
        to = attrs.get("to")
        if to is not None:
            try:
                parse_jid(to)
            except InvalidJID as exc:
                self._reply_error(stanza, errors.jid_malformed(str(exc)))
                return None
        if name == "iq" and not _valid_iq(stanza):
            self._reply_error(stanza, errors.bad_request("invalid IQ"))
            return None
        folded = self._server.hooks.fold("c2s.inbound", stanza, self)
        if not isinstance(folded, Element):
            return folded  # type: ignore[no-any-return]
        if name == "iq" and folded.attrs.get("type") in ("get", "set"):
            payload = folded.first_child()
            if payload is not None and payload.xmlns == ns.SESSION and to is None:
                # RFC 3921 session establishment: kept for old clients, a no-op here.
                self.send(_iq_result(folded))
                return None
        return self._server.router.route(folded, self)

    # -- output ------------------------------------------------------------------------------

    def deliver(self, stanza: Element) -> None:
        """Route interface: send a stanza addressed to this session's client."""
        if self.state is State.CLOSED:
            return
        held = self._held
        if held is not None:
            held.append(stanza)
            return
        out = self._server.hooks.fold("c2s.outbound", stanza, self)
        if out is not None:
            self._write_stanza(out)

    def emit(self, stanza: Element) -> bool:
        """Send through the outbound hooks even while deliveries are held.

        False when the session has ended and took nothing: the caller still owns the stanza
        (the offline module then keeps it stored).
        """
        if self.state is State.CLOSED or (self._conn.closing and not self._detached):
            return False  # gone, or going: nothing would confirm that the client got it
        out = self._server.hooks.fold("c2s.outbound", stanza, self)
        if out is not None:
            self._write_stanza(out)
        return True

    def hold(self) -> None:
        """Queue deliveries instead of sending them, until :meth:`release`.

        Used while stored messages are replayed, so that live ones cannot overtake them.
        """
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held = self._held
        self._held = None
        if held:
            for stanza in held:
                self.deliver(stanza)

    def send(self, stanza: Element) -> None:
        """Send a stanza generated for this client (replies, pushes), bypassing hooks."""
        if self.state is not State.CLOSED:
            self._write_stanza(stanza)

    def _write_stanza(self, stanza: Element) -> None:
        sm = self.sm
        if sm is None:
            self._conn.write(stanza.to_bytes(self._framing.stanza_parent))
            return
        server = self._server
        token = server.delivery_token
        if token is not None:
            server.delivery_token = None  # claimed: confirmed when the client acknowledges
        # Queued as the bytes written, or as the element while the client is away (see sm.py).
        detached = self._detached
        data = b"" if detached else stanza.to_bytes(self._framing.stanza_parent)
        sm.track(stanza if detached else data, token)
        if sm.overflowing:
            # The client does not acknowledge (or has been gone too long): end the session;
            # what it did not confirm is routed elsewhere by _finish.
            if self._detached:
                sm_session.expire(self)
            else:
                self.stream_error(StreamError("policy-violation", "too many unacknowledged"))
            return
        if detached:
            return
        conn = self._conn
        conn.write(data)
        if sm.should_request():
            conn.write(sm_session.R)

    def _send(self, data: bytes) -> None:
        self._conn.write(data)

    def _reply_error(self, stanza: Element, error: StanzaError) -> None:
        if stanza.attrs.get("type") == "error":
            return
        reply = error.reply_to(stanza)
        reply.attrs.pop("from", None)
        self.send(reply)

    # -- closing ---------------------------------------------------------------------------

    def stream_error(self, error: StreamError) -> None:
        """Send a stream error and close (RFC 6120 §4.9)."""
        if self.state is State.CLOSED:
            return
        quiet = error.condition in ("system-shutdown", "connection-timeout", "conflict")
        log.log(logging.DEBUG if quiet else logging.INFO, "%s: stream error %s", self, error)
        if not self._header_sent:
            self._send_header(None)
        self._send(self._framing.error(error))
        self.close()

    def close(self) -> None:
        """Close the stream from our side: closing tag, then the connection."""
        if self.state is State.CLOSED:
            return
        if self._header_sent and not self._conn.closing:
            self._send(self._framing.close)
        self._conn.close()
        if not self._busy:
            self._finish()
        else:
            self._unroute()

    def _unroute(self) -> None:
        """Unreachable from now on, though still handling what the client sent (busy).

        Stanzas for this resource go elsewhere (other resources, offline storage) rather than
        into a dead socket, and what the session holds for the client unconfirmed is routed
        again *now*: kept until the session finishes, it would be overtaken by what is routed
        to the user's next session meanwhile, and arrive out of order.
        """
        if self.jid.resource is not None:
            self._server.sessions.remove(self)
        self._reroute_unconfirmed()

    def _reroute_unconfirmed(self) -> None:
        # What was never confirmed by the client (stream management) or never even sent
        # (held while stored messages were replayed) is routed again, never dropped.
        unsent: list[Element] = []
        tokens: list[tuple[str, int]] = []
        sm = self.sm
        if sm is not None:
            unsent += sm_session.unsent(self)
            if sm.tokens:
                tokens = list(sm.tokens.values())
                sm.tokens = None
        if self._held:
            unsent += self._held
        self._held = None
        if unsent or tokens:
            sm_session.reroute(self, unsent, tokens)

    def _finish(self) -> None:
        """Tear down once, after every stanza the client sent has been handled."""
        if self._finished:
            return
        self._finished = True
        self.state = State.CLOSED
        self._detached = False
        self._parser.close()
        if self.jid.resource is not None:
            self._server.sessions.remove(self)
            if self.authenticated:
                self._server.hooks.run("c2s.closed", self)
        self.available = False
        sm = self.sm
        if sm is not None and sm.id:
            self._server.resumption.ended(sm.id, self.username or "", sm.handled)
        self._reroute_unconfirmed()

    def expire(self) -> None:
        """The resumption window closed (or the server stops): end a detached session."""
        sm_session.expire(self)

    def sweep_sm(self) -> None:
        """Ask for an acknowledgement if stanzas wait for one (the listener's sweep)."""
        sm_session.sweep_sm(self)

    # -- housekeeping (called by the listener's sweeper) -----------------------------------------

    def hibernate(self) -> bool:
        """Release the parser's buffers while the stream is idle (see roost.xmpp.parser)."""
        return self._parser.hibernate()

    @property
    def hibernating(self) -> bool:
        return self._parser.hibernating

    @property
    def connection(self) -> C2SConnection:
        return self._conn

    @property
    def server(self) -> Server:
        return self._server

    def __repr__(self) -> str:
        who = str(self.jid) if self.authenticated else self._conn.peer
        return f"<C2SSession {who} {self.state.value}{' available' if self.available else ''}>"


_NegotiationHandler = Callable[[C2SSession, Element], Pending]
_NEGOTIATION: Final[dict[tuple[State, str, str], _NegotiationHandler]] = {
    (State.FEATURES, ns.TLS, "starttls"): C2SSession._on_starttls,
    (State.FEATURES, ns.SASL, "auth"): sasl.on_auth,
    (State.SASL, ns.SASL, "response"): sasl.on_sasl_response,
    (State.SASL, ns.SASL, "abort"): sasl.on_sasl_abort,
    (State.FEATURES, ns.CLIENT, "iq"): binding.on_negotiation_iq,
    (State.FEATURES, ns.SM, "resume"): sm_session.on_resume,
    (State.FEATURES, ns.SM, "enable"): sm_session.on_enable_too_early,
}


async def _storage_failure_answered(
    session: C2SSession, stanza: Element, pending: Awaitable[Any]
) -> None:
    """Handle a stanza; if the store fails it (or its gate is open), answer with an error.

    The sender learns at once that its stanza was not kept, with a ``wait``-type error it may
    retry on (roost.gate.storage), and the stream goes on: a failing store must not end every
    stream that touches it. The stanza then counts as handled (XEP-0198), as any stanza
    answered with an error does; it was never acknowledged as kept.
    """
    try:
        await pending
    except StorageError as exc:
        log.debug("%s: storage failed a stanza: %s", session, exc)
        session._reply_error(stanza, storage_stanza_error(exc))


def _valid_iq(iq: Element) -> bool:
    # RFC 6120 §8.2.3: an id, a known type, and exactly one payload for get and set.
    kind = iq.attrs.get("type")
    if not iq.attrs.get("id") or kind not in ("get", "set", "result", "error"):
        return False
    if kind in ("get", "set"):
        return sum(1 for _ in iq.elements()) == 1
    return True


def _iq_result(iq: Element) -> Element:
    return Element("iq", ns.CLIENT, {"type": "result", "id": iq.attrs.get("id", "")})
