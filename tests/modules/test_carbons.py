"""Which messages Message Carbons copy (XEP-0280 §6.1) and what a copy looks like (§7, §8)."""

from __future__ import annotations

import pytest

from roost.modules.carbons import eligible, wrap
from roost.xmpp.jid import JID
from roost.xmpp.parser import parse_element

CHAT_STATE = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
MUC_USER = "http://jabber.org/protocol/muc#user"


@pytest.mark.parametrize(
    ("message", "copied"),
    [
        ("<message type='chat'><body>hi</body></message>", True),
        ("<message type='chat'/>", True),  # type chat is enough
        (f"<message type='chat'>{CHAT_STATE}</message>", True),
        ("<message><body>no type is normal</body></message>", True),
        ("<message type='normal'><body>hi</body></message>", True),
        ("<message type='normal'/>", False),
        ("<message><subject>no body</subject></message>", False),
        ("<message><received xmlns='urn:xmpp:receipts' id='1'/></message>", True),
        ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", True),
        (f"<message>{CHAT_STATE}</message>", True),
        ("<message><x xmlns='jabber:x:conference' jid='room@muc'/></message>", True),
        (f"<message><x xmlns='{MUC_USER}'><invite from='a@b'/></x></message>", True),
        ("<message type='groupchat'><body>room talk</body></message>", False),
        ("<message type='headline'><body>news</body></message>", False),
        ("<message type='error'><body>bounced</body></message>", False),
        (
            "<message type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/>"
            "</message>",
            False,
        ),
        (
            "<message type='chat'><body>secret</body><no-copy xmlns='urn:xmpp:hints'/></message>",
            False,
        ),
        (
            "<message type='chat'><body>kept</body><no-store xmlns='urn:xmpp:hints'/></message>",
            True,
        ),
        (
            "<message type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded "
            "xmlns='urn:xmpp:forward:0'/></sent></message>",
            False,
        ),
        (
            "<message><result xmlns='urn:xmpp:mam:2' id='1'><forwarded "
            "xmlns='urn:xmpp:forward:0'/></result></message>",
            False,
        ),
    ],
)
def test_eligibility_follows_the_recommended_rules(message: str, copied: bool) -> None:
    stanza = parse_element(message)
    assert eligible(stanza, received=True) is copied
    assert eligible(stanza, received=False) is copied


def test_private_messages_of_a_muc_occupant_are_copied_when_sent_not_when_received() -> None:
    stanza = parse_element(
        f"<message type='chat'><body>psst</body><x xmlns='{MUC_USER}'/></message>"
    )
    assert eligible(stanza, received=False)
    assert not eligible(stanza, received=True)  # the room sends it to every joined client


def test_a_copy_wraps_the_original_from_the_bare_jid_with_the_same_type() -> None:
    original = parse_element(
        "<message from='bob@localhost/b' to='alice@localhost/phone' type='chat' id='m1'>"
        "<body>hi &amp; bye</body></message>"
    )
    copy = wrap("received", original, "alice@localhost", JID("alice", "localhost", "laptop"))
    assert copy.to_str() == (
        "<message from='alice@localhost' to='alice@localhost/laptop' type='chat'>"
        "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' from='bob@localhost/b' to='alice@localhost/phone' "
        "type='chat' id='m1'><body>hi &amp; bye</body></message>"
        "</forwarded></received></message>"
    )


def test_a_copy_of_a_message_without_type_has_no_type() -> None:
    original = parse_element("<message to='bob@localhost'><body>hi</body></message>")
    copy = wrap("sent", original, "alice@localhost", JID("alice", "localhost", "laptop"))
    assert "type" not in copy.attrs
    sent = copy.find("sent", "urn:xmpp:carbons:2")
    assert sent is not None
