"""roost.xmpp.parser: the incremental XML stream parser, fed the way a socket feeds it."""

from __future__ import annotations

import itertools

import pytest

from roost.xmpp import ns
from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.parser import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_STANZA,
    MAX_HEADER,
    TEXT_BUFFER,
    Event,
    StreamClose,
    StreamOpen,
    XMLStreamParser,
    parse_element,
)

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0' xml:lang='en'>"
)
CLOSE = b"</stream:stream>"


def opened(
    *, max_stanza: int = DEFAULT_MAX_STANZA, max_depth: int = DEFAULT_MAX_DEPTH
) -> XMLStreamParser:
    """A parser that has read HEADER."""
    parser = XMLStreamParser(max_stanza=max_stanza, max_depth=max_depth)
    events = parser.feed(HEADER)
    assert len(events) == 1
    assert isinstance(events[0], StreamOpen)
    return parser


def stanza(parser: XMLStreamParser, data: bytes) -> Element:
    """Feed ``data`` and return the one element it completes."""
    events = parser.feed(data)
    assert len(events) == 1, events
    element = events[0]
    assert isinstance(element, Element)
    return element


def feed_all(parser: XMLStreamParser, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def error_from(parser: XMLStreamParser, *chunks: bytes) -> StreamError:
    with pytest.raises(StreamError) as info:
        feed_all(parser, *chunks)
    return info.value


def trickle(parser: XMLStreamParser, first: bytes, chunk: bytes) -> tuple[StreamError, int]:
    """Feed ``first`` then ``chunk`` over and over; return the error and how much was fed."""
    fed = 0
    for data in itertools.chain([first], itertools.repeat(chunk, 10_000)):
        fed += len(data)
        try:
            parser.feed(data)
        except StreamError as error:
            return error, fed
    pytest.fail(f"no error after {fed} bytes")


# -- the stream header ---------------------------------------------------------------------


def test_parser_reports_stream_open_with_its_attributes() -> None:
    parser = XMLStreamParser()
    assert parser.depth == 0
    assert parser.default_namespace is None

    events = parser.feed(HEADER)

    assert events == [
        StreamOpen("stream", ns.STREAM, {"to": "example.com", "version": "1.0", "xml:lang": "en"})
    ]
    opening = events[0]
    assert isinstance(opening, StreamOpen)
    assert opening.name == "stream"
    assert opening.xmlns == ns.STREAM
    # Namespace declarations are not attributes.
    assert "xmlns" not in opening.attrs
    assert parser.depth == 1


def test_default_namespace_is_the_one_the_header_declares() -> None:
    parser = XMLStreamParser()
    parser.feed(
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    assert parser.default_namespace == ns.SERVER
    assert stanza(parser, b"<message/>").xmlns == ns.SERVER


def test_default_namespace_is_none_when_the_header_declares_none() -> None:
    parser = XMLStreamParser()
    parser.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
    assert parser.default_namespace is None
    assert stanza(parser, b"<message/>").xmlns == ""


def test_header_may_follow_an_xml_declaration_a_bom_and_whitespace() -> None:
    parser = XMLStreamParser()
    events = parser.feed(b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>\n  " + HEADER)
    assert len(events) == 1
    assert isinstance(events[0], StreamOpen)


def test_header_fed_one_byte_at_a_time_opens_the_stream_once() -> None:
    parser = XMLStreamParser()
    events = feed_all(parser, *(HEADER[i : i + 1] for i in range(len(HEADER))))
    assert len(events) == 1
    assert isinstance(events[0], StreamOpen)
    assert events[0].attrs["to"] == "example.com"


def test_parser_rejects_a_root_in_the_wrong_namespace() -> None:
    parser = XMLStreamParser()
    error = error_from(parser, b"<stream:stream xmlns:stream='urn:not-streams'>")
    assert error.condition == "invalid-namespace"


def test_parser_rejects_a_root_without_a_namespace() -> None:
    assert error_from(XMLStreamParser(), b"<stream>").condition == "invalid-namespace"


def test_parser_accepts_the_root_namespace_it_was_configured_with() -> None:
    parser = XMLStreamParser(stream_xmlns=ns.FRAMING)
    events = parser.feed(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com'>")
    assert events == [StreamOpen("open", ns.FRAMING, {"to": "example.com"})]
    assert error_from(XMLStreamParser(stream_xmlns=ns.FRAMING), HEADER).condition == (
        "invalid-namespace"
    )


def test_oversized_header_trickling_in_is_a_policy_violation_before_it_is_buffered() -> None:
    parser = XMLStreamParser()
    error, fed = trickle(
        parser, b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='", b"x" * 512
    )
    assert error.condition == "policy-violation"
    assert fed <= MAX_HEADER + 512


def test_whitespace_before_the_header_counts_against_the_header_limit() -> None:
    parser = XMLStreamParser()
    parser.feed(b" " * (MAX_HEADER - 100))
    assert error_from(parser, b" " * 200).condition == "policy-violation"


def test_a_large_header_under_the_limit_is_accepted() -> None:
    parser = XMLStreamParser()
    value = b"v" * (MAX_HEADER - 200)
    events = parser.feed(
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='" + value + b"'>"
    )
    assert len(events) == 1
    assert isinstance(events[0], StreamOpen)
    assert events[0].attrs["a"] == value.decode()


# -- stanzas ---------------------------------------------------------------------------------


def test_parser_builds_a_stanza_with_nested_children_text_and_attributes() -> None:
    parser = opened()
    element = stanza(
        parser,
        b"<message to='juliet@example.com' type='chat' id='m1'>"
        b"<body>Art thou not Romeo?</body>"
        b"<x xmlns='urn:x'><y a='1'>deep</y><z/></x>"
        b"</message>",
    )

    expected = Element(
        "message",
        ns.CLIENT,
        {"to": "juliet@example.com", "type": "chat", "id": "m1"},
        [
            Element("body", ns.CLIENT, {}, ["Art thou not Romeo?"]),
            Element(
                "x",
                "urn:x",
                {},
                [Element("y", "urn:x", {"a": "1"}, ["deep"]), Element("z", "urn:x")],
            ),
        ],
    )
    assert element == expected
    assert parser.depth == 1


def test_parser_keeps_mixed_content_in_order() -> None:
    element = stanza(opened(), b"<p>one<b>two</b>three<i/>four</p>")
    assert element.children == [
        "one",
        Element("b", ns.CLIENT, {}, ["two"]),
        "three",
        Element("i", ns.CLIENT),
        "four",
    ]


def test_parser_expands_predefined_entities_and_character_references() -> None:
    element = stanza(
        opened(),
        b"<message a='&lt;&amp;&gt;&apos;&quot;&#x1F600;'>"
        b"<body>&amp;&lt;&gt;&quot;&apos;&#x1F600;&#233;&#10;</body></message>",
    )
    assert element["a"] == "<&>'\"\U0001f600"
    assert element.find_text("body") == "&<>\"'\U0001f600\u00e9\n"


def test_parser_rejects_undefined_entities() -> None:
    assert error_from(opened(), b"<body>&nbsp;</body>").condition == "not-well-formed"


def test_parser_reads_cdata_sections_as_text_merged_with_their_neighbours() -> None:
    element = stanza(opened(), b"<body>a<![CDATA[<b>&amp;</b>]]>c</body>")
    assert element.children == ["a<b>&amp;</b>c"]


def test_parser_merges_text_expat_delivers_in_pieces_into_one_child() -> None:
    text = b"x" * (5 * TEXT_BUFFER + 7)
    parser = opened()
    assert parser.feed(b"<body>" + text[:1000]) == []
    element = stanza(parser, text[1000:] + b"</body>")
    assert element.children == [text.decode()]


def test_parser_resolves_prefixed_elements_and_namespaced_attributes() -> None:
    element = stanza(
        opened(),
        b"<message xmlns:foo='urn:foo' foo:attr='v' plain='p'>"
        b"<foo:x foo:y='1'><foo:z/></foo:x></message>",
    )
    assert element.attrs == {"{urn:foo}attr": "v", "plain": "p"}
    child = element.first_child()
    assert child is not None
    assert (child.name, child.xmlns, child.attrs) == ("x", "urn:foo", {"{urn:foo}y": "1"})
    assert child.children == [Element("z", "urn:foo")]


def test_parser_resolves_a_prefix_declared_only_on_the_stream_header() -> None:
    parser = XMLStreamParser()
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b" xmlns:foo='urn:foo'>"
    )
    element = stanza(parser, b"<foo:x foo:a='1'/>")
    assert (element.name, element.xmlns, element.attrs) == ("x", "urn:foo", {"{urn:foo}a": "1"})


def test_parser_keys_xml_lang_as_xml_colon_lang() -> None:
    element = stanza(opened(), b"<message xml:lang='de'><body xml:lang='fr'>salut</body></message>")
    assert element.attrs == {"xml:lang": "de"}
    body = element.find("body")
    assert body is not None
    assert body.attrs == {"xml:lang": "fr"}


def test_parser_normalises_attribute_values_like_any_xml_parser() -> None:
    element = stanza(opened(), b"<m a='x\ny\tz' b='x&#10;y&#9;z'/>")
    assert element["a"] == "x y z"
    assert element["b"] == "x\ny\tz"


def test_parser_returns_every_stanza_completed_by_one_read() -> None:
    events = opened().feed(b"<a/><b>1</b>\n<c/>")
    assert [e.name for e in events if isinstance(e, Element)] == ["a", "b", "c"]
    assert len(events) == 3


def test_stanza_is_returned_only_once_its_end_tag_is_complete() -> None:
    parser = opened()
    assert parser.feed(b"<message><body>hi</body></messa") == []
    assert parser.depth == 2
    assert parser.feed(b"ge") == []
    element = stanza(parser, b">")
    assert element.find_text("body") == "hi"


def test_whitespace_keepalives_between_stanzas_are_ignored() -> None:
    parser = opened()
    assert parser.feed(b" ") == []
    assert parser.feed(b"\n\t\r\n ") == []
    events = parser.feed(b"  <message/>\n \t<presence/> ")
    assert [e.name for e in events if isinstance(e, Element)] == ["message", "presence"]
    assert len(events) == 2


def test_text_between_stanzas_is_not_well_formed() -> None:
    assert error_from(opened(), b"<a/>hello<b/>").condition == "not-well-formed"


def test_text_alone_between_stanzas_is_not_well_formed() -> None:
    assert error_from(opened(), b"x").condition == "not-well-formed"


def test_non_xml_whitespace_between_stanzas_is_not_a_keepalive() -> None:
    # U+00A0 is whitespace to str.isspace() but not to XML (S is space, tab, CR, LF only).
    assert error_from(opened(), "\u00a0".encode()).condition == "not-well-formed"


@pytest.mark.parametrize("character", ["é", "€", "中", "\U0001f600"])
def test_multibyte_characters_split_at_every_byte_parse_identically(character: str) -> None:
    data = f"<message a='{character}'><body>x{character}y{character}</body></message>".encode()
    expected = stanza(opened(), data)
    assert expected["a"] == character
    for split in range(1, len(data)):
        parser = opened()
        events = feed_all(parser, data[:split], data[split:])
        assert events == [expected], split


def test_stream_fed_one_byte_at_a_time_gives_the_same_events_as_one_read() -> None:
    data = HEADER + "<message><body>h\u00e9llo \U0001f600</body></message> <iq/>".encode() + CLOSE
    whole = XMLStreamParser().feed(data)
    parser = XMLStreamParser()
    assert feed_all(parser, *(data[i : i + 1] for i in range(len(data)))) == whole
    assert len(whole) == 4


# -- malformed and restricted XML --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<a></b>", id="mismatched-tags"),
        pytest.param(b"<a b=c/>", id="unquoted-attribute"),
        pytest.param(b"<a b='1' b='2'/>", id="duplicate-attribute"),
        pytest.param(b"<foo:a/>", id="unbound-prefix"),
        pytest.param(b"<a foo:b='1'/>", id="unbound-attribute-prefix"),
        pytest.param(b"<1a/>", id="bad-name"),
        pytest.param(b"<a>\xff</a>", id="invalid-utf8"),
        pytest.param(b"<a>\xc0\x80</a>", id="overlong-utf8"),
        pytest.param(b"<a>\xed\xa0\x80</a>", id="encoded-surrogate"),
        pytest.param(b"<a>\x01</a>", id="control-character"),
        pytest.param(b"<a>&#1;</a>", id="control-character-reference"),
        pytest.param("<a>\ufffe</a>".encode(), id="noncharacter-fffe"),
        pytest.param(b"<a>&amp</a>", id="unterminated-reference"),
        pytest.param(b"<a><</a>", id="stray-less-than"),
        pytest.param(b"</a>", id="end-tag-without-start"),
        pytest.param(b"<?xml version='1.0'?>", id="late-xml-declaration"),
        pytest.param(b"<!DOCTYPE a>", id="doctype-inside-the-root"),
    ],
)
def test_malformed_xml_is_not_well_formed(data: bytes) -> None:
    assert error_from(opened(), data).condition == "not-well-formed"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<!DOCTYPE stream:stream>" + HEADER, id="doctype"),
        pytest.param(b"<!DOCTYPE s [<!ENTITY e 'boom'>]>" + HEADER, id="entity-declaration"),
        pytest.param(
            b"<!DOCTYPE s SYSTEM 'http://example.com/evil.dtd'>" + HEADER, id="external-dtd"
        ),
        pytest.param(b"<?pi data?>" + HEADER, id="processing-instruction-in-prolog"),
        pytest.param(b"<!-- hello -->" + HEADER, id="comment-in-prolog"),
        pytest.param(HEADER + b"<?pi data?>", id="processing-instruction-between-stanzas"),
        pytest.param(HEADER + b"<!-- hello -->", id="comment-between-stanzas"),
        pytest.param(HEADER + b"<a><?pi data?></a>", id="processing-instruction-in-stanza"),
        pytest.param(HEADER + b"<a><b><!-- hello --></b></a>", id="comment-in-stanza"),
    ],
)
def test_parser_rejects_dtds_pis_and_comments_with_restricted_xml(data: bytes) -> None:
    assert error_from(XMLStreamParser(), data).condition == "restricted-xml"


