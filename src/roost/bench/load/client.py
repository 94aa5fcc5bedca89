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
``service-unavailable``, as a well-behaved client would), a stream error remembered as the
reason of the disconnect that follows. The clock is read once per socket read and shared by
its stanzas.

TLS is done with :class:`ssl.SSLObject` over memory BIOs rather than an asyncio TLS
transport: that makes STARTTLS a mode switch of the same protocol, and keeps ten thousand
idle TLS clients from each holding the transport's large read buffer. Certificates are not
verified unless asked (servers under test usually have self-signed ones).

Writes are queued and flushed once per event-loop turn (:class:`Outbox`), so a client that
sends several stanzas in one turn costs one system call (and one TLS record).
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final, cast

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
    first_child_name,
    has_child,
    local_name,
)

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
NS_STANZAS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"

_BIND_ID: Final = "lg-bind"
_SESSION_ID: Final = "lg-session"
_REGISTER_ID: Final = "lg-register"
_AUTO_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256")
_READ: Final = 64 * 1024


class LoginError(Exception):
    """A client could not log in (or register): in which phase, and why."""

    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(f"{phase}: {reason}")
        self.phase = phase
        self.reason = reason


class Handler:
    """What a scenario is told about an online client. The defaults ignore everything."""

    def message(self, client: Client, element: bytes, now_ns: int) -> None:
        pass

    def presence(self, client: Client, element: bytes, now_ns: int) -> None:
        pass

    def iq(self, client: Client, element: bytes) -> None:
        """An IQ result or error (requests are answered by the client itself)."""

    def closed(self, client: Client, reason: str) -> None:
        pass


