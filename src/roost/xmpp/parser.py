"""Incremental XML stream parser: bytes in, stream events out (Sans-I/O).

An XMPP stream is one long XML document whose root, ``<stream:stream>``, opens when a client
connects and closes when it leaves; each child of the root is a stanza (RFC 6120 §4). The parser
is fed whatever bytes the transport delivered (a read may end in the middle of a UTF-8 sequence,
a tag or a stanza) and returns the events completed by those bytes:

* :class:`StreamOpen` once the root's start tag is read, with its attributes;
* an :class:`~roost.xmpp.element.Element` for every complete top-level child (a stanza, or a
  stream-level element such as ``<starttls/>`` or ``<auth/>``);
* :class:`StreamClose` when ``</stream:stream>`` arrives.

Problems are raised as :class:`~roost.xmpp.errors.StreamError` carrying the condition the
server must answer with: ``not-well-formed`` for broken XML, ``restricted-xml`` for the
constructs RFC 6120 §11.1 forbids (DTDs, entity declarations, processing instructions and
comments), ``policy-violation`` for stanzas over the size limit or nested too deep,
``invalid-namespace`` for a root that is not a stream, and ``unsupported-encoding`` for a
stream that is not UTF-8. After an error the parser is unusable.

Expat (the C parser in the standard library) does the tokenizing, namespace resolution and
UTF-8 decoding, including characters split across reads. Only the tree building happens in
Python, in three small callbacks. Entity expansion cannot be abused because a DOCTYPE is
refused before any declaration in it is read.

:meth:`XMLStreamParser.reset` starts a new document, as a stream restart after STARTTLS and
SASL requires (RFC 6120 §5.4.3.3, §6.4.6).

Hibernation. An expat parser holds about 10 KiB (its input buffer, name pools and tables)
even when the stream is idle, which would dominate the memory of an idle session.
:meth:`XMLStreamParser.hibernate` releases it when the stream sits exactly on a stanza
boundary; the next :meth:`~XMLStreamParser.feed` creates a fresh one and primes it with a copy of
the stream header's namespace declarations, so the client notices nothing. Deciding that the
stream is on a boundary is conservative: when in doubt (say, a ``>`` inside an attribute value
at the end of a read) the parser simply stays awake.
"""

from __future__ import annotations

import pyexpat
import re
from typing import Final

from roost.xmpp import ns
from roost.xmpp.element import Element, escape_attr
from roost.xmpp.errors import StreamError

__all__ = ["Event", "StreamClose", "StreamOpen", "XMLStreamParser"]

DEFAULT_MAX_STANZA: Final = 256 * 1024
DEFAULT_MAX_DEPTH: Final = 48
# The stream header and anything before it (XML declaration, whitespace) must fit in this.
MAX_HEADER: Final = 8 * 1024
# Character data is delivered to Python in pieces of at most this size; smaller than pyexpat's
# default (8 KiB) because every open stream holds one such buffer.
TEXT_BUFFER: Final = 2048

_SEP: Final = "\x1f"  # namespace separator: cannot appear in a namespace URI or a name
_XML_NS_PREFIX: Final = ns.XML + _SEP
_XML_SPACE: Final = " \t\r\n"  # XML 1.0 §2.3 S; str.isspace() also accepts U+00A0 and more
_QNAME_END: Final = re.compile(rb"[\s/>]")


class StreamOpen:
    """The stream's root element was opened."""

    __slots__ = ("attrs", "name", "xmlns")

    def __init__(self, name: str, xmlns: str, attrs: dict[str, str]) -> None:
        self.name = name
        self.xmlns = xmlns
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"StreamOpen({{{self.xmlns}}}{self.name}, {self.attrs!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamOpen) and (self.name, self.xmlns, self.attrs) == (
            other.name,
            other.xmlns,
            other.attrs,
        )

    __hash__ = None  # type: ignore[assignment]