def test_parser_rejects_a_utf16_stream_as_unsupported_encoding() -> None:
    data = b"\xff\xfe" + HEADER.decode().encode("utf-16-le")
    assert error_from(XMLStreamParser(), data).condition == "unsupported-encoding"


def test_parser_reads_utf8_whatever_the_xml_declaration_says() -> None:
    parser = XMLStreamParser()
    parser.feed(b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER)
    assert stanza(parser, "<body>\u00e9</body>".encode()).text == "\u00e9"
    parser = XMLStreamParser()
    parser.feed(b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER)
    assert error_from(parser, b"<body>\xe9</body>").condition == "not-well-formed"


def test_feeding_after_an_error_raises_again() -> None:
    parser = opened()
    error_from(parser, b"<a></b>")
    second = error_from(parser, b"<message/>")
    assert second.condition == "not-well-formed"
    assert parser.hibernate() is False


def test_feeding_after_close_raises() -> None:
    parser = opened()
    parser.close()
    assert error_from(parser, b"<message/>").condition == "not-well-formed"


# -- limits ------------------------------------------------------------------------------------


def test_stanza_over_max_stanza_in_one_read_is_a_policy_violation() -> None:
    parser = opened(max_stanza=1000)
    data = b"<message><body>" + b"x" * 1000 + b"</body></message>"
    assert error_from(parser, data).condition == "policy-violation"


