"""The RFC 7395 framing as the session sees it: messages in, stream events out (no I/O)."""

from __future__ import annotations

import pytest

from roost.c2s.framing import TCP, WEBSOCKET, WebSocketParser
from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.parser import StreamClose, StreamOpen

OPEN = f"<open xmlns='{ns.FRAMING}' to='localhost' version='1.0'/>".encode()


def opened() -> WebSocketParser:
    parser = WebSocketParser(max_stanza=4096)
    assert parser.feed(OPEN) == [
        StreamOpen("open", ns.FRAMING, {"to": "localhost", "version": "1.0"})
    ]
    return parser


def condition(parser: WebSocketParser, message: bytes) -> str:
    with pytest.raises(StreamError) as error:
        parser.feed(message)
    return error.value.condition


def test_open_stanza_and_close_become_stream_events() -> None:
    parser = opened()
    [message] = parser.feed(b"<message xmlns='jabber:client' to='a@b'><body>hi</body></message>")
    assert isinstance(message, Element)
    assert (message.name, message.xmlns, message.find_text("body")) == ("message", ns.CLIENT, "hi")
    assert parser.feed(f"<close xmlns='{ns.FRAMING}'/>".encode()) == [StreamClose()]


def test_whitespace_only_message_is_ignored() -> None:
    assert opened().feed(b" \n") == []


@pytest.mark.parametrize(
    "message",
    [
        b"<message xmlns='jabber:client'>",
        b"<r xmlns='urn:xmpp:sm:3'/><r xmlns='urn:xmpp:sm:3'/>",
        b"<r xmlns='urn:xmpp:sm:3'/><a",
    ],
)
def test_a_message_must_hold_exactly_one_element(message: bytes) -> None:
    assert condition(opened(), message) == "not-well-formed"


def test_the_first_message_must_be_open() -> None:
    parser = WebSocketParser(max_stanza=4096)
    assert condition(parser, b"<message xmlns='jabber:client'/>") == "invalid-namespace"


def test_stanzas_must_declare_jabber_client() -> None:
    assert condition(opened(), b"<message to='a@b'/>") == "invalid-namespace"


def test_the_stanza_size_limit_applies() -> None:
    body = b"x" * 5000
    message = b"<message xmlns='jabber:client'><body>" + body + b"</body></message>"
    assert condition(opened(), message) == "policy-violation"


def test_a_restart_expects_a_new_open() -> None:
    parser = opened()
    parser.reset()
    assert condition(parser, b"<iq xmlns='jabber:client' type='get' id='1'/>") == (
        "invalid-namespace"
    )
    parser.reset()
    assert len(parser.feed(OPEN)) == 1


def test_a_hibernated_parser_reads_the_next_message() -> None:
    parser = opened()
    assert parser.hibernate()
    [stanza] = parser.feed(b"<presence xmlns='jabber:client'/>")
    assert isinstance(stanza, Element)
    assert stanza.xmlns == ns.CLIENT


def test_output_stands_alone_over_websocket() -> None:
    message = Element("message", ns.CLIENT, {"to": "a@b"})
    assert message.to_bytes(WEBSOCKET.stanza_parent) == b"<message xmlns='jabber:client' to='a@b'/>"
    assert message.to_bytes(TCP.stanza_parent) == b"<message to='a@b'/>"
    assert WEBSOCKET.close == f"<close xmlns='{ns.FRAMING}'/>".encode()
    header = WEBSOCKET.header("abc", "localhost", "alice@localhost/web")
    assert (
        header
        == (
            f"<open xmlns='{ns.FRAMING}' id='abc' from='localhost' to='alice@localhost/web' "
            "version='1.0' xml:lang='en'/>"
        ).encode()
    )
    error = WEBSOCKET.error(StreamError("policy-violation"))
    assert error.startswith(f"<stream:error xmlns:stream='{ns.STREAM}'>".encode())
