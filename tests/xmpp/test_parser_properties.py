"""Properties of the stream parser and the serializer, checked with generated input.

* serializing any element and parsing it back inside a stream gives an equal element;
* how a stream is cut into reads never changes the events;
* no input makes the parser raise anything but StreamError;
* hibernating wherever the parser allows it never changes the events, and it only allows it on
  a stanza boundary.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.xmpp.element import Element
from roost.xmpp.errors import StreamError
from roost.xmpp.parser import Event, StreamClose, StreamOpen, XMLStreamParser, parse_element

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0'>"
)
CLOSE = b"</stream:stream>"

# -- generated elements ----------------------------------------------------------------------

# Letters valid as XML 1.0 NameStartChar in every edition (ASCII, Latin-1, Cyrillic, Greek, CJK).
_NAME_START = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_\u00e9\u00df\u00c6\u0436\u03c0\u4e2d"
)
_NAME_REST = _NAME_START + "0123456789-.\u00b7"

names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_NAME_START),
    st.text(alphabet=_NAME_REST, max_size=6),
).filter(lambda name: not name.lower().startswith("xml"))


# Every character XML 1.0 allows (§2.2): no C0 controls but tab, LF and CR; no surrogates
# (excluded by the codec); no U+FFFE/U+FFFF. Plus the characters serialization must escape.
_xml_chars = st.one_of(
    st.sampled_from("<>&'\"\n\t\r ]"),
    st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="\ufffe\uffff"),
)
texts = st.text(alphabet=_xml_chars, max_size=12)

namespaces = st.sampled_from(
    ["jabber:client", "urn:a", "urn:b:\u00e9", "http://example.com/?a=1&b='2'<>\"", ""]
)
_attr_namespaces = st.sampled_from(["urn:attr", "urn:attr:&'\"<>", "urn:\u4e2d"])
attr_keys = st.one_of(
    names,
    st.just("xml:lang"),
    st.builds(lambda uri, name: "{" + uri + "}" + name, _attr_namespaces, names),
)
attrs = st.dictionaries(attr_keys, texts, max_size=3)


def _element(children: st.SearchStrategy[Element]) -> st.SearchStrategy[Element]:
    return st.builds(
        Element, names, namespaces, attrs, st.lists(st.one_of(texts, children), max_size=4)
    )


elements = st.recursive(st.builds(Element, names, namespaces, attrs), _element, max_leaves=10)


@given(element=elements)
@settings(max_examples=200, deadline=None)
def test_any_serialized_element_parses_back_equal(element: Element) -> None:
    parser = XMLStreamParser()
    events = parser.feed(HEADER + element.to_bytes() + CLOSE)
    assert events[1:] == [element, StreamClose()]
    assert parse_element(element.to_bytes()) == element


@given(element=elements)
@settings(max_examples=50, deadline=None)
def test_serialization_of_a_parsed_element_is_a_fixed_point(element: Element) -> None:
    once = parse_element(element.to_bytes())
    twice = parse_element(once.to_bytes())
    assert twice.to_bytes() == once.to_bytes()
    assert twice.children == once.children  # text merged the same way both times


# -- generated streams ---------------------------------------------------------------------------

# (header, close); the last two declare the prefixes _PREFIXED uses.
_HEADERS = [
    (HEADER, CLOSE),
    (b"<?xml version='1.0'?>\n" + HEADER, CLOSE),
    (
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b" xmlns:foo='urn:foo' xmlns:bar='urn:bar&amp;&apos;' xml:lang='en'>",
        CLOSE,
    ),
    (
        b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'"
        b" xmlns:foo='urn:foo' xmlns:bar='urn:bar2'>",
        b"</s:stream>",
    ),
]
# Stanzas that use prefixes only some headers declare (paired with those headers below).
_PREFIXED = [
    b"<foo:x foo:a='1'/>",
    b"<message><foo:y bar:b='&lt;'>t</foo:y><bar:z/></message>",
    b"<bar:q xml:lang='de'>\xc3\xa9<![CDATA[<>]]></bar:q>",
]
_SPACE = st.sampled_from([b"", b" ", b"\n", b"\r\n\t ", b"   "])


@dataclass
class Stream:
    data: bytes
    boundaries: frozenset[int]  # offsets between stanzas, where hibernating is allowed
    stanza_ends: tuple[int, ...]  # the header's end and every stanza's end


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    header_index = draw(st.integers(0, len(_HEADERS) - 1))
    data, close = _HEADERS[header_index]
    boundaries = {len(data)}
    stanza_ends = [len(data)]
    for _ in range(draw(st.integers(0, 4))):
        space = draw(_SPACE)
        boundaries.update(range(len(data), len(data) + len(space) + 1))
        data += space
        if header_index >= 2 and draw(st.booleans()):
            data += draw(st.sampled_from(_PREFIXED))
        else:
            data += draw(elements).to_bytes()
        boundaries.add(len(data))
        stanza_ends.append(len(data))
    space = draw(_SPACE)
    boundaries.update(range(len(data), len(data) + len(space) + 1))
    data += space
    if draw(st.booleans()):
        data += close
    return Stream(data, frozenset(boundaries), tuple(stanza_ends))


@st.composite
def cuts(draw: st.DrawFn, size: int, favoured: frozenset[int] = frozenset()) -> list[int]:
    """Sorted offsets to cut a stream of ``size`` bytes at, often at a ``favoured`` one."""
    point = st.integers(0, size)
    if favoured:
        point = st.one_of(point, st.sampled_from(sorted(favoured)))
    return sorted(set(draw(st.lists(point, max_size=12))))


def _chunks(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(data=st.data(), stream=streams())
@settings(max_examples=150, deadline=None)
def test_any_split_of_a_stream_gives_the_same_events_as_one_read(
    data: st.DataObject, stream: Stream
) -> None:
    expected = XMLStreamParser().feed(stream.data)
    assert isinstance(expected[0], StreamOpen)
    points = data.draw(cuts(len(stream.data)))
    parser = XMLStreamParser()
    events: list[Event] = []
    for chunk in _chunks(stream.data, points):
        events += parser.feed(chunk)
    assert events == expected


@given(data=st.data(), stream=streams())
@settings(max_examples=150, deadline=None)
def test_hibernating_wherever_allowed_never_changes_the_events(
    data: st.DataObject, stream: Stream
) -> None:
    expected = XMLStreamParser().feed(stream.data)
    points = data.draw(cuts(len(stream.data), stream.boundaries))
    parser = XMLStreamParser()
    events: list[Event] = []
    offset = 0
    for chunk in _chunks(stream.data, points):
        events += parser.feed(chunk)
        offset += len(chunk)
        if parser.hibernate():
            assert offset in stream.boundaries, (offset, stream.data[:offset])
            assert parser.hibernating
    assert events == expected


@given(stream=streams())
@settings(max_examples=100, deadline=None)
def test_reads_that_end_on_stanza_ends_always_allow_hibernation(stream: Stream) -> None:
    expected = XMLStreamParser().feed(stream.data)
    parser = XMLStreamParser()
    events: list[Event] = []
    for chunk in _chunks(stream.data, list(stream.stanza_ends)):
        events += parser.feed(chunk)
        if events and events[-1] != StreamClose():
            assert parser.hibernate() is True
    assert events == expected


# -- arbitrary input -----------------------------------------------------------------------------

_TOKENS = [
    b"<",
    b">",
    b"/>",
    b"</",
    b"a",
    b"b:c",
    b"='",
    b"'",
    b'"',
    b" ",
    b"\n",
    b"&amp;",
    b"&",
    b"&#",
    b"x;",
    b"&#x1F600;",
    b"<!--",
    b"-->",
    b"<![CDATA[",
    b"]]>",
    b"<?",
    b"?>",
    b"<!DOCTYPE",
    b"<!ENTITY",
    b"xmlns='",
    b"xmlns:b='",
    b"urn:x",
    b"\xc3",
    b"\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xff",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"stream:stream",
    HEADER,
    CLOSE,
    b"<message>",
    b"</message>",
    b"<a/>",
    b"<?xml version='1.0' encoding='UTF-16'?>",
]
junk = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join),
)


def _feed_expecting_only_stream_errors(
    parser: XMLStreamParser, chunks: list[bytes], hibernate: list[bool]
) -> None:
    try:
        for chunk, sleep in zip(chunks, hibernate, strict=True):
            for event in parser.feed(chunk):
                assert isinstance(event, StreamOpen | Element | StreamClose)
            if sleep:
                parser.hibernate()
    except StreamError:
        # Once broken, the parser stays broken, and says so with a StreamError too.
        try:
            parser.feed(b"<a/>")
        except StreamError:
            return
        raise AssertionError("a parser fed after an error did not raise") from None


@given(
    data=st.data(),
    prefix=st.sampled_from([b"", HEADER, HEADER + b"<message>", _HEADERS[2][0], _HEADERS[3][0]]),
    body=junk,
    max_stanza=st.sampled_from([64, 256 * 1024]),
    max_depth=st.sampled_from([3, 48]),
)
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_give_events_or_a_stream_error_and_nothing_else(
    data: st.DataObject, prefix: bytes, body: bytes, max_stanza: int, max_depth: int
) -> None:
    stream = prefix + body
    chunks = _chunks(stream, data.draw(cuts(len(stream), frozenset({len(prefix)}))))
    hibernate = data.draw(st.lists(st.booleans(), min_size=len(chunks), max_size=len(chunks)))
    parser = XMLStreamParser(max_stanza=max_stanza, max_depth=max_depth)
    _feed_expecting_only_stream_errors(parser, chunks, hibernate)


@given(body=junk)
@settings(max_examples=200, deadline=None)
def test_parse_element_on_arbitrary_bytes_returns_an_element_or_raises_stream_error(
    body: bytes,
) -> None:
    try:
        element = parse_element(body)
    except StreamError:
        return
    assert isinstance(element, Element)