def test_stanza_under_max_stanza_is_accepted_and_the_limit_is_per_stanza() -> None:
    parser = opened(max_stanza=1000)
    data = b"<message><body>" + b"x" * 800 + b"</body></message>"
    for _ in range(20):
        assert stanza(parser, data).find_text("body") == "x" * 800
    events = parser.feed(data * 5)
    assert len(events) == 5


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b"<message><body>", id="text"),
        pytest.param(b"<message><x><y><z>", id="text-deep"),
        pytest.param(b"<message to='", id="start-tag-of-the-stanza"),
        pytest.param(b"<message><body a='", id="start-tag-of-a-child"),
        pytest.param(b"<message></message><iq/><message to='", id="start-tag-after-stanzas"),
        pytest.param(b"<!--", id="comment-between-stanzas"),
        pytest.param(b"<message><![CDATA[", id="cdata-section"),
    ],
)
def test_stanza_trickling_in_without_end_is_stopped_near_max_stanza(prefix: bytes) -> None:
    parser = opened(max_stanza=1000)
    error, fed = trickle(parser, prefix, b"x" * 100)
    assert error.condition == "policy-violation"
    # Bounded memory: the parser gave up at most one read after the limit was crossed.
    assert fed <= 1000 + 100 + len(prefix)


def test_stanza_trickling_in_after_waking_from_hibernation_is_stopped() -> None:
    parser = opened(max_stanza=1000)
    parser.feed(b"<message/>" * 50)
    assert parser.hibernate()
    error, fed = trickle(parser, b"<message to='", b"x" * 100)
    assert error.condition == "policy-violation"
    assert fed <= 1200


