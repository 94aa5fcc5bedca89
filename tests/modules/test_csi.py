"""What an inactive stream holds (XEP-0352), how it replaces, and its bound."""

from __future__ import annotations

from typing import Any, cast

import pytest

from roost.c2s.session import C2SSession
from roost.core.server import Server
from roost.modules.csi import CSI, MAX_HELD, CSIModule, Hold, hold_key
from roost.xmpp.element import Element
from roost.xmpp.parser import parse_element

STATES = "http://jabber.org/protocol/chatstates"


@pytest.mark.parametrize(
    ("stanza", "key"),
    [
        ("<presence from='a@x/1'/>", ("presence", "a@x/1")),
        ("<presence from='a@x/1' type='unavailable'/>", ("presence", "a@x/1")),
        ("<presence from='a@x/1'><show>away</show></presence>", ("presence", "a@x/1")),
        ("<presence from='a@x' type='subscribe'/>", None),
        ("<presence from='a@x' type='subscribed'/>", None),
        ("<presence from='a@x' type='probe'/>", None),
        ("<presence from='a@x' type='error'/>", None),
        (
            f"<message from='a@x/1' to='b@x/2' type='chat'><composing xmlns='{STATES}'/></message>",
            ("chatstate", "direct", "a@x/1", "b@x/2"),
        ),
        (
            f"<message from='a@x/1' to='b@x' type='chat'><thread>t</thread>"
            f"<paused xmlns='{STATES}'/><no-store xmlns='urn:xmpp:hints'/>"
            "<origin-id xmlns='urn:xmpp:sid:0' id='1'/></message>",
            ("chatstate", "direct", "a@x/1", "b@x"),
        ),
        (f"<message type='chat'><body>hi</body><active xmlns='{STATES}'/></message>", None),
        ("<message><received xmlns='urn:xmpp:receipts' id='1'/></message>", None),
        ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", None),
        (f"<message type='error'><composing xmlns='{STATES}'/></message>", None),
        ("<message type='chat'/>", None),
        ("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", None),
        (
            "<message from='b@x' to='b@x/2' type='chat'><sent xmlns='urn:xmpp:carbons:2'>"
            "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='b@x/1' "
            f"to='a@x' type='chat'><composing xmlns='{STATES}'/></message></forwarded></sent>"
            "</message>",
            ("chatstate", "sent", "b@x/1", "a@x"),
        ),
        (
            "<message from='b@x' to='b@x/2' type='chat'><received xmlns='urn:xmpp:carbons:2'>"
            "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='a@x/1' "
            "to='b@x/1' type='chat'><body>hi</body></message></forwarded></received></message>",
            None,
        ),
    ],
)
def test_only_availability_presence_and_bare_chat_states_are_held(
    stanza: str, key: tuple[str, ...] | None
) -> None:
    assert hold_key(parse_element(stanza)) == key


def test_a_newer_stanza_replaces_the_held_one_and_becomes_the_newest() -> None:
    hold = Hold(object())
    one, two, three = (Element("presence", attrs={"id": str(i)}) for i in range(3))
    hold.add(("presence", "a"), one)
    hold.add(("presence", "b"), two)
    hold.add(("presence", "a"), three)
    assert hold.take() == [two, three]
    assert len(hold) == 0


class FakeSession:
    """What the hold uses of a session: its data, its connection, and unhooked sending."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.connection = object()
        self.written: list[Element] = []

    def send(self, stanza: Element) -> None:
        self.written.append(stanza)


def _inactive() -> tuple[CSIModule, C2SSession, FakeSession]:
    module = CSIModule(cast(Server, object()))
    fake = FakeSession()
    session = cast(C2SSession, fake)
    assert module._on_element(Element("inactive", CSI), session) is None
    assert module.inactive(session)
    return module, session, fake


def test_a_full_buffer_is_written_out_rather_than_grown() -> None:
    module, session, fake = _inactive()
    presences = [Element("presence", attrs={"from": f"user{i}@x/r"}) for i in range(MAX_HELD + 1)]
    for presence in presences[:MAX_HELD]:
        assert module._outbound(presence, session) is None
    assert len(module.held(session)) == MAX_HELD
    assert fake.written == []
    assert module._outbound(presences[MAX_HELD], session) is None
    assert fake.written == presences  # nothing dropped, in order
    assert module.held(session) == []
    assert module.inactive(session)  # and it goes on holding


def test_an_urgent_stanza_follows_what_was_held() -> None:
    module, session, fake = _inactive()
    presence = Element("presence", attrs={"from": "a@x/r"})
    message = parse_element("<message><body>hi</body></message>")
    assert module._outbound(presence, session) is None
    assert module._outbound(message, session) is message  # written by the session, after
    assert fake.written == [presence]


def test_active_writes_what_was_held_and_stops_holding() -> None:
    module, session, fake = _inactive()
    presence = Element("presence", attrs={"from": "a@x/r"})
    module._outbound(presence, session)
    assert module._on_element(Element("active", CSI), session) is None
    assert fake.written == [presence]
    later = Element("presence", attrs={"from": "b@x/r"})
    assert module._outbound(later, session) is later


def test_other_elements_are_left_to_the_session() -> None:
    module, session, _ = _inactive()
    unknown = Element("asleep", CSI)
    assert module._on_element(unknown, session) is unknown
    other = Element("r", "urn:xmpp:sm:3")
    assert module._on_element(other, session) is other
