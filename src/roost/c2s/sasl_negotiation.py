"""SASL negotiation of a client stream (RFC 6120 §6), the session's half of it.

The mechanisms themselves are Sans-I/O in :mod:`roost.xmpp.sasl`; these functions drive them
from the stream: it offers the mechanisms the connection allows (PLAIN only over TLS unless
configured otherwise), fetches stored credentials through the authenticator, answers with
``<challenge/>``, ``<success/>`` or ``<failure/>``, and restarts the stream on success.
They act on a :class:`roost.c2s.session.C2SSession` (as its friends: they use its private
attributes) and live apart so that the session file stays about the stream itself.

When the credentials cannot be read (the store failed, or its gate is open) the answer is
``<temporary-auth-failure/>`` (RFC 6120 §6.5.11: "try again later"), which does not count as
a failed attempt: the client did nothing wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

from roost.c2s.state import State
from roost.storage.base import StorageError
from roost.xmpp.errors import StreamError
from roost.xmpp.jid import InvalidJID, nodeprep, parse_jid
from roost.xmpp.sasl import (
    SASLFailure,
    ScramExchange,
    b64decode,
    b64encode,
    parse_plain,
)

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession
    from roost.xmpp.element import Element

log = logging.getLogger("roost.c2s.session")

Pending = Awaitable[Any] | None

MAX_AUTH_ATTEMPTS: Final = 3
TRY_LATER: Final = "authentication is unavailable for now; try again later"


def mechanisms(session: C2SSession) -> list[str]:
    mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    if session._conn.secure or session._server.config.allow_plain_without_tls:
        mechanisms.append("PLAIN")
    return mechanisms


def on_auth(session: C2SSession, element: Element) -> Pending:
    if session.authenticated:
        raise StreamError("policy-violation", "already authenticated")
    if not session._conn.secure and session._server.config.require_tls:
        return sasl_failure(session, "encryption-required", "negotiate TLS first")
    mechanism = element.attrs.get("mechanism", "")
    if mechanism not in mechanisms(session):
        return sasl_failure(session, "invalid-mechanism", None)
    text = element.text
    session.state = State.SASL
    if mechanism == "PLAIN":
        session._sasl = "PLAIN"
        if not text:
            session._send(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            return None
        return plain(session, text)
    session._sasl = ScramExchange(mechanism, session._server.config.scram_iterations)
    if not text:
        session._send(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        return None
    return scram_first(session, session._sasl, text)


def on_sasl_response(session: C2SSession, element: Element) -> Pending:
    exchange = session._sasl
    if exchange == "PLAIN":
        return plain(session, element.text)
    assert isinstance(exchange, ScramExchange)
    if not exchange.username:
        return scram_first(session, exchange, element.text)
    try:
        final = exchange.finish(b64decode(element.text))
    except SASLFailure as exc:
        return sasl_failure(session, exc.condition, exc.text)
    return sasl_success(session, exchange.username, exchange.authzid, final)


def on_sasl_abort(session: C2SSession, element: Element) -> Pending:
    return sasl_failure(session, "aborted", None)


async def scram_first(session: C2SSession, exchange: ScramExchange, text: str) -> None:
    try:
        name = exchange.start(b64decode(text))
        username = account(session, name)
        credentials = None
        if username is not None:
            credentials = await session._server.auth.scram_credentials(username, exchange.mechanism)
        challenge = exchange.challenge(credentials)
    except SASLFailure as exc:
        await _done(sasl_failure(session, exc.condition, exc.text))
        return
    except StorageError:
        await _done(sasl_failure(session, "temporary-auth-failure", TRY_LATER))
        return
    session._send(
        f"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{b64encode(challenge)}"
        "</challenge>".encode()
    )


async def plain(session: C2SSession, text: str) -> None:
    try:
        plain = parse_plain(b64decode(text))
    except SASLFailure as exc:
        await _done(sasl_failure(session, exc.condition, exc.text))
        return
    username = account(session, plain.authcid)
    try:
        ok = username is not None and await session._server.auth.verify_plain(
            username, plain.password
        )
    except StorageError:
        await _done(sasl_failure(session, "temporary-auth-failure", TRY_LATER))
        return
    if not ok or username is None:
        await _done(sasl_failure(session, "not-authorized", None))
        return
    await _done(sasl_success(session, plain.authcid, plain.authzid, b""))


def account(session: C2SSession, name: str) -> str | None:
    """The bare JID a SASL user name stands for, or None if it cannot be a local user."""
    try:
        return f"{nodeprep(name)}@{session._server.config.domain}"
    except InvalidJID:
        return None


def sasl_success(session: C2SSession, name: str, authzid: str, data: bytes) -> Pending:
    username = account(session, name)
    if username is None:
        return sasl_failure(session, "not-authorized", None)
    if authzid:
        # RFC 6120 §6.4.6: an authorization identity must be the user itself.
        try:
            if parse_jid(authzid).bare_str != username:
                return sasl_failure(session, "invalid-authzid", None)
        except InvalidJID:
            return sasl_failure(session, "invalid-authzid", None)
    session._sasl = None
    session.authenticated = True
    session.username = username
    session.jid = parse_jid(username)
    payload = b64encode(data) if data else ""
    session._send(f"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{payload}</success>".encode())
    log.info("%s: authenticated as %s", session._conn.peer, username)
    session._restart()
    return None


def sasl_failure(session: C2SSession, condition: str, text: str | None) -> Pending:
    session._sasl = None
    session.state = State.FEATURES
    body = f"<{condition}/>"
    if text:
        body += f"<text xml:lang='en'>{_escape(text)}</text>"
    session._send(f"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{body}</failure>".encode())
    if condition not in ("aborted", "temporary-auth-failure"):
        session._auth_attempts += 1
        if session._auth_attempts >= MAX_AUTH_ATTEMPTS:
            session.stream_error(StreamError("policy-violation", "too many failed attempts"))
    return None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def _done(pending: Pending) -> None:
    if pending is not None:
        await pending