def test_whitespace_keepalives_do_not_count_against_the_next_stanza() -> None:
    parser = opened(max_stanza=1000)
    for _ in range(50):
        assert parser.feed(b" " * 100) == []
    assert parser.feed(b"<message to='juliet@example.com' type='chat'><bo") == []
    element = stanza(parser, b"dy>" + b"y" * 800 + b"</body></message>")
    assert element.find_text("body") == "y" * 800


def test_elements_nested_up_to_max_depth_are_accepted() -> None:
    # The stream root counts as depth 1.
    parser = opened(max_depth=4)
    element = stanza(parser, b"<a><b><c/></b></a>")
    assert element.find("b") is not None


def test_elements_nested_deeper_than_max_depth_are_a_policy_violation() -> None:
    parser = opened(max_depth=4)
    assert error_from(parser, b"<a><b><c><d/></c></b></a>").condition == "policy-violation"


def test_default_max_depth_stops_a_deeply_nested_stanza() -> None:
    parser = opened()
    assert error_from(parser, b"<a>" * 1000).condition == "policy-violation"


# -- restart and end of stream ------------------------------------------------------------------


def test_reset_starts_a_new_document_with_a_new_header() -> None:
    parser = opened()
    parser.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><mess")
    parser.reset()
    assert parser.depth == 0
    assert parser.default_namespace is None
    events = parser.feed(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server'"
        b" xmlns:stream='http://etherx.jabber.org/streams'><message/>"
    )
    assert len(events) == 2
    assert isinstance(events[0], StreamOpen)
    assert events[1] == Element("message", ns.SERVER)
    assert parser.default_namespace == ns.SERVER


