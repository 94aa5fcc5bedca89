"""Client State Indication (XEP-0352): less traffic to clients nobody is looking at.

Protocol (§4). After authentication the stream features include ``<csi xmlns='urn:xmpp:csi:0'/>``.
An established stream starts *active*; the client sends ``<inactive/>`` when the user stops
looking (a phone screen turned off) and ``<active/>`` when the user is back. Neither is
answered. Both are handled at once, before the client's next stanza (§5.1): after
``<active/>`` everything held is on the wire before the reply to whatever the client sends next.

What an inactive stream holds back (the optimisations §3.2 suggests; the rest goes out at once):

* presence that only tells availability (no type, or ``unavailable``), keeping only the latest
  from each full JID: a contact who changes status ten times while the phone sleeps costs one
  stanza when it wakes. Subscription requests and answers, probes and presence errors are
  urgent and go out at once.
* messages that carry only a chat state (XEP-0085; with at most a ``<thread/>``, XEP-0334
  hints and XEP-0359 ids beside it), directly or inside a carbon copy (XEP-0280), keeping only
  the latest per sender and recipient: "composing" then "paused" is worth one stanza, later.

Everything else (messages with a body, receipts, chat markers, IQs, errors, pushes) is urgent.
Before an urgent stanza is written, everything held is written first, in the order it was held
(a replaced stanza takes the place of the newest), so the client never sees a message from a
contact and only then the presence that came before it. ``<active/>`` writes everything held.

Bounds. Replacing superseded stanzas keeps the buffer to one presence per contact resource and
one chat state per conversation, and it is also capped at :data:`MAX_HELD` stanzas: when the
cap is passed, the buffer is written out (nothing is dropped) and holding starts again.

Placement. The hold sits in ``c2s.outbound`` as the last handler, so a held stanza has already
passed every other outbound handler and is written as it is when released (a handler added
after this one would be skipped for held stanzas; none should be). Stream management counts
a stanza when it is written, so held stanzas are not in its queue: if the stream is lost, held
presence and chat states are lost with it, which costs nothing the next presence and chat state
will not tell again.

Stream resumption (§5.2). A resumed stream starts active. Stream management keeps the session
and its data across a resumption; the hold notices that the connection changed and behaves as
if ``<active/>`` had been sent, at the first thing it sees on the new connection (a stanza to
write or a CSI element), so what was held is written then.

Left out: per-user or per-administrator configuration of what is held (§3.2 suggests it); PEP
notifications are not held (roost has no PEP yet).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from roost.c2s.session import C2SSession
from roost.core.module import Module, register_module
from roost.xmpp import ns
from roost.xmpp.element import Element

CSI: Final = "urn:xmpp:csi:0"
CHAT_STATES: Final = "http://jabber.org/protocol/chatstates"
CARBONS: Final = "urn:xmpp:carbons:2"
FORWARD: Final = "urn:xmpp:forward:0"
HINTS: Final = "urn:xmpp:hints"
STANZA_IDS: Final = "urn:xmpp:sid:0"

_BESIDE: Final = frozenset({HINTS, STANZA_IDS})  # may accompany a chat state

STATE: Final = "csi.held"  # session.data key, present while the stream is inactive
MAX_HELD: Final = 256  # stanzas held per stream before they are written anyway
PRIORITY: Final = 1000  # last in c2s.outbound

Key = tuple[str, ...]


class Hold:
    """What an inactive stream holds: stanzas by key, oldest first."""

    __slots__ = ("connection", "stanzas")

    def __init__(self, connection: object) -> None:
        self.connection = connection  # the connection it went inactive on
        self.stanzas: OrderedDict[Key, Element] = OrderedDict()

    def add(self, key: Key, stanza: Element) -> None:
        """Hold ``stanza``; one held under the same key is replaced, and this one is newest."""
        stanzas = self.stanzas
        stanzas.pop(key, None)
        stanzas[key] = stanza

    def take(self) -> list[Element]:
        taken = list(self.stanzas.values())
        self.stanzas.clear()
        return taken

    def __len__(self) -> int:
        return len(self.stanzas)


def hold_key(stanza: Element) -> Key | None:
    """The key under which an inactive stream holds ``stanza``, or None when it is urgent."""
    name = stanza.name
    if name == "presence":
        kind = stanza.attrs.get("type")
        if kind is None or kind == "unavailable":
            return ("presence", stanza.attrs.get("from", ""))
        return None
    if name != "message" or stanza.attrs.get("type") == "error":
        return None
    message, way = _carried(stanza)
    if message is None or not chat_state_only(message):
        return None
    return ("chatstate", way, message.attrs.get("from", ""), message.attrs.get("to", ""))


def chat_state_only(message: Element) -> bool:
    """A message whose only content is a XEP-0085 chat state."""
    state = False
    for child in message.children:
        if isinstance(child, str):
            continue
        xmlns = child.xmlns
        if xmlns == CHAT_STATES:
            state = True
        elif xmlns not in _BESIDE and not (xmlns == ns.CLIENT and child.name == "thread"):
            return False
    return state


def _carried(message: Element) -> tuple[Element | None, str]:
    """The message itself, or the one a carbon copy carries, and which way it went."""
    for child in message.children:
        if isinstance(child, Element) and child.xmlns == CARBONS:
            forwarded = child.find("forwarded", FORWARD)
            inner = None if forwarded is None else forwarded.find("message", ns.CLIENT)
            return inner, child.name
    return message, "direct"


@register_module
class CSIModule(Module):
    name = "csi"

    def start(self) -> None:
        self.hook("c2s.features", self._features)
        self.hook("c2s.stream_element", self._on_element)
        self.hook("c2s.outbound", self._outbound, priority=PRIORITY)

    def _features(self, features: Element, session: C2SSession) -> None:
        features.add("csi", CSI)

    def _on_element(self, element: Element, session: C2SSession) -> Element | None:
        if element.xmlns != CSI:
            return element
        if element.name == "active":
            self.activate(session)
            return None
        if element.name == "inactive":
            hold = session.data.get(STATE)
            if hold is not None and hold.connection is not session.connection:
                self.activate(session)  # held on a connection before resumption
                hold = None
            if hold is None:
                session.data[STATE] = Hold(session.connection)
            return None
        return element  # not a CSI element: the session answers it as unsupported

    def _outbound(self, stanza: Element, session: C2SSession) -> Element | None:
        hold: Hold | None = session.data.get(STATE)
        if hold is None:
            return stanza
        if hold.connection is not session.connection:
            self.activate(session)  # §5.2: a resumed stream is active
            return stanza
        key = hold_key(stanza)
        if key is None:
            _release(session, hold)  # what came before it goes first
            return stanza
        hold.add(key, stanza)
        if len(hold) > MAX_HELD:
            _release(session, hold)
        return None

    def activate(self, session: C2SSession) -> None:
        """Make the stream active and write what it held."""
        hold: Hold | None = session.data.pop(STATE, None)
        if hold is not None:
            _release(session, hold)

    def inactive(self, session: C2SSession) -> bool:
        return STATE in session.data

    def held(self, session: C2SSession) -> list[Element]:
        """What the session holds now, oldest first (for tests and introspection)."""
        hold: Hold | None = session.data.get(STATE)
        return [] if hold is None else list(hold.stanzas.values())


def _release(session: C2SSession, hold: Hold) -> None:
    # session.send writes without running the outbound hooks again: held stanzas have passed
    # all of them already (this one is last).
    for stanza in hold.take():
        session.send(stanza)
