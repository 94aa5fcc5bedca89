"""Resource binding of a client stream (RFC 6120 §7), and the other IQs a stream may send
before it is bound.

Like :mod:`roost.c2s.sasl_negotiation`, these functions act on a
:class:`roost.c2s.session.C2SSession` as its friends (they use its private attributes) and live
apart so that the session file stays about the stream itself.

Before SASL only in-band registration (XEP-0077 §3, through the ``c2s.unauthenticated_iq``
hook) is allowed, anything else ends the stream with ``<not-authorized/>``; after SASL and
before binding, an IQ other than ``<bind/>`` gets a ``not-authorized`` stanza error. Binding
takes the requested resource (RESOURCEPREP, RFC 7622 §3.4) or generates one, and replaces an
older session of the same full JID with a ``<conflict/>`` stream error (RFC 6120 §7.7.2.2).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from roost.c2s.state import State
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.jid import InvalidJID, resourceprep

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession

log = logging.getLogger("roost.c2s.session")

Pending = Awaitable[Any] | None


def on_negotiation_iq(session: C2SSession, element: Element) -> Pending:
    payload = element.first_child()
    kind = element.attrs.get("type")
    if (
        session.authenticated
        and payload is not None
        and kind == "set"
        and (payload.xmlns, payload.name) == (ns.BIND, "bind")
    ):
        return bind(session, element, payload)
    if not session.authenticated:
        # In-band registration (XEP-0077 §3) is the one thing allowed before SASL.
        handled = session._server.hooks.fold("c2s.unauthenticated_iq", element, session)
        if not isinstance(handled, Element):
            return handled  # type: ignore[no-any-return]
        raise StreamError("not-authorized", "authenticate first")
    session._reply_error(element, errors.not_authorized("bind a resource first"))
    return None


def bind(session: C2SSession, iq: Element, request: Element) -> Pending:
    """RFC 6120 §7: bind the requested (or a generated) resource."""
    from roost.c2s.session import C2SSession  # a cycle at import time: session imports this

    requested = request.find_text("resource", ns.BIND)
    try:
        resource = resourceprep(requested) if requested else generated_resource()
    except InvalidJID as exc:
        session._reply_error(iq, errors.bad_request(str(exc)))
        return None
    jid = session.jid.with_resource(resource)
    session.jid = jid
    server = session._server
    previous = server.sessions.add(session)
    if previous is not None and isinstance(previous, C2SSession) and previous is not session:
        # RFC 6120 §7.7.2.2: the older session of the same full JID is replaced.
        previous.stream_error(StreamError("conflict", "replaced by a new session"))
    session.state = State.ESTABLISHED
    result = Element("iq", ns.CLIENT, {"type": "result", "id": iq.attrs.get("id", "")})
    result.add("bind", ns.BIND).add_text("jid", str(jid))
    session.send(result)
    log.debug("%s: bound %s", session._conn.peer, jid)
    server.hooks.run("c2s.bound", session)
    return None


def generated_resource() -> str:
    return "roost-" + secrets.token_hex(6)