def test_reset_after_an_error_makes_the_parser_usable_again() -> None:
    parser = opened()
    error_from(parser, b"<a></b>")
    parser.reset()
    assert len(parser.feed(HEADER + b"<a/>")) == 2


def test_stream_close_is_reported_after_the_last_stanza() -> None:
    parser = opened()
    events = parser.feed(b"<message/></stream:stream>")
    assert events == [Element("message"), StreamClose()]
    assert parser.depth == 0
    assert parser.hibernate() is False


def test_stream_close_can_arrive_in_pieces() -> None:
    parser = opened()
    assert parser.feed(b"</stream:str") == []
    assert parser.feed(b"eam>") == [StreamClose()]


def test_whitespace_after_the_stream_close_is_harmless() -> None:
    parser = opened()
    parser.feed(CLOSE)
    assert parser.feed(b" \n") == []


def test_a_stanza_after_the_stream_close_is_not_well_formed() -> None:
    parser = opened()
    parser.feed(CLOSE)
    assert error_from(parser, b"<message/>").condition == "not-well-formed"


def test_a_second_header_after_the_stream_close_is_not_well_formed() -> None:
    parser = opened()
    parser.feed(CLOSE)
    assert error_from(parser, HEADER).condition == "not-well-formed"


def test_closing_the_root_with_the_wrong_name_is_not_well_formed() -> None:
    assert error_from(opened(), b"</stream>").condition == "not-well-formed"


