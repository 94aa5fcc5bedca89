"""Message Carbons (XEP-0280): every device of a user sees both sides of every conversation.

Enabling. A client enables or disables carbons for its own session with an IQ-set carrying
``<enable/>`` or ``<disable/>`` in ``urn:xmpp:carbons:2`` (§4, §5). Clients send it without a
``to`` (slixmpp, most mobile clients), which means the user's own account, and a few address the
server; both are accepted. Enabling twice, or disabling a session that never enabled, is not
an error (§10.1). Only the session itself can switch its carbons: the request must come from a
local session and name no other account (``<not-allowed/>``, §4.1). The state is per session and
ends with it; a resumed stream (XEP-0198) is the same session and keeps it.

Sent carbons (§8). When a client sends an eligible message to someone else, every *other*
carbons-enabled session of the user gets a copy wrapped as
``<message from='user@domain' to='user@domain/other'><sent><forwarded>original``, whether or
not the sending session enabled carbons. The copy goes out before the original is routed;
if routing then fails, the sender alone gets the error. A message from a user to their own
account is not copied as *sent*: it is delivered to a resource of the same user, so the
received-side rule below copies it instead (and never back to the resource that sent it).

Received carbons (§7). After the router delivered an eligible message to some resources of a
user (``router.message_delivered``), every carbons-enabled session that did not get the
original gets a ``<received/>`` copy. A message that went to every resource produces none.
A message that found no available resource is stored offline and produces no copy either:
the resources get it from storage when they become available.

Which sessions. A carbons-enabled session gets copies whether or not it sent initial presence.
XEP-0280 does not tie carbons to availability, and clients are advised to enable carbons
*before* presence and archive catch-up, so that no message falls between the two; a session
that opted in has asked for the copies.

Eligibility (§6.1). A message is copied when it is of type ``chat``, or of type ``normal`` with
a ``<body/>``, or carries an IM payload (receipts, XEP-0184; chat states, XEP-0085; chat
markers, XEP-0333), or a MUC invitation (XEP-0249 direct, XEP-0045 mediated). Never copied:
``groupchat`` (the room already sends it to every joined client), ``headline`` (delivered to
every available resource anyway), ``error`` (§6.1 allows errors in reply to eligible messages,
which would need per-message tracking; roost does not keep it, so it does not advertise
``urn:xmpp:carbons:rules:0``), carbons themselves (a ``<sent/>`` or ``<received/>`` child),
archive results, private messages *received* from a MUC occupant (``muc#user`` payload
without an invitation; the room replicates those itself), and messages carrying
``<private xmlns='urn:xmpp:carbons:2'/>`` or the XEP-0334 ``<no-copy/>`` hint (§9). Either
marker alone is enough (§6.1 names ``<private/>``, XEP-0334 names carbons for ``<no-copy/>``).
``<private/>`` is left in the delivered message: earlier versions of the XEP had one of the
servers strip it, and §9 dropped that because a sender could then silently change how the
recipient's server copies the message.

Left out: carbons of errors (above); limiting carbons of MUC private messages to the sessions
joined to that room with the same nickname (roost has no MUC yet). Copies are per node: in a
cluster, the sessions of other nodes are reached through their routes the same way once the
registry spans nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from roost.c2s.session import C2SSession
from roost.core.iq import IQRequest, Scope
from roost.core.module import Module, register_module
from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.jid import JID, InvalidJID, parse_jid

if TYPE_CHECKING:
    from roost.core.server import Server

CARBONS: Final = "urn:xmpp:carbons:2"
FORWARD: Final = "urn:xmpp:forward:0"
HINTS: Final = "urn:xmpp:hints"
RECEIPTS: Final = "urn:xmpp:receipts"
CHAT_STATES: Final = "http://jabber.org/protocol/chatstates"
MARKERS: Final = "urn:xmpp:chat-markers:0"
MUC_USER: Final = "http://jabber.org/protocol/muc#user"
CONFERENCE: Final = "jabber:x:conference"  # XEP-0249 direct invitation
MAM: Final = "urn:xmpp:mam:2"

ENABLED: Final = "carbons.enabled"  # session.data key: this session wants carbons

_IM_PAYLOADS: Final = frozenset({RECEIPTS, CHAT_STATES, MARKERS, CONFERENCE})


def eligible(message: Element, *, received: bool) -> bool:
    """Whether ``message`` is copied to the user's other sessions (XEP-0280 §6.1).

    ``received`` is True for a message to the user (a *received* carbon), False for one the
    user's client sent.
    """
    kind = message.attrs.get("type", "normal")
    if kind not in ("chat", "normal"):
        return False  # groupchat, headline, error: see the module docstring
    copy = kind == "chat"
    for child in message.children:
        if isinstance(child, str):
            continue
        xmlns = child.xmlns
        if xmlns in (CARBONS, MAM):
            return False  # <private/>, or a carbon or archive result itself
        if xmlns == HINTS:
            if child.name == "no-copy":
                return False
        elif xmlns == MUC_USER:
            if child.find("invite", MUC_USER) is not None:
                copy = True  # a mediated invitation
            elif received:
                return False  # a private message from an occupant: the room copies it
        elif xmlns in _IM_PAYLOADS or (child.name == "body" and xmlns == ns.CLIENT):
            copy = True
    return copy


def wrap(kind: str, message: Element, user: str, to: JID) -> Element:
    """The carbon copy of ``message`` for the session ``to`` (§7, §8): ``kind`` is ``sent`` or
    ``received``. The original is shared, not copied: delivered stanzas are never changed."""
    attrs = {"from": user, "to": str(to)}
    kind_attr = message.attrs.get("type")
    if kind_attr is not None:
        attrs["type"] = kind_attr  # §7, §8: the wrapper SHOULD keep the type
    copy = Element("message", ns.CLIENT, attrs)
    copy.add(kind, CARBONS).add("forwarded", FORWARD).append(message)
    return copy


def _wants_copies(route: Any) -> bool:
    data = getattr(route, "data", None)
    return bool(data and data.get(ENABLED))


@register_module
class CarbonsModule(Module):
    name = "carbons"
    server_features = (CARBONS,)

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        # bare JID -> its carbons-enabled sessions. Copies are only made for users in here,
        # so that the message path of everyone else costs one dict lookup.
        self._enabled: dict[str, set[C2SSession]] = {}

    def start(self) -> None:
        self.iq(Scope.ACCOUNT, CARBONS, self._on_iq)
        self.iq(Scope.SERVER, CARBONS, self._on_iq)
        # Late in the inbound fold: blocking (and anything else that may refuse the message)
        # has run, and the copy shows the message as it will be routed.
        self.hook("c2s.inbound", self._sent, priority=80)
        self.hook("router.message_delivered", self._received)
        self.hook("c2s.closed", self._on_closed)

    # -- enabling (§4, §5) -------------------------------------------------------------------

    async def _on_iq(self, request: IQRequest) -> Element:
        session = request.origin
        if request.type != "set" or request.payload.name not in ("enable", "disable"):
            raise errors.bad_request("send <enable/> or <disable/> in an IQ-set")
        if session is None or session.jid != request.sender:
            raise errors.not_allowed("carbons are enabled by the client's own session")
        if request.to.local is not None and not request.own_account:
            raise errors.not_allowed("carbons of another account cannot be changed")
        user = session.jid.bare_str
        if request.payload.name == "enable":
            session.data[ENABLED] = True
            self._enabled.setdefault(user, set()).add(session)
        else:
            session.data.pop(ENABLED, None)
            self._forget(user, session)
        # In a cluster the flag travels with the session's registry entry, so that nodes
        # routing to this user copy to it too.
        self.server.sessions.refresh(session)
        return request.result()

    def _on_closed(self, session: C2SSession) -> None:
        if session.data.pop(ENABLED, None):
            self._forget(session.jid.bare_str, session)

    def _forget(self, user: str, session: C2SSession) -> None:
        sessions = self._enabled.get(user)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._enabled[user]

    def enabled_sessions(self, user: str) -> frozenset[C2SSession]:
        """The user's carbons-enabled sessions on this node."""
        return frozenset(self._enabled.get(user, ()))

    # -- copies --------------------------------------------------------------------------------

    def _targets(self, user: str) -> list[Any]:
        """The user's carbons-enabled routes: local sessions, and in a cluster the sessions of
        other nodes whose registry entry carries the flag (a copy to one of those is forwarded
        in one hop like any stanza)."""
        local = self._enabled.get(user)
        if self.server.cluster is None:
            return list(local) if local else []
        return [route for route in self.server.sessions.routes(user) if _wants_copies(route)]

    def _sent(self, stanza: Element, session: C2SSession) -> Element:
        if stanza.name != "message":
            return stanza
        user = session.jid.bare_str
        sessions = self._targets(user)
        if not sessions or (len(sessions) == 1 and session in sessions):
            return stanza
        to = stanza.attrs.get("to")
        if to is None:
            return stanza  # to the user's own account: see the module docstring
        try:
            if parse_jid(to).bare_str == user:
                return stanza
        except InvalidJID:
            return stanza
        if not eligible(stanza, received=False):
            return stanza
        for other in list(sessions):
            if other is not session:
                other.deliver(wrap("sent", stanza, user, other.jid))
        return stanza

    def _received(self, stanza: Element, to: JID, routes: list[Any]) -> None:
        user = to.bare_str
        sessions = self._targets(user)
        if not sessions or not eligible(stanza, received=True):
            return
        sender = stanza.attrs.get("from")
        for session in list(sessions):
            if any(route is session for route in routes):
                continue  # it has the original (§7)
            if str(session.jid) == sender:
                continue  # a message to the user's own account, back to its sender
            session.deliver(wrap("received", stanza, user, session.jid))
