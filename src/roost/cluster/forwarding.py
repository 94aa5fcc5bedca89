"""One-hop forwarding of stanzas to the node that holds the recipient's session.

When the router picks a session on another node (a :class:`~roost.cluster.sessions.RemoteRoute`),
the stanza is serialized once and sent on the mesh's ``route`` channel as a :class:`Forward`
frame; the owning node parses it and hands it to the session, exactly as if it had been
routed there.

Nothing acknowledged is lost when a node dies. The sending node keeps every forwarded stanza
until the receiving node says it is safe (:class:`Done`): at once when the stanza was written
to a session without stream management, or — for a session with stream management — only
when that client acknowledged it (the session reports the tokens it carried,
``Server.confirm_delivery``), or when the receiving node itself took responsibility for it
(stored it offline, routed it on). When a link goes down, whatever that peer had not confirmed
is routed again from the sending node, where the peer's sessions have disappeared from pg by
then: to another resource, or to offline storage. Delivery across nodes is therefore at least
once; a stanza can arrive twice only when a node dies between delivering it and saying so.

``Forward.local`` asks the receiving node to run its own routing for the stanza restricted to
its own sessions (presence probes: each node answers for the sessions it holds).

A :class:`Notice` names a user and an event for the receiving node's modules (the hook
``cluster.<event>``, with the user's bare JID): offline storage tells the node of a user's
session that a message was stored after that session may have read the user's queue. Notices
have a channel of their own: a node of an older version has no subscriber for it and ignores
them, where a message it cannot decode on ``route`` would be a corrupt frame and cost the link.

Cost. A forwarded stanza is written to the client as the text the sending node made of it,
not serialized again: the receiving node still parses it (the hooks on its way read it, and
the text must be known to be exactly one well-formed element before it goes verbatim into a
client's stream), into a :class:`~roost.xmpp.element.KnownText` that returns that text for as
long as nothing changes it. Parsing goes through one long-lived stream parser
(:class:`StanzaReader`): a new parser per stanza, as ``parse_element`` makes, spends two thirds
of its time setting up expat and the stream around the stanza.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from roost.cluster.mesh import Mesh
from roost.cluster.mesh_types import Peer
from roost.xmpp import ns
from roost.xmpp.element import Element, KnownText
from roost.xmpp.errors import StreamError
from roost.xmpp.jid import InvalidJID, parse_jid
from roost.xmpp.parser import XMLStreamParser

if TYPE_CHECKING:
    from roost.cluster.sessions import ClusterRegistry
    from roost.core.server import Server

log = logging.getLogger(__name__)

CHANNEL: Final = "route"
NOTICE_CHANNEL: Final = "notice"
# Bytes a StanzaReader's parser reads before it is replaced: expat keeps every attribute name
# it has seen and its input buffer at the largest stanza, for as long as it lives.
RENEW_AFTER: Final = 1 << 20
_HEADER: Final = f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAM}'>".encode()


class Forward(msgspec.Struct, array_like=True, tag="fwd", frozen=True):
    seq: int
    to: str
    stanza: str
    local: bool = False


class Done(msgspec.Struct, array_like=True, tag="done", frozen=True):
    seqs: list[int]


RouteMessage = Forward | Done


class Notice(msgspec.Struct, array_like=True, frozen=True):
    event: str
    user: str


Token = tuple[str, int]  # (node that forwarded, its sequence number)


class StanzaReader:
    """Parses forwarded stanzas, one complete stanza per call, with one stream parser.

    The parser reads a stream opened as ``parse_element`` opens one (default namespace
    ``jabber:client``, the ``stream`` prefix declared, as in a client's stream), and each text
    must be exactly one element, with nothing but whitespace around it: the text is written to
    a client's stream as it is. Whatever ``parse_element`` refuses is refused, and the text
    after a refused one starts on a new parser.
    """

    __slots__ = ("_fed", "_max_stanza", "_parser")

    def __init__(self, max_stanza: int) -> None:
        self._max_stanza = max_stanza
        self._parser: XMLStreamParser | None = None
        self._fed = 0

    def read(self, text: str) -> KnownText:
        """The stanza ``text`` is, which serializes back to ``text`` while unchanged.

        Raises :class:`~roost.xmpp.errors.StreamError` when ``text`` is not one element.
        """
        data = text.encode()
        parser = self._parser
        if parser is None:
            parser = XMLStreamParser(max_stanza=self._max_stanza)
            parser.feed(_HEADER)
            self._parser = parser
            self._fed = 0
        self._fed += len(data)
        if self._fed > RENEW_AFTER:
            self._parser = None  # after this text
        try:
            events = parser.feed(data)
            if len(events) != 1 or not parser.at_boundary:
                raise StreamError("not-well-formed", "expected exactly one element")
            element = events[0]
            if not isinstance(element, Element):
                raise StreamError("not-well-formed", "expected an element")
        except BaseException:
            self._parser = None  # whatever state it is in, the next text starts afresh
            raise
        return KnownText(element, text)


class Forwarder:
    def __init__(self, mesh: Mesh, server: Server) -> None:
        self.mesh = mesh
        self._server = server
        self._registry: ClusterRegistry | None = None
        self._seq = 0
        self._inflight: dict[str, dict[int, tuple[str, str]]] = {}
        self._done: dict[str, list[int]] = {}
        self._flush_scheduled = False
        self.forwarded = 0
        self.received = 0
        self.rerouted = 0
        self._reader = StanzaReader(mesh.max_frame_size)
        mesh.subscribe(CHANNEL, self._receive, type=RouteMessage)
        mesh.subscribe(NOTICE_CHANNEL, self._notice, type=Notice)
        mesh.on_peer_down(self._peer_down)

    def attach(self, registry: ClusterRegistry) -> None:
        self._registry = registry

    # -- sending side ----------------------------------------------------------------------------

    def forward(self, node: str, to: str, stanza: Element, *, local: bool = False) -> None:
        text = stanza.to_str()
        self._seq += 1
        seq = self._seq
        self._inflight.setdefault(node, {})[seq] = (to, text)
        self.forwarded += 1
        if not self.mesh.send(node, CHANNEL, Forward(seq, to, text, local)):
            # The link is gone (pg has not caught up yet): route it again from here.
            del self._inflight[node][seq]
            self._reroute_soon([(to, text)])

    def notify(self, node: str, event: str, user: str) -> None:
        """Run the hook ``cluster.<event>`` with ``user`` on ``node`` (not acknowledged: a
        notice to a node that went down is moot, its sessions went with it)."""
        self.mesh.send(node, NOTICE_CHANNEL, Notice(event, user))

    def _peer_down(self, peer: Peer) -> None:
        pending = self._inflight.pop(peer.name, None)
        self._done.pop(peer.name, None)
        if pending:
            log.info(
                "%d stanzas forwarded to %s unconfirmed; routing them again",
                len(pending),
                peer.name,
            )
            self._reroute_soon(list(pending.values()))

    def _reroute_soon(self, stanzas: list[tuple[str, str]]) -> None:
        # After the other peer_down callbacks, so that pg no longer lists the peer's sessions.
        asyncio.get_running_loop().call_soon(self._spawn_reroute, stanzas)

    def _spawn_reroute(self, stanzas: list[tuple[str, str]]) -> None:
        self._server.spawn(self._reroute(stanzas))

    async def _reroute(self, stanzas: list[tuple[str, str]]) -> None:
        router = self._server.router
        for _to, text in stanzas:
            try:
                stanza = self._reader.read(text)
            except StreamError:
                continue
            self.rerouted += 1
            pending = router.route(stanza)
            if pending is not None:
                await pending

    # -- receiving side ----------------------------------------------------------------------------

    def _receive(self, node: str, message: Any) -> None:
        if isinstance(message, Done):
            inflight = self._inflight.get(node)
            if inflight is not None:
                for seq in message.seqs:
                    inflight.pop(seq, None)
            return
        self.received += 1
        try:
            stanza = self._reader.read(message.stanza)
            to = parse_jid(message.to)
        except (StreamError, InvalidJID):
            log.warning("dropping an unreadable forwarded stanza from %s", node)
            self.confirm([(node, message.seq)])
            return
        server = self._server
        token = (node, message.seq)
        if message.local:
            server.cluster_local_only = True
            try:
                pending = server.router.route(stanza)
            finally:
                server.cluster_local_only = False
            self._finish(pending, token)
            return
        assert self._registry is not None
        route = self._registry.local(to)
        if route is None:
            # The session left meanwhile: ordinary routing takes it (the bare JID, offline).
            self._finish(server.router.route(stanza), token)
            return
        server.delivery_token = token
        try:
            route.deliver(stanza)
        finally:
            unclaimed = server.delivery_token is not None
            server.delivery_token = None
        if unclaimed:
            self.confirm([token])  # written out directly: nothing more to wait for

    def _notice(self, node: str, notice: Notice) -> None:
        self._server.hooks.run(f"cluster.{notice.event}", notice.user)

    def _finish(self, pending: Awaitable[Any] | None, token: Token) -> None:
        if pending is None:
            self.confirm([token])
            return

        async def then() -> None:
            await pending
            self.confirm([token])

        self._server.spawn(then())

    def confirm(self, tokens: list[Token]) -> None:
        """These forwarded stanzas are now this node's responsibility: tell their senders."""
        for node, seq in tokens:
            self._done.setdefault(node, []).append(seq)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_done)

    def _flush_done(self) -> None:
        self._flush_scheduled = False
        done, self._done = self._done, {}
        for node, seqs in done.items():
            self.mesh.send(node, CHANNEL, Done(seqs))

    def statistics(self) -> dict[str, int]:
        return {
            "forwarded": self.forwarded,
            "received": self.received,
            "rerouted": self.rerouted,
            "unconfirmed": sum(len(v) for v in self._inflight.values()),
        }