def test_stream_events_compare_by_value() -> None:
    assert StreamOpen("stream", ns.STREAM, {"to": "a"}) == StreamOpen(
        "stream", ns.STREAM, {"to": "a"}
    )
    assert StreamOpen("stream", ns.STREAM, {"to": "a"}) != StreamOpen("stream", ns.STREAM, {})
    assert StreamClose() == StreamClose()
    assert StreamClose() != StreamOpen("stream", ns.STREAM, {})
    assert "to" in repr(StreamOpen("stream", ns.STREAM, {"to": "a"}))
    assert repr(StreamClose()) == "StreamClose()"


# -- hibernation ---------------------------------------------------------------------------------


def test_hibernate_refuses_before_the_header_is_complete() -> None:
    parser = XMLStreamParser()
    assert parser.hibernate() is False
    parser.feed(HEADER[:20])
    assert parser.hibernate() is False
    assert parser.hibernating is False


def test_hibernate_succeeds_right_after_the_header() -> None:
    parser = opened()
    assert parser.hibernate() is True
    assert parser.hibernating is True
    assert parser.hibernate() is True  # idempotent


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<message><body>hi</body></message>", id="after-a-stanza"),
        pytest.param(b"<message/>", id="after-an-empty-stanza"),
        pytest.param(b"<message/><iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>", id="two"),
        pytest.param(b"<message></message >", id="end-tag-with-space"),
        pytest.param(b"<message/> \n\t", id="after-whitespace"),
        pytest.param(b"<message a='&gt;'/>", id="escaped-gt-in-attribute"),
    ],
)
def test_hibernate_succeeds_on_a_stanza_boundary(data: bytes) -> None:
    parser = opened()
    assert parser.feed(data) != []
    assert parser.hibernate() is True


def test_hibernate_succeeds_after_whitespace_fed_on_its_own() -> None:
    parser = opened()
    parser.feed(b"<message/>")
    parser.feed(b"  ")
    parser.feed(b"\n")
    assert parser.hibernate() is True


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<message><body>hi", id="mid-stanza"),
        pytest.param(b"<message><body>hi</body>", id="between-children"),
        pytest.param(b"<mess", id="mid-start-tag"),
        pytest.param(b"<message to='a>", id="gt-inside-an-attribute-value"),
        pytest.param(b"<message to='a>'", id="after-an-attribute-value-ending-in-gt"),
        pytest.param(b"<message/><iq a='>'", id="gt-in-attribute-after-a-stanza"),
        pytest.param(b"<message/><iq a='>   ", id="gt-then-whitespace-in-attribute"),
        pytest.param(b"<message></message", id="mid-end-tag"),
        pytest.param(b"<message/><", id="after-a-less-than"),
        pytest.param(b"<message/> <!-", id="mid-comment-opening"),
        pytest.param(b"</stream:stre", id="mid-stream-close"),
    ],
)
def test_hibernate_refuses_mid_stanza_and_mid_tag(data: bytes) -> None:
    parser = opened()
    parser.feed(data)
    assert parser.hibernate() is False
    assert parser.hibernating is False


def test_hibernate_refuses_when_a_partial_tag_is_followed_by_whitespace_only_reads() -> None:
    parser = opened()
    parser.feed(b"<message to='x>'")
    parser.feed(b"  ")
    assert parser.hibernate() is False