class Outbox:
    """Flushes every client written to during this event-loop turn, once."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Client] = []
        self._scheduled = False

    def add(self, client: Client) -> None:
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        for client in dirty:
            client.flush()


@dataclass(slots=True)
class Settings:
    """What every client of a run shares."""

    domain: str
    outbox: Outbox
    starttls: bool = False
    direct_tls: bool = False
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None  # for certificate verification
    mechanism: str = "auto"
    resource: str = "load"


def make_ssl_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if cafile:
            context.load_verify_locations(cafile)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Client(asyncio.Protocol):
    """See the module docstring. ``done`` resolves to ``"online"`` once logged in (or to
    ``"created"``/``"exists"`` when registering), or fails with :class:`LoginError`."""

    __slots__ = (
        "_authenticated",
        "_bio_in",
        "_bio_out",
        "_framer",
        "_handshaking",
        "_out",
        "_outbox",
        "_register",
        "_scram",
        "_scram_final_sent",
        "_session_needed",
        "_settings",
        "_ssl",
        "_state",
        "_stream_error",
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
        self._ssl: ssl.SSLObject | None = None
        self._bio_in: ssl.MemoryBIO | None = None
        self._bio_out: ssl.MemoryBIO | None = None
        self._handshaking = False
        self._authenticated = False
        self._session_needed = False
        self._scram: Any = None  # a scramp.ScramClient during a SCRAM exchange
        self._scram_final_sent = False
        self._stream_error: str | None = None

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
        if self._ssl is not None:
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
        for i in range(start, len(elements)):
            element = elements[i]
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
        if self._ssl is not None:
            data = self._encrypt(data)
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
        if self._ssl is not None:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass
            self._push_tls()
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
        self._stream_error = reason
        if not self.done.done():
            self.done.set_exception(LoginError(self.phase, reason))
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
        secure = self._ssl is not None
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
        wanted = self._settings.mechanism
        preference = _AUTO_MECHANISMS if wanted == "auto" else (wanted,)
        mechanism = next((m for m in preference if m in offered), None)
        if mechanism is None:
            self.fail(f"no usable SASL mechanism (the server offers {', '.join(offered)})")
            return
        user = self.user
        if mechanism == "PLAIN":
            payload = b"\0" + user.local.encode() + b"\0" + user.password.encode()
        else:
            from scramp import ScramClient  # only when a server lacks PLAIN

            self._scram = ScramClient([mechanism], user.local, user.password)
            payload = self._scram.get_client_first().encode()
        self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{_b64(payload)}</auth>".encode()
        )

    def _on_sasl(self, name: bytes, element: bytes) -> bool:
        scram = self._scram
        if name == b"success":
            if scram is not None and not self._scram_final(element):
                return False
            self._authenticated = True
            self._scram = None
            return self._restart()
        if name == b"failure":
            condition = _sasl_condition(element)
            self.fail(f"SASL failure: {condition}")
            return False
        if name == b"challenge":
            if scram is None:
                self.fail("unexpected SASL challenge")
                return False
            try:
                data = _unb64(element)
            except ValueError:
                self.fail("undecodable SASL challenge")
                return False
            self._scram_step(data)
        return False

    def _scram_step(self, data: str) -> None:
        from scramp import ScramException

        scram = self._scram
        try:
            if not self._scram_final_sent:
                scram.set_server_first(data)
                reply = scram.get_client_final()
                self._scram_final_sent = True
            else:
                # Some servers send the server-final message as a challenge and wait for an
                # empty response before <success/>.
                scram.set_server_final(data)
                self._scram = None
                reply = ""
        except ScramException as exc:
            self.fail(f"SCRAM: {exc}")
            return
        self.send(f"<response xmlns='{NS_SASL}'>{_b64(reply.encode())}</response>".encode())

    def _scram_final(self, element: bytes) -> bool:
        from scramp import ScramException

        try:
            data = _unb64(element)
        except ValueError:
            self.fail("undecodable SASL success data")
            return False
        if not data:
            self.fail("the server did not prove it knows the password (no SCRAM final)")
            return False
        try:
            self._scram.set_server_final(data)
        except ScramException as exc:
            self.fail(f"SCRAM: {exc}")
            return False
        return True

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
                self.send(
                    f"<iq type='set' id='{_SESSION_ID}'><session xmlns='{NS_SESSION}'/></iq>"
                    "".encode()
                )
            else:
                self._go_online()
        elif state == SESSION:
            self._go_online()

    def _go_online(self) -> None:
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
        self._bio_in = ssl.MemoryBIO()
        self._bio_out = ssl.MemoryBIO()
        self._ssl = settings.ssl_context.wrap_bio(
            self._bio_in, self._bio_out, server_side=False, server_hostname=settings.server_hostname
        )
        self._handshaking = True
        self._handshake()

    def _handshake(self) -> bool:
        assert self._ssl is not None
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._push_tls()
            return False
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._push_tls()
            self._broken(f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}")
            return False
        self._handshaking = False
        self._push_tls()
        self._open_stream()
        self.flush()
        return True

    def _decrypt(self, data: bytes) -> bytes:
        sslobj = self._ssl
        assert sslobj is not None
        assert self._bio_in is not None
        self._bio_in.write(data)
        if self._handshaking and not self._handshake():
            return b""
        chunks: list[bytes] = []
        try:
            while True:
                chunk = sslobj.read(_READ)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._push_tls()
            if self._transport is not None:
                self._transport.close()
        except ssl.SSLError as exc:
            self._broken(f"TLS error: {exc.reason or exc}")
            return b""
        self._push_tls()
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _encrypt(self, data: bytes) -> bytes:
        assert self._ssl is not None
        assert self._bio_out is not None
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            self._broken(f"TLS error: {exc.reason or exc}")
            return b""
        return self._bio_out.read()

    def _push_tls(self) -> None:
        out = self._bio_out
        if out is not None and out.pending and self._transport is not None:
            self._transport.write(out.read())

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


def _sasl_condition(failure: bytes) -> str:
    condition = first_child_name(failure) or "unknown"
    text = child_text(failure, b"text")
    return f"{condition}: {text}" if text else condition


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def _unb64(element: bytes) -> str:
    """The base64 text content of a SASL element, decoded to a string."""
    gt = element.find(b">")
    if element[gt - 1 : gt] == b"/":
        return ""
    end = element.rfind(b"<")
    text = element[gt + 1 : end].strip()
    if text in (b"", b"="):
        return ""
    try:
        return base64.b64decode(text, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("bad base64") from None


def describe(exc: BaseException) -> str:
    """A short reason for a socket error: ``Connection refused`` rather than its repr."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
