"""Stream management (XEP-0198), the session's half: enabling, acks and resumption.

The protocol state (counters, the unacknowledged queue, the table of resumable sessions) is
Sans-I/O in :mod:`roost.c2s.sm`; these functions wire it to a
:class:`roost.c2s.session.C2SSession` (as friends of it): they answer ``<enable/>``, ``<r/>``
and ``<a/>``, let a new connection take over a detached session on ``<resume/>``
(:func:`adopt`), end a session whose resumption window closed (:func:`expire`), and route
again whatever the client never acknowledged once a session is gone (:func:`reroute`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final

from roost.c2s.sm import StreamManagement, failed, parse_h, sm_bytes
from roost.c2s.state import State
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.parser import XMLStreamParser

if TYPE_CHECKING:
    from roost.c2s.session import C2SSession

log = logging.getLogger("roost.c2s.session")


def on_sm(session: C2SSession, element: Element) -> None:
    name = element.name
    sm = session.sm
    if name == "enable":
        if sm is not None:
            session._conn.write(failed("unexpected-request"))
            return
        config = session._server.config
        resume = element.attrs.get("resume") in ("true", "1") and config.sm_timeout > 0
        sm = session.sm = StreamManagement(resume=resume, max_queue=config.sm_max_queue)
        attrs: dict[str, str] = {}
        if resume:
            session._server.resumption.add(sm.id, session)
            attrs = {"id": sm.id, "resume": "true", "max": str(int(config.sm_timeout))}
        session._conn.write(sm_bytes("enabled", **attrs))
    elif sm is None:
        raise StreamError("unsupported-stanza-type", "stream management is not enabled")
    elif name == "r":
        session._conn.write(sm_bytes("a", h=str(sm.handled)))
    elif name == "a":
        done = sm.ack(parse_h(element))
        if done:
            session._server.confirm_delivery(done)
    elif name == "resume":
        session._conn.write(failed("unexpected-request"))
    else:
        raise StreamError("unsupported-stanza-type", f"<{name}/> is not a XEP-0198 element")


def on_enable_too_early(session: C2SSession, element: Element) -> None:
    # XEP-0198 §3: stream management is enabled after resource binding.
    session._send(failed("unexpected-request"))


def on_resume(session: C2SSession, element: Element) -> Awaitable[None] | None:
    """XEP-0198 §5: continue a previous session on this new connection."""
    if not session.authenticated or session.username is None:
        raise StreamError("not-authorized", "authenticate before resuming")
    previd = element.attrs.get("previd", "")
    h = parse_h(element)
    table = session._server.resumption
    old = table.take(previd, session.username)
    if old is None or old.sm is None or old.state is State.CLOSED:
        ending = table.ending(previd, session.username)
        if ending is not None and ending._busy:
            # Its window closed while it was still handling what the client sent: its final
            # count, for <failed h='N'/>, is known once that is done.
            return _refuse_when_settled(ending, session, previd)
        _not_resumable(session, previd)
        return None
    old.sm.ack(h)
    if old._busy:
        # Stanzas read on the old connection are still being handled. Answered now, <resumed>
        # would leave them out of h: the client would send them again, and they would be
        # handled, and counted, twice (the client's count and ours would then disagree).
        return _resume_when_settled(old, session, previd)
    adopt(old, session)
    return None


async def _resume_when_settled(old: C2SSession, husk: C2SSession, previd: str) -> None:
    await old.settled()
    if husk.state is State.CLOSED or husk._conn.closing:
        return  # the client gave up meanwhile: the old session stays as it was
    if old.state is State.CLOSED or old.sm is None:  # its resumption window closed meanwhile
        _not_resumable(husk, previd)
        return
    adopt(old, husk)


async def _refuse_when_settled(old: C2SSession, husk: C2SSession, previd: str) -> None:
    await old.settled()
    if husk.state is not State.CLOSED and not husk._conn.closing:
        _not_resumable(husk, previd)


def _not_resumable(session: C2SSession, previd: str) -> None:
    """``<failed/>`` with the final count of the session ``previd`` named, when known."""
    final = session._server.resumption.final_count(previd, session.username or "")
    session._send(failed("item-not-found", final))


def adopt(session: C2SSession, husk: C2SSession) -> None:
    """Take over the connection (and its stream) of the session that asked to resume."""
    sm = session.sm
    assert sm is not None
    stale = session._conn
    conn = husk._conn
    if stale is not conn:
        stale.set_handler(None)  # a half-open old connection: drop it quietly
        if not stale.closing:
            stale.abort()
    session._conn = conn
    conn.set_handler(session)
    session._parser = husk._parser
    old_parent = session._framing.stanza_parent
    session._framing = husk._framing  # the new connection's (TCP or WebSocket)
    session._header_sent = True
    session._detached = False
    session._server.resumption.attached(sm.id)
    husk._successor = session
    husk.state = State.CLOSED
    husk._finished = True
    conn.write(sm_bytes("resumed", h=str(sm.handled), previd=sm.id))
    # The queue holds bytes in the session's framing: what was queued while the client was
    # away, or written under another framing, becomes what this connection writes.
    parent = session._framing.stanza_parent
    resend = [_serialized(stanza, old_parent, parent) for stanza in sm.queue]
    sm.queue = deque(resend)
    for data in resend:
        conn.write(data)
    if sm.queue:
        conn.write(R)
    log.debug("%s: resumed with %d stanzas to resend", session, len(sm.queue))


def _serialized(stanza: bytes | Element, written_under: str, parent: str) -> bytes:
    """A queued stanza as bytes to write under ``parent`` (the stanza parent's namespace)."""
    if not isinstance(stanza, bytes):
        return stanza.to_bytes(parent)
    if written_under == parent:
        return stanza
    return _parsed(stanza, written_under).to_bytes(parent)


def unsent(session: C2SSession) -> list[Element]:
    """Take the stanzas the client never acknowledged out of the queue, as elements.

    Parsed back from the bytes written (see :mod:`roost.c2s.sm`): they are routed again.
    """
    sm = session.sm
    if sm is None:
        return []
    parent = session._framing.stanza_parent
    stanzas = [
        _parsed(stanza, parent) if isinstance(stanza, bytes) else stanza for stanza in sm.queue
    ]
    sm.queue.clear()
    return stanzas


def _parsed(data: bytes, parent: str) -> Element:
    """The element this server serialized as ``data`` under ``parent``.

    As :func:`roost.xmpp.parser.parse_element`, without the stream's depth limit: a stanza the
    server wrapped (a carbon copy, say) may be deeper than a client may send, and this one was
    written by the server itself.
    """
    parser = XMLStreamParser(max_stanza=len(data) + 1, max_depth=sys.maxsize)
    parser.feed(f"<stream:stream xmlns='{parent}' xmlns:stream='{ns.STREAM}'>".encode())
    (element,) = [event for event in parser.feed(data) if isinstance(event, Element)]
    return element


def expire(session: C2SSession) -> None:
    """The resumption window closed (or the server stops): end the detached session."""
    if session._finished:
        return
    session._detached = False
    sm = session.sm
    if sm is not None and sm.id:
        # No resuming from now on, even while the last stanzas are still being handled.
        session._server.resumption.closing(sm.id)
    if not session._busy:
        session._finish()
    else:  # it finishes once the stanzas it read are handled (_drain)
        session._unroute()


def sweep_sm(session: C2SSession) -> None:
    """Ask a client with unacknowledged stanzas for an acknowledgement, on its turn."""
    sm = session.sm
    if sm is not None and not session._detached and sm.sweep_request():
        session._conn.write(R)


def reroute(
    session: C2SSession,
    stanzas: list[Element],
    tokens: Sequence[tuple[str, int]] = (),
) -> None:
    """Route again what the client never confirmed, now that this session is unreachable.

    All of it is routed here and now, in the order it was queued, so that nothing routed to
    the user afterwards can overtake it. What needs I/O to go on (offline storage, archiving
    preferences not cached yet) is started at once too, each as a task, so that it queues for
    that I/O in the same order; it is then awaited in the background. ``tokens`` are
    forwarded stanzas among them: once routed again, the nodes that forwarded them are told
    so (see roost.cluster.forwarding).
    """
    router = session._server.router
    pending: list[Awaitable[Any]] = []
    for stanza in stanzas:
        kind = stanza.attrs.get("type")
        try:
            if stanza.name == "message":
                if kind not in (None, "chat", "normal") or not _reroutable(stanza):
                    continue
                # Addressed to this resource, it now goes to the bare JID (RFC 6121
                # §8.5.3.2.1): another resource, or offline storage.
                routed = router.route(stanza.shallow_copy())
            elif stanza.name == "iq" and kind in ("get", "set"):
                routed = router.bounce(stanza, errors.service_unavailable())
            else:
                continue
        except Exception:
            log.exception("%s: failed routing an unconfirmed stanza again", session)
            continue
        if routed is not None:
            pending.append(asyncio.ensure_future(routed))
    if pending or tokens:
        session._server.spawn(_rerouted(session, pending, tokens))


async def _rerouted(
    session: C2SSession, pending: list[Awaitable[Any]], tokens: Sequence[tuple[str, int]]
) -> None:
    failed = False
    for routed in pending:
        try:
            await routed
        except Exception:
            log.exception("%s: failed routing an unconfirmed stanza again", session)
            failed = True
    if tokens and not failed:  # else the forwarding nodes keep them, to be sent again
        session._server.confirm_delivery(list(tokens))


R: Final = sm_bytes("r")
_NOT_REROUTED: Final = frozenset(
    {"urn:xmpp:carbons:2", "urn:xmpp:mam:2", "http://jabber.org/protocol/chatstates"}
)


def _reroutable(message: Element) -> bool:
    """Whether an unacknowledged message is worth routing again: not a copy (carbons), not an
    archive result, not only a chat state."""
    content = False
    for child in message.elements():
        if child.xmlns in _NOT_REROUTED and child.name != "active":
            if child.xmlns != "http://jabber.org/protocol/chatstates":
                return False
            continue
        content = True
    return content


async def counted(pending: Awaitable[Any], sm: StreamManagement) -> None:
    await pending
    sm.count_handled()