def test_hibernate_refuses_when_the_header_read_ends_in_a_partial_tag() -> None:
    parser = XMLStreamParser()
    parser.feed(HEADER + b"<message a='>'")
    assert parser.hibernate() is False


def test_hibernate_refuses_after_the_stream_is_closed() -> None:
    parser = opened()
    parser.close()
    assert parser.hibernate() is False


def test_hibernated_parser_parses_following_stanzas_identically() -> None:
    chunks = [
        b"<message to='romeo@example.net' xml:lang='en'><body>h\xc3\xa9</body></message>",
        b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
        b" <presence><show>away</show></presence>",
        CLOSE,
    ]
    awake = opened()
    expected = feed_all(awake, *chunks)

    sleeper = opened()
    events: list[Event] = []
    for chunk in chunks:
        assert sleeper.hibernate() is True
        events += sleeper.feed(chunk)
    assert events == expected
    assert events[-1] == StreamClose()


def test_hibernated_parser_resolves_prefixes_declared_only_on_the_header() -> None:
    header = (
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b" xmlns:foo='urn:foo' xmlns:bar='urn:bar&amp;baz'>"
    )
    parser = XMLStreamParser()
    parser.feed(header)
    assert parser.hibernate() is True
    element = stanza(parser, b"<foo:x foo:a='1'><bar:y/></foo:x>")
    assert element == Element("x", "urn:foo", {"{urn:foo}a": "1"}, [Element("y", "urn:bar&baz")])
    assert parser.hibernate() is True
    assert stanza(parser, b"<message/>") == Element("message", ns.CLIENT)
    assert parser.default_namespace == ns.CLIENT


def test_hibernated_parser_handles_namespace_uris_with_quotes_and_ampersands() -> None:
    header = (
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b' xmlns:q="urn:it\'s&amp;&lt;x&gt;">'
    )
    parser = XMLStreamParser()
    parser.feed(header)
    assert parser.hibernate() is True
    assert stanza(parser, b"<q:x/>").xmlns == "urn:it's&<x>"


def test_hibernated_parser_keeps_an_undeclared_default_namespace_empty() -> None:
    parser = XMLStreamParser()
    parser.feed(b"<stream:stream xmlns='' xmlns:stream='http://etherx.jabber.org/streams'>")
    assert parser.hibernate() is True
    assert stanza(parser, b"<x/>").xmlns == ""


def test_hibernated_parser_accepts_the_stream_close_after_waking() -> None:
    parser = opened()
    parser.feed(b"<message/>")
    assert parser.hibernate() is True
    assert parser.feed(b" ") == []
    assert parser.hibernating is False  # the read woke it
    assert parser.hibernate() is True
    assert parser.feed(CLOSE) == [StreamClose()]
    assert parser.depth == 0


def test_hibernated_parser_closes_a_root_whose_prefix_is_declared_twice() -> None:
    # The stream namespace is bound to two prefixes; the root uses the second.
    parser = XMLStreamParser()
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:alias='http://etherx.jabber.org/streams'"
        b" xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    assert parser.hibernate() is True
    assert parser.feed(b"<message/>" + CLOSE) == [Element("message"), StreamClose()]


