"""roost.bench.load.scan: framing a stream with bytes.find, fed whole or a byte at a time."""

from __future__ import annotations

import pytest

from roost.bench.load.scan import (
    MAX_BUFFER,
    Framer,
    FramingError,
    attribute,
    child_text,
    child_texts,
    error_condition,
    has_child,
    local_name,
)

STREAM = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"id='abc' from='localhost' version='1.0'>"
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    b"<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
    b"</stream:features>"
    b"  \n "  # whitespace keepalives
    b"<message from='a@localhost/r' to='b@localhost/r' type=\"chat\" id='x>y'>"
    b"<body>hello</body><!-- a <comment> --><x><![CDATA[ </message> ]]></x></message>"
    b"<presence from='a@localhost/r'/>"
    b"<iq type='result' id='1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<jid>b@localhost/load</jid></bind></iq>"
    b"</stream:stream>"
)


def _pieces(data: bytes, chunk: int) -> list[bytes]:
    framer = Framer()
    pieces: list[bytes] = []
    for i in range(0, len(data), chunk):
        pieces += framer.feed(data[i : i + chunk])
    return pieces


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, len(STREAM)])
def test_framing_does_not_depend_on_how_bytes_arrive(chunk: int) -> None:
    pieces = _pieces(STREAM, chunk)
    assert [local_name(p) for p in pieces] == [
        b"stream",
        b"features",
        b"message",
        b"presence",
        b"iq",
        b"stream",
    ]
    assert pieces[0].startswith(b"<stream:stream ")
    assert pieces[2].endswith(b"</message>")  # not fooled by the CDATA or the quoted '>'
    assert pieces[-1] == b"</stream:stream>"


def test_restart_expects_a_new_header() -> None:
    framer = Framer()
    assert framer.feed(b"<stream:stream version='1.0'><success/>") == [
        b"<stream:stream version='1.0'>",
        b"<success/>",
    ]
    framer.reset()
    assert framer.feed(b"<s:stream xmlns:s='x'><s:features/>") == [
        b"<s:stream xmlns:s='x'>",
        b"<s:features/>",
    ]


def test_an_endless_element_is_an_error() -> None:
    framer = Framer()
    framer.feed(b"<stream:stream><message><body>")
    with pytest.raises(FramingError):
        framer.feed(b"x" * (MAX_BUFFER + 1))


def test_reading_inside_elements() -> None:
    features, message = _pieces(STREAM, len(STREAM))[1:3]
    assert child_texts(features, b"mechanism") == ["SCRAM-SHA-1", "PLAIN"]
    assert has_child(features, b"mechanisms")
    assert not has_child(features, b"starttls")
    assert attribute(message, b"type") == "chat"  # double quotes
    assert attribute(message, b"id") == "x>y"
    assert attribute(message, b"missing") is None
    assert child_text(message, b"body") == "hello"


def test_error_conditions() -> None:
    stanza = (
        b"<message type='error' id='m1'><body>x</body><error type='cancel'>"
        b"<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>nobody &amp; nothing</text>"
        b"</error></message>"
    )
    assert error_condition(stanza) == "service-unavailable: nobody & nothing"
    stream_error = (
        b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error>"
    )
    assert error_condition(stream_error) == "system-shutdown"
