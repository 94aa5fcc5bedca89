"""One simulated client: an :class:`asyncio.Protocol` and its login state machine.

Thousands of these live in one process, so a client is callbacks and a few slots: no task,
no timer and no XML tree per client. Login follows RFC 6120 as any client would, asking the
server only what the standard lets it ask::

    header → features ─(--tls)→ <starttls/> → <proceed/> → TLS → header → features
           → SASL (PLAIN, or SCRAM-SHA-1/-256 through scramp) → <success/> → header
           → features → bind → (<session/> if the server requires it) → online

With ``direct_tls`` the TLS handshake comes first. Registration (XEP-0077) is the same up to
the first usable features, then one ``jabber:iq:register`` set; ``conflict`` means the account
already exists, which is what a re-run wants.

Once online, incoming bytes are framed (:mod:`roost.bench.load.scan`) and each element goes
to the scenario by its first bytes: ``<message`` and ``<presence`` to the handler's methods,
``<iq`` answered here (roster pushes and pings get a result, other requests
``service-unavailable``, as a well-behaved client would; roster pushes then go to the
scenario too), a stream error remembered as the
reason of the disconnect that follows. The clock is read once per socket read and shared by
its stanzas.

TLS (:mod:`roost.bench.load.tls`) is a layer between the socket and the framer, so STARTTLS
is a mode switch of the same protocol; SASL is in :mod:`roost.bench.load.sasl`.

Writes are queued and flushed once per event-loop turn (:class:`~.shared.Outbox`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, cast

from roost.bench.load import sasl
from roost.bench.load.config import User
from roost.bench.load.scan import (
    Framer,
    FramingError,
    attribute,
    child_text,
    child_texts,
    element_end,
    error_condition,
    escape,
    find_child,
    has_child,
    local_name,
)
from roost.bench.load.shared import Handler, LoginError, Settings, describe
from roost.bench.load.tls import TlsError, TlsLayer

# Login states. Plain ints: the state is tested on every read.
HEADER: Final = 0  # waiting for the server's stream header
FEATURES: Final = 1
TLS_PROCEED: Final = 2
TLS_HANDSHAKE: Final = 3
SASL: Final = 4
BIND: Final = 5
SESSION: Final = 6
REGISTER: Final = 7
ONLINE: Final = 8
CLOSING: Final = 9  # we are closing; nothing more is reported
CLOSED: Final = 10

# What a failure in each state is reported as ("which phase failed").
_PHASES: Final = (
    "stream",
    "stream",
    "tls",
    "tls",
    "auth",
    "bind",
    "session",
    "register",
    "run",
    "close",
    "close",
)

NS_TLS: Final = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND: Final = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION: Final = "urn:ietf:params:xml:ns:xmpp-session"
NS_SM: Final = "urn:xmpp:sm:3"
NS_STANZAS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"

_BIND_ID: Final = "lg-bind"
_SESSION_ID: Final = "lg-session"
_REGISTER_ID: Final = "lg-register"


class Client(asyncio.Protocol):
    """See the module docstring. ``done`` resolves to ``"online"`` once logged in (or to
    ``"created"``/``"exists"`` when registering), or fails with :class:`LoginError`."""

    __slots__ = (
        "_authenticated",
        "_framer",
        "_out",
        "_outbox",
        "_register",
        "_sasl",
        "_session_needed",
        "_settings",
        "_sm_handled",
        "_state",
        "_stream_error",
        "_tls",
        "_transport",
        "bare",
        "closed",
        "data",
        "done",
        "handler",
        "index",
        "jid",
        "jid_bytes",
        "user",
    )

    def __init__(
        self,
        index: int,
        user: User,
        settings: Settings,
        handler: Handler,
        *,
        register: bool = False,
    ) -> None:
        loop = settings.outbox._loop
        self.index = index
        self.user = user
        self.bare = user.jid(settings.domain)
        self.jid = ""  # the full JID the server bound
        self.jid_bytes = b""  # the same, escaped for an attribute value
        self.handler = handler
        self.data: Any = None  # the scenario's per-client state
        self.done: asyncio.Future[str] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._settings = settings
        self._outbox = settings.outbox
        self._register = register
        self._state = HEADER
        self._framer = Framer()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._tls: TlsLayer | None = None
        self._authenticated = False
        self._session_needed = False
        self._sasl: sasl.Exchange | None = None
        self._stream_error: str | None = None
        self._sm_handled = -1  # stanzas received since <enable/>; -1 without stream management

    @property
    def phase(self) -> str:
        return _PHASES[self._state]

    @property
    def online(self) -> bool:
        return self._state == ONLINE

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        if self._settings.direct_tls:
            self._start_tls()
        else:
            self._open_stream()

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            data = self._decrypt(data)
            if not data:
                return
        try:
            elements = self._framer.feed(data)
        except FramingError as exc:
            self._broken(f"unreadable stream: {exc}")
            return
        if self._state == ONLINE:
            self._dispatch(elements, 0, time.monotonic_ns())
            return
        for i, element in enumerate(elements):
            if self._state >= CLOSING:
                return
            restarted = self._login_step(element)
            if self._state == ONLINE:
                self._dispatch(elements, i + 1, time.monotonic_ns())
                return
            if restarted:
                return  # what followed belonged to the old stream

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._state = CLOSED
        self._transport = None
        self._out.clear()
        if self._stream_error is not None:
            reason = f"stream error: {self._stream_error}"
        elif exc is not None:
            reason = f"connection lost: {describe(exc)}"
        else:
            reason = "the server closed the connection"
        if not self.done.done():
            self.done.set_exception(LoginError(_PHASES[state], reason))
        elif state == ONLINE:
            self.handler.closed(self, reason)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- online ---------------------------------------------------------------------------

    def _dispatch(self, elements: list[bytes], start: int, now: int) -> None:
        handler = self.handler
        counting = self._sm_handled >= 0
        for i in range(start, len(elements)):
            element = elements[i]
            if counting and element.startswith((b"<message", b"<presence", b"<iq")):
                self._sm_handled += 1
            if element.startswith(b"<message"):
                handler.message(self, element, now)
            elif element.startswith(b"<presence"):
                handler.presence(self, element, now)
            else:
                self._other(element, now)

    def _other(self, element: bytes, now: int) -> None:
        if element.startswith(b"</"):
            # The server ended the stream: we close our side (after which the connection's
            # loss is not reported again) and tell the scenario.
            error = self._stream_error
            self.close()
            self.handler.closed(
                self, f"stream error: {error}" if error else "the server closed the stream"
            )
            return
        name = local_name(element)
        if name == b"message":  # a prefixed stanza: unusual, but legal
            self.handler.message(self, element, now)
        elif name == b"presence":
            self.handler.presence(self, element, now)
        elif name == b"iq":
            self._answer_iq(element)
        elif name == b"error":
            self._stream_error = error_condition(element)
        elif name == b"r" and self._sm_handled >= 0:
            # XEP-0198: the server asks how many of its stanzas we have handled.
            self.send(f"<a xmlns='{NS_SM}' h='{self._sm_handled % 2**32}'/>".encode())

    def _answer_iq(self, iq: bytes) -> None:
        kind = attribute(iq, b"type")
        if kind not in ("get", "set"):
            if self._state == ONLINE:
                self.handler.iq(self, iq)
            return
        ident = escape(attribute(iq, b"id") or "")
        sender = attribute(iq, b"from")
        to = f" to='{escape(sender)}'" if sender else ""
        if (kind == "set" and b"jabber:iq:roster" in iq) or b"urn:xmpp:ping" in iq:
            self.send(f"<iq type='result' id='{ident}'{to}/>".encode())
            # A roster push (from the server: no 'from' or our bare JID, RFC 6121 §2.1.6).
            if kind == "set" and self._state == ONLINE and sender in (None, self.bare):
                self.handler.iq(self, iq)
            return
        self.send(
            f"<iq type='error' id='{ident}'{to}><error type='cancel'>"
            f"<service-unavailable xmlns='{NS_STANZAS}'/></error></iq>".encode()
        )

    # -- output ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; they are written at the end of this event-loop turn."""
        out = self._out
        if not out:
            if self._transport is None:
                return
            self._outbox.add(self)
        out.append(data)

    def flush(self) -> None:
        out = self._out
        transport = self._transport
        if not out or transport is None:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self._tls is not None:
            try:
                data = self._tls.encrypt(data)
            except TlsError as exc:
                self._broken(str(exc))
                return
        if data:
            transport.write(data)

    def close(self) -> None:
        """End the stream politely and close the connection."""
        if self._state >= CLOSING:
            return
        if not self.done.done():
            self.done.set_exception(LoginError(self.phase, "closed before logging in"))
        self._state = CLOSING
        self.send(b"</stream:stream>")
        self.flush()
        if self._tls is not None and self._transport is not None:
            self._transport.write(self._tls.close())
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._state = max(self._state, CLOSING)
        if self._transport is not None:
            self._transport.abort()

    def fail(self, reason: str) -> None:
        """Give up logging in: ``done`` fails with the current phase and ``reason``."""
        if not self.done.done():
            self.done.set_exception(LoginError(self.phase, reason))
        self.close()

    def _broken(self, reason: str) -> None:
        """The stream cannot go on (TLS failed, unreadable bytes): drop the connection."""
        if not self.done.done():
            self.done.set_exception(LoginError(self.phase, reason))
        elif self._state == ONLINE:
            self._state = CLOSING  # reported here, not again when the connection goes
            self.handler.closed(self, reason)
        self.abort()

    # -- login ----------------------------------------------------------------------------

    def _open_stream(self) -> None:
        self._state = HEADER
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{escape(self._settings.domain)}' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            "version='1.0' xml:lang='en'>".encode()
        )

    def _restart(self) -> bool:
        self._framer.reset()
        self._open_stream()
        return True

    def _login_step(self, element: bytes) -> bool:
        """Handle one piece of the stream before going online; True after a restart."""
        state = self._state
        if state == HEADER:
            if local_name(element) != b"stream" or element.startswith(b"</"):
                self.fail(f"expected a stream header, got {element[:80]!r}")
                return False
            self._state = FEATURES
            return False
        if element.startswith(b"</"):
            self.fail(f"the server closed the stream{self._error_suffix()}")
            return False
        name = local_name(element)
        if name == b"error":
            self._stream_error = error_condition(element)
            self.fail(f"stream error: {self._stream_error}")
            return False
        if state == FEATURES:
            if name == b"features":
                self._on_features(element)
            return False
        if state == TLS_PROCEED:
            if name == b"proceed":
                self._framer.reset()
                self._start_tls()
                return True
            if name == b"failure":
                self.fail("the server refused STARTTLS")
            return False
        if state == SASL:
            return self._on_sasl(name, element)
        if name == b"iq":
            self._on_login_iq(element)
        # Anything else before the session starts (a pushed presence, a message...) is not
        # part of logging in; there is no scenario to hand it to yet.
        return False

    def _error_suffix(self) -> str:
        return f" (stream error: {self._stream_error})" if self._stream_error else ""

    def _on_features(self, features: bytes) -> None:
        settings = self._settings
        secure = self._tls is not None
        if settings.starttls and not secure:
            if not has_child(features, b"starttls"):
                self.fail("the server does not offer STARTTLS")
                return
            self._state = TLS_PROCEED
            self.send(f"<starttls xmlns='{NS_TLS}'/>".encode())
            return
        if self._register:
            self._state = REGISTER
            user = self.user
            self.send(
                f"<iq type='set' id='{_REGISTER_ID}'><query xmlns='jabber:iq:register'>"
                f"<username>{escape(user.local)}</username>"
                f"<password>{escape(user.password)}</password></query></iq>".encode()
            )
            return
        if not self._authenticated:
            self._authenticate(features)
            return
        if not has_child(features, b"bind"):
            self._state = BIND
            self.fail("the server offers no resource binding")
            return
        self._session_needed = _session_required(features)
        self._state = BIND
        self.send(
            f"<iq type='set' id='{_BIND_ID}'><bind xmlns='{NS_BIND}'>"
            f"<resource>{escape(settings.resource)}</resource></bind></iq>".encode()
        )

    def _authenticate(self, features: bytes) -> None:
        offered = child_texts(features, b"mechanism")
        self._state = SASL
        if not offered:
            if has_child(features, b"starttls") and has_child(features, b"required"):
                self.fail("the server requires TLS first (use --tls or --direct-tls)")
            else:
                self.fail("the server offers no SASL mechanism")
            return
        try:
            mechanism = sasl.choose(offered, self._settings.mechanism)
        except sasl.SaslError as exc:
            self.fail(str(exc))
            return
        self._sasl = sasl.Exchange(mechanism)
        payload = sasl.encode(self._sasl.initial(self.user.local, self.user.password))
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{payload}</auth>".encode())

    def _on_sasl(self, name: bytes, element: bytes) -> bool:
        exchange = self._sasl
        assert exchange is not None
        if name == b"failure":
            self.fail(f"SASL failure: {sasl.failure_reason(element)}")
            return False
        if name not in (b"success", b"challenge"):
            return False
        try:
            data = sasl.decode(element)
            if name == b"challenge":
                reply = exchange.challenge(data)
                self.send(f"<response xmlns='{NS_SASL}'>{sasl.encode(reply)}</response>".encode())
                return False
            exchange.success(data)
        except sasl.SaslError as exc:
            self.fail(str(exc))
            return False
        self._authenticated = True
        self._sasl = None
        return self._restart()

    def _on_login_iq(self, iq: bytes) -> None:
        ident = attribute(iq, b"id")
        kind = attribute(iq, b"type")
        state = self._state
        expected = {BIND: _BIND_ID, SESSION: _SESSION_ID, REGISTER: _REGISTER_ID}.get(state)
        if ident != expected:
            if kind in ("get", "set"):
                self._answer_iq(iq)
            return
        if kind == "error":
            condition = error_condition(iq)
            if state == REGISTER and condition.split(":", 1)[0] == "conflict":
                self._finish("exists")
                return
            self.fail(f"{_PHASES[state]} error: {condition}")
            return
        if kind != "result":
            return
        if state == REGISTER:
            self._finish("created")
        elif state == BIND:
            jid = child_text(iq, b"jid")
            if not jid:
                self.fail("the bind result has no JID")
                return
            self.jid = jid
            self.jid_bytes = escape(jid).encode()
            if self._session_needed:
                self._state = SESSION
                session = f"<iq type='set' id='{_SESSION_ID}'><session xmlns='{NS_SESSION}'/></iq>"
                self.send(session.encode())
            else:
                self._go_online()
        elif state == SESSION:
            self._go_online()

    def _go_online(self) -> None:
        if self._settings.stream_management:
            # Pipelined: the server handles stanzas in order, so nothing need wait for
            # <enabled/>; counting starts now.
            self.send(f"<enable xmlns='{NS_SM}'/>".encode())
            self._sm_handled = 0
        self._state = ONLINE
        self.done.set_result("online")

    def _finish(self, outcome: str) -> None:
        self.done.set_result(outcome)
        self.close()

    # -- TLS ------------------------------------------------------------------------------

    def _start_tls(self) -> None:
        settings = self._settings
        assert settings.ssl_context is not None
        self._state = TLS_HANDSHAKE
        self._tls = TlsLayer(settings.ssl_context, settings.server_hostname)
        self._handshake()

    def _handshake(self) -> bool:
        """Advance the TLS handshake; once done, open the stream. True when done."""
        tls = self._tls
        assert tls is not None
        try:
            done = tls.handshake()
        except TlsError as exc:
            self._write_raw(tls.outgoing())
            self._broken(str(exc))
            return False
        self._write_raw(tls.outgoing())
        if done:
            self._open_stream()
            self.flush()
        return done

    def _decrypt(self, data: bytes) -> bytes:
        tls = self._tls
        assert tls is not None
        if tls.handshaking:
            tls.feed(data)
            if not self._handshake():
                return b""
            data = b""
        try:
            plain, closed = tls.receive(data)
        except TlsError as exc:
            self._broken(str(exc))
            return b""
        self._write_raw(tls.outgoing())
        if closed and self._transport is not None:
            self._transport.close()
        return plain

    def _write_raw(self, data: bytes) -> None:
        if data and self._transport is not None:
            self._transport.write(data)

    def __repr__(self) -> str:
        return f"<Client {self.index} {self.jid or self.bare} {self.phase}>"


def _session_required(features: bytes) -> bool:
    """RFC 3921 sessions: only when offered without <optional/> (RFC 6121 Appendix E)."""
    at = find_child(features, b"session")
    while at >= 0:
        end = element_end(features, at)
        session = features[at:end] if end > 0 else features[at:]
        if NS_SESSION.encode() in session:
            return not has_child(session, b"optional")
        at = find_child(features, b"session", at + 1)
    return False