def test_hibernated_parser_closes_a_root_with_an_unusual_prefix() -> None:
    parser = XMLStreamParser()
    parser.feed(b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'>")
    assert parser.hibernate() is True
    assert parser.feed(b"</s:stream>") == [StreamClose()]


def test_hibernated_parser_still_rejects_a_mismatched_close() -> None:
    parser = opened()
    assert parser.hibernate() is True
    assert error_from(parser, b"</other:stream>").condition == "not-well-formed"


def test_hibernated_parser_still_rejects_text_and_comments() -> None:
    parser = opened()
    assert parser.hibernate()
    assert error_from(parser, b"text").condition == "not-well-formed"
    parser = opened()
    assert parser.hibernate()
    assert error_from(parser, b"<!-- c -->").condition == "restricted-xml"


def test_hibernated_parser_keeps_max_stanza() -> None:
    parser = opened(max_stanza=100)
    assert parser.hibernate()
    assert error_from(parser, b"<m>" + b"x" * 200 + b"</m>").condition == "policy-violation"


def test_hibernated_parser_keeps_max_depth() -> None:
    parser = opened(max_depth=3)
    assert parser.hibernate()
    assert stanza(parser, b"<a><b/></a>").name == "a"
    assert parser.hibernate()
    assert error_from(parser, b"<a><b><c/></b></a>").condition == "policy-violation"


def test_hibernate_and_wake_many_times_with_stanzas_split_across_reads() -> None:
    parser = opened()
    names: list[str] = []
    for i in range(20):
        assert parser.hibernate() is True
        assert parser.feed(b"<message id='") == []
        assert parser.hibernate() is False
        events = parser.feed(f"{i}'><body>{i}</body></message>".encode())
        names += [e["id"] for e in events if isinstance(e, Element)]
    assert names == [str(i) for i in range(20)]


def test_hibernating_at_every_split_point_never_changes_the_events() -> None:
    header = (
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b" xmlns:foo='urn:foo' to='example.com'>"
    )
    data = (
        header
        + b" <message to='a@b'><body>x \xe2\x82\xac</body></message>\n"
        + b"<foo:x foo:a='&apos;'/><iq a='&gt;'><q xmlns='urn:q'/></iq> "
        + CLOSE
    )
    expected = XMLStreamParser().feed(data)
    hibernated_somewhere = 0
    for split in range(len(data) + 1):
        parser = XMLStreamParser()
        events = list(parser.feed(data[:split]))
        if parser.hibernate():
            hibernated_somewhere += 1
        events += parser.feed(data[split:])
        assert events == expected, split
    assert hibernated_somewhere >= 4


# -- parse_element --------------------------------------------------------------------------------


def test_parse_element_reads_one_element_in_the_client_namespace() -> None:
    element = parse_element("<message to='a@b'><body>hi &amp; bye</body></message>")
    assert element == Element(
        "message", ns.CLIENT, {"to": "a@b"}, [Element("body", ns.CLIENT, {}, ["hi & bye"])]
    )


def test_parse_element_accepts_bytes_a_namespace_and_surrounding_whitespace() -> None:
    element = parse_element(b"  <item jid='a@b'/>\n", xmlns=ns.ROSTER)
    assert element == Element("item", ns.ROSTER, {"jid": "a@b"})


def test_parse_element_round_trips_serialized_elements() -> None:
    original = Element(
        "x", "urn:x", {"{urn:y}a": "<'\">", "xml:lang": "en"}, ["t\r\n", Element("y")]
    )
    assert parse_element(original.to_bytes()) == original


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        pytest.param(b"", "not-well-formed", id="empty"),
        pytest.param(b"   ", "not-well-formed", id="whitespace"),
        pytest.param(b"<a/><b/>", "not-well-formed", id="two-elements"),
        pytest.param(b"text", "not-well-formed", id="text"),
        pytest.param(b"<a>", "not-well-formed", id="unclosed"),
        pytest.param(b"<a></b>", "not-well-formed", id="mismatched"),
        pytest.param(b"</stream:stream>", "not-well-formed", id="stream-close"),
        pytest.param(b"<a/></stream:stream><b/>", "not-well-formed", id="escape-the-stream"),
        pytest.param(b"<!-- c --><a/>", "restricted-xml", id="comment"),
        pytest.param(b"<?pi?><a/>", "restricted-xml", id="processing-instruction"),
    ],
)
def test_parse_element_rejects_anything_but_one_element(data: bytes, condition: str) -> None:
    with pytest.raises(StreamError) as info:
        parse_element(data)
    assert info.value.condition == condition


def test_feed_returns_a_new_list_each_time_even_when_nothing_completed() -> None:
    parser = opened()
    nothing = parser.feed(b"<message>")
    assert nothing == []
    events = parser.feed(b"</message>")
    assert events == [Element("message")]
    assert nothing == []  # the parser did not append to a list it had handed out