class StreamClose:
    """The stream's root element was closed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "StreamClose()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamClose)

    __hash__ = None  # type: ignore[assignment]


STREAM_CLOSE: Final = StreamClose()

Event = StreamOpen | Element | StreamClose

# Names as expat reports them ("uri<SEP>local" or "local") split once and shared by every
# parser. Bounded, so that a client inventing names cannot grow it without limit.
_NAME_CACHE: dict[str, tuple[str, str]] = {}
_ATTR_CACHE: dict[str, str] = {}
_CACHE_LIMIT: Final = 4096


def _split_name(name: str) -> tuple[str, str]:
    split = _NAME_CACHE.get(name)
    if split is None:
        uri, sep, local = name.rpartition(_SEP)
        split = (uri, local) if sep else ("", name)
        if len(_NAME_CACHE) >= _CACHE_LIMIT:
            _NAME_CACHE.clear()
        _NAME_CACHE[name] = split
    return split


def _attr_key(name: str) -> str:
    key = _ATTR_CACHE.get(name)
    if key is None:
        if name.startswith(_XML_NS_PREFIX):
            key = "xml:" + name[len(_XML_NS_PREFIX) :]
        elif _SEP in name:
            uri, _, local = name.rpartition(_SEP)
            key = "{" + uri + "}" + local
        else:
            key = name
        if len(_ATTR_CACHE) >= _CACHE_LIMIT:
            _ATTR_CACHE.clear()
        _ATTR_CACHE[name] = key
    return key


def _forbidden(what: str) -> StreamError:
    return StreamError("restricted-xml", f"{what} are not allowed in XMPP (RFC 6120 §11.1)")


class XMLStreamParser:
    """Turns the bytes of one XML stream into events. See the module docstring."""

    __slots__ = (
        "_at_boundary",
        "_depth",
        "_events",
        "_expat",
        "_fed",
        "_hibernating",
        "_mark",
        "_mark_is_header",
        "_max_depth",
        "_max_stanza",
        "_namespaces",
        "_priming",
        "_root_name",
        "_root_qname",
        "_stack",
        "_stanza_start",
        "_stream_xmlns",
    )

    def __init__(
        self,
        *,
        max_stanza: int = DEFAULT_MAX_STANZA,
        max_depth: int = DEFAULT_MAX_DEPTH,
        stream_xmlns: str = ns.STREAM,
    ) -> None:
        self._max_stanza = max_stanza
        self._max_depth = max_depth
        self._stream_xmlns = stream_xmlns
        self._expat: pyexpat.XMLParserType | None = None
        self.reset()

    def reset(self) -> None:
        """Forget everything and expect a new stream header (a stream restart)."""
        self._expat = self._new_expat()
        self._stack: list[Element] = []
        self._depth = 0
        self._events: list[Event] = []
        self._fed = 0
        self._stanza_start = 0
        self._mark = -1
        self._mark_is_header = False
        self._at_boundary = False
        self._hibernating = False
        self._priming = False
        self._root_name: str | None = None
        self._root_qname = ""
        # (prefix, URI); expat gives None for an undeclared default namespace (xmlns='').
        self._namespaces: list[tuple[str | None, str | None]] = []

    def _new_expat(self) -> pyexpat.XMLParserType:
        # XMPP streams are UTF-8 (RFC 6120 §11.6): an XML declaration naming another encoding
        # is ignored rather than obeyed, so that a parser woken from hibernation (primed with a
        # UTF-8 header) reads the stream exactly as the first one did.
        parser = pyexpat.ParserCreate("UTF-8", _SEP)
        parser.buffer_text = True
        parser.buffer_size = TEXT_BUFFER
        parser.ordered_attributes = False
        parser.specified_attributes = True
        if hasattr(parser, "SetReparseDeferralEnabled"):
            # Expat >= 2.6 may hold back a partial token until more data arrives; a chat
            # server wants every complete stanza as soon as its bytes are in.
            parser.SetReparseDeferralEnabled(False)
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._entity
        parser.ProcessingInstructionHandler = self._processing_instruction
        parser.CommentHandler = self._comment
        parser.StartNamespaceDeclHandler = self._namespace
        parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        return parser

    @property
    def max_stanza(self) -> int:
        """The size limit; may be changed between feeds (a configuration reload)."""
        return self._max_stanza

    @max_stanza.setter
    def max_stanza(self, value: int) -> None:
        self._max_stanza = value

    @property
    def default_namespace(self) -> str | None:
        """The default namespace the stream header declared (``jabber:client`` for c2s)."""
        for prefix, uri in self._namespaces:
            if not prefix:
                return uri
        return None

    @property
    def at_boundary(self) -> bool:
        """Whether every byte fed so far went into complete events (between stanzas).

        Exact once a read completed an element; conservative otherwise (see hibernation).
        """
        return self._depth == 1 and self._at_boundary

    @property
    def depth(self) -> int:
        """1 between stanzas, more inside one, 0 before the header and after the close."""
        return self._depth

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` and return the events it completed (possibly none)."""
        parser = self._expat
        if parser is None:
            if not self._hibernating:
                raise StreamError("not-well-formed", "the stream has already ended")
            parser = self._wake()
        if self._root_name is None and b"\x00" in data:
            # Expat would switch to UTF-16 on a byte order mark or on "<\0"; no UTF-8 XML
            # contains a NUL byte.
            self._expat = None
            raise StreamError("unsupported-encoding", "XMPP streams are UTF-8 (RFC 6120 §11.6)")
        start = self._fed
        self._fed = start + len(data)
        try:
            parser.Parse(data, False)
        except pyexpat.ExpatError as exc:
            self._expat = None
            raise StreamError("not-well-formed", _describe(exc)) from None
        except StreamError:
            self._expat = None
            raise
        depth = self._depth
        if depth >= 2:
            if self._fed - self._stanza_start > self._max_stanza:
                self._expat = None
                raise StreamError("policy-violation", "stanza too large")
        elif depth == 1:
            if self._ends_on_boundary(data, start):
                self._at_boundary = True
                self._stanza_start = self._fed  # the next stanza starts after what was fed
            else:
                # Expat buffers a token it has not finished (a start tag, a comment) before
                # any callback sees it: bound it like a stanza.
                self._at_boundary = False
                if self._fed - max(self._mark, self._stanza_start) > self._max_stanza:
                    self._expat = None
                    raise StreamError("policy-violation", "stanza too large")
        elif depth == 0 and self._root_name is None and self._fed > MAX_HEADER:
            self._expat = None
            raise StreamError("policy-violation", "stream header too large")
        events = self._events
        if not events:
            # A new list: the caller may keep what it got, and the parser appends to its own.
            return []
        self._events = []
        return events

    def close(self) -> None:
        """Release the expat parser; further feeds fail."""
        self._expat = None
        self._hibernating = False

    # -- hibernation -----------------------------------------------------------------------

    @property
    def hibernating(self) -> bool:
        return self._hibernating

    def hibernate(self) -> bool:
        """Release the expat parser if the stream is between stanzas; True if it was."""
        if self._hibernating:
            return True
        if self._expat is None or self._depth != 1 or not self._at_boundary:
            return False
        self._expat = None
        self._hibernating = True
        return True

    def _ends_on_boundary(self, data: bytes, start: int) -> bool:
        """Whether every byte fed so far has been consumed into complete events."""
        offset = self._mark - start
        if offset < 0:
            # Nothing ended in this read: still on the boundary only if it was whitespace.
            return self._at_boundary and (not data or data.isspace())
        # The mark is where expat stood when the last event completed: at the start of an end
        # tag or of the stream header, or just past an empty-element tag.
        tail = data[offset:]
        if self._mark_is_header or tail.startswith(b"</"):
            close = tail.find(b">")
            if close < 0:
                return False
            tail = tail[close + 1 :]
        return not tail or tail.isspace()

    def _wake(self) -> pyexpat.XMLParserType:
        parser = self._new_expat()
        # The URIs are escaped: expat reported them with references expanded ("a&amp;b" as
        # "a&b"); an undeclared default namespace (xmlns='') comes as None.
        decls = "".join(
            f" {'xmlns:' + prefix if prefix else 'xmlns'}='{escape_attr(uri or '')}'"
            for prefix, uri in self._namespaces
        )
        header = f"<{self._root_qname}{decls}>".encode()
        self._expat = parser
        self._hibernating = False
        self._priming = True
        self._depth = 0
        self._root_name = None
        try:
            parser.Parse(header, False)
        finally:
            self._priming = False
        self._fed = len(header)
        self._stanza_start = self._fed
        self._mark = -1
        return parser

    # -- expat callbacks -------------------------------------------------------------------

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        depth = self._depth
        xmlns, local = _split_name(name)
        attrs = {_attr_key(k): v for k, v in attributes.items()} if attributes else {}
        if depth == 0:
            if self._root_name is not None:
                raise StreamError("not-well-formed", "content after the end of the stream")
            if xmlns != self._stream_xmlns:
                raise StreamError(
                    "invalid-namespace", f"the stream root must be in {self._stream_xmlns}"
                )
            self._root_name = name
            self._depth = 1
            parser = self._expat
            assert parser is not None
            parser.StartNamespaceDeclHandler = None
            self._mark = parser.CurrentByteIndex
            self._mark_is_header = True
            if not self._priming:
                # The root's name as written (prefix included), which a woken parser must
                # reopen for "</stream:stream>" to match; the start tag is still buffered.
                context = parser.GetInputContext() or b"<stream:stream"
                self._root_qname = _QNAME_END.split(context[1:], 1)[0].decode()
                self._events.append(StreamOpen(local, xmlns, attrs))
            return
        if depth >= self._max_depth:
            raise StreamError("policy-violation", "elements nested too deeply")
        element = Element(local, xmlns, attrs)
        if depth == 1:
            self._stanza_start = self._expat.CurrentByteIndex  # type: ignore[union-attr]
        else:
            self._stack[-1].children.append(element)
        self._stack.append(element)
        self._depth = depth + 1

    def _end(self, name: str) -> None:
        depth = self._depth - 1
        self._depth = depth
        if depth == 0:
            self._events.append(STREAM_CLOSE)
            return
        element = self._stack.pop()
        if depth == 1:
            end = self._expat.CurrentByteIndex  # type: ignore[union-attr]
            if end - self._stanza_start > self._max_stanza:
                raise StreamError("policy-violation", "stanza too large")
            self._mark = end
            self._mark_is_header = False
            self._events.append(element)

    def _text(self, data: str) -> None:
        if self._depth >= 2:
            children = self._stack[-1].children
            if children and isinstance(children[-1], str):
                children[-1] += data
            else:
                children.append(data)
        elif self._depth == 1 and data.strip(_XML_SPACE):
            # Whitespace between stanzas is a keepalive (RFC 6120 §4.6.1); text is not.
            raise StreamError("not-well-formed", "text is not allowed between stanzas")

    def _namespace(self, prefix: str | None, uri: str | None) -> None:
        # Only the root's declarations are recorded (the handler is removed once it opens):
        # they are what a woken parser must be primed with.
        if not self._priming:
            self._namespaces.append((prefix, uri))

    @staticmethod
    def _doctype(*_: object) -> None:
        raise _forbidden("document type declarations")

    @staticmethod
    def _entity(*_: object) -> None:
        raise _forbidden("entity declarations")

    @staticmethod
    def _processing_instruction(*_: object) -> None:
        raise _forbidden("processing instructions")

    @staticmethod
    def _comment(*_: object) -> None:
        raise _forbidden("comments")


def _describe(exc: pyexpat.ExpatError) -> str:
    message = pyexpat.ErrorString(exc.code) if exc.code is not None else str(exc)
    return f"{message} at line {exc.lineno}, column {exc.offset}"


def parse_element(data: str | bytes, xmlns: str = ns.CLIENT) -> Element:
    """Parse one complete element (stored XML, say) with the same rules as a stream.

    The element is read as the child of a stream whose default namespace is ``xmlns``.
    Raises :class:`StreamError` when it is not exactly one well-formed element.
    """
    if isinstance(data, str):
        data = data.encode()
    parser = XMLStreamParser(max_stanza=len(data) + 1)
    events = parser.feed(f"<stream:stream xmlns='{xmlns}' xmlns:stream='{ns.STREAM}'>".encode())
    events = parser.feed(data) + parser.feed(b"</stream:stream>")
    elements = [e for e in events if isinstance(e, Element)]
    if len(elements) != 1 or not isinstance(events[-1], StreamClose):
        raise StreamError("not-well-formed", "expected exactly one element")
    return elements[0]
