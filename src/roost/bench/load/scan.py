"""Framing an XMPP stream without an XML parser: top-level elements cut out with ``bytes.find``.

Why no parser. The load generator receives every message it makes the server deliver, and it
must stay cheaper than the server it measures: a conforming XML parser (building events or a
tree, checking namespaces) costs about as much per stanza as the server's own parsing, so the
generator would saturate its core first and the measurement would be of itself. What the
generator needs from a stanza is much less than a tree: where it ends, what it is
(``<message``, ``<presence``, ``<iq``, a stream error) and one or two values inside it (the
body the generator itself wrote, an ``id``). So incoming bytes are only *framed*:

* :class:`Framer` cuts the byte stream into the stream header, top-level elements and the
  stream's closing tag. It finds ``<`` and ``>`` with ``bytes.find`` and counts depth: ``</``
  closes an element, a start tag ending in ``/>`` opens none, any other start tag opens one.
  Comments, CDATA sections and processing instructions are skipped whole. Whitespace between
  stanzas (keepalives, RFC 6120 §4.6.1) is dropped, as is an ``<?xml?>`` declaration.
* Small helpers read a name, an attribute or a child's text out of one element's bytes; they
  are used while logging in and for the rare stanza that is not a delivery.

What it assumes of the server, and why that is safe: the stream is well-formed XML (the server
under test must send that anyway), and a ``>`` inside an attribute value is noticed by the
quote count of the tag (a tag whose quotes do not pair up is re-scanned character by
character). The one input it could misread, an apostrophe in a double-quoted value followed
by a single-quoted value containing ``>``, is not something an XMPP server serializes.
Namespace prefixes are accepted anywhere (``<stream:features>``, ``<x:message>``): names are
compared by their local part.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

MAX_BUFFER: Final = 4 * 1024 * 1024  # bytes of one unfinished element before giving up

_SLASH: Final = 0x2F  # /
_BANG: Final = 0x21  # !
_QUESTION: Final = 0x3F  # ?
_MARKUP: Final = frozenset((_BANG, _QUESTION))  # after '<': a comment, CDATA or PI follows

_NAME = re.compile(rb"<\s*/?\s*([^\s/>]+)")
_ENTITIES: Final = {
    "&lt;": "<",
    "&gt;": ">",
    "&quot;": '"',
    "&apos;": "'",
    "&amp;": "&",
}
_ENTITY = re.compile(r"&(?:lt|gt|quot|apos|amp|#[0-9]+|#x[0-9a-fA-F]+);")


class FramingError(Exception):
    """The peer sent something that cannot be framed (an element without end, say)."""


class Framer:
    """Cuts a stream into ``[header, element, element, ..., closing tag]`` byte strings.

    :meth:`feed` returns the complete pieces found so far. The first piece of a stream is its
    header start tag (``<stream:stream ...>``, never closed by itself); a piece starting with
    ``</`` is the end of the stream. After a stream restart (STARTTLS, SASL success) call
    :meth:`reset`, which expects a new header and forgets buffered bytes.
    """

    __slots__ = ("_buf", "in_stream")

    def __init__(self) -> None:
        self._buf = b""
        self.in_stream = False

    def reset(self) -> None:
        self._buf = b""
        self.in_stream = False

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        find = buf.find
        size = len(buf)
        pos = 0
        while True:
            lt = find(b"<", pos)
            if lt < 0:
                pos = size  # only character data left: whitespace keepalives
                break
            if lt + 1 >= size:
                pos = lt
                break
            second = buf[lt + 1]
            if second in _MARKUP:
                end = _skip_markup(buf, lt)
                if end < 0:
                    pos = lt
                    break
                pos = end
                continue
            if not self.in_stream or second == _SLASH:
                # The stream header stays open, and a closing tag at depth 0 ends the stream:
                # either way the piece is one tag.
                gt = tag_end(buf, lt)
                if gt < 0:
                    pos = lt
                    break
                out.append(buf[lt : gt + 1])
                self.in_stream = second != _SLASH
                pos = gt + 1
                continue
            end = element_end(buf, lt)
            if end < 0:
                pos = lt
                break
            out.append(buf[lt:end])
            pos = end
        rest = buf[pos:] if pos < size else b""
        if len(rest) > MAX_BUFFER:
            raise FramingError(f"an element longer than {MAX_BUFFER} bytes")
        self._buf = rest
        return out


def tag_end(buf: bytes, lt: int) -> int:
    """Index of the ``>`` ending the tag that starts at ``lt``, or -1 if it is incomplete."""
    gt = buf.find(b">", lt)
    if gt < 0:
        return -1
    # A '>' inside a quoted attribute value leaves an odd number of quotes before it.
    if not (buf.count(b"'", lt, gt) & 1 or buf.count(b'"', lt, gt) & 1):
        return gt
    return _tag_end_slow(buf, lt)


def _tag_end_slow(buf: bytes, lt: int) -> int:
    quote = 0
    for i in range(lt + 1, len(buf)):
        byte = buf[i]
        if quote:
            if byte == quote:
                quote = 0
        elif byte == 0x27 or byte == 0x22:
            quote = byte
        elif byte == 0x3E:
            return i
    return -1


def _skip_markup(buf: bytes, lt: int) -> int:
    """End (exclusive) of the comment, CDATA section or processing instruction at ``lt``."""
    if buf.startswith(b"<![CDATA[", lt):
        end = buf.find(b"]]>", lt)
        return -1 if end < 0 else end + 3
    if buf.startswith(b"<!--", lt):
        end = buf.find(b"-->", lt)
        return -1 if end < 0 else end + 3
    if buf[lt + 1] == _QUESTION:
        end = buf.find(b"?>", lt)
        return -1 if end < 0 else end + 2
    if len(buf) - lt < 9 and b"<![CDATA["[: len(buf) - lt] == buf[lt:]:
        return -1  # could still become a CDATA section
    end = tag_end(buf, lt)  # a DOCTYPE or the like: not XMPP, skipped as one tag
    return -1 if end < 0 else end + 1


def element_end(buf: bytes, lt: int) -> int:
    """End (exclusive) of the element whose start tag is at ``lt``, or -1 if incomplete."""
    gt = tag_end(buf, lt)
    if gt < 0:
        return -1
    if buf[gt - 1] == _SLASH:
        return gt + 1
    depth = 1
    pos = gt + 1
    find = buf.find
    size = len(buf)
    while True:
        lt = find(b"<", pos)
        if lt < 0 or lt + 1 >= size:
            return -1
        second = buf[lt + 1]
        if second == _SLASH:
            gt = find(b">", lt)
            if gt < 0:
                return -1
            depth -= 1
            if depth == 0:
                return gt + 1
            pos = gt + 1
        elif second in _MARKUP:
            end = _skip_markup(buf, lt)
            if end < 0:
                return -1
            pos = end
        else:
            gt = tag_end(buf, lt)
            if gt < 0:
                return -1
            if buf[gt - 1] != _SLASH:
                depth += 1
            pos = gt + 1


# -- reading inside one element (login and rare stanzas; not the delivery path) -------------


def local_name(element: bytes) -> bytes:
    """The local name of an element (or closing tag): ``<stream:features ...`` → ``features``."""
    match = _NAME.match(element)
    if match is None:
        return b""
    name = match.group(1)
    colon = name.rfind(b":")
    return name[colon + 1 :] if colon >= 0 else name


def start_tag(element: bytes) -> bytes:
    end = tag_end(element, 0)
    return element if end < 0 else element[: end + 1]


@lru_cache(maxsize=64)
def _attribute_pattern(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"\s" + re.escape(name) + rb"\s*=\s*(?:'([^']*)'|\"([^\"]*)\")")


def attribute(element: bytes, name: bytes) -> str | None:
    """An attribute of the element's start tag, unescaped; None if it has none."""
    match = _attribute_pattern(name).search(start_tag(element))
    if match is None:
        return None
    raw = match.group(1) if match.group(1) is not None else match.group(2)
    return unescape(raw.decode("utf-8", "replace"))


@lru_cache(maxsize=64)
def _child_pattern(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"<(?:[^\s/>:]+:)?" + re.escape(name) + rb"(?=[\s/>])")


def find_child(element: bytes, name: bytes, start: int = 1) -> int:
    """Where the first descendant with this local name starts (from ``start``), or -1."""
    match = _child_pattern(name).search(element, start)
    return -1 if match is None else match.start()


def has_child(element: bytes, name: bytes) -> bool:
    """Whether an element with this local name occurs anywhere inside ``element``."""
    return _child_pattern(name).search(element, 1) is not None


def child_texts(element: bytes, name: bytes) -> list[str]:
    """The text of every descendant with this local name (``<mechanism>`` in features)."""
    texts = []
    for match in _child_pattern(name).finditer(element, 1):
        gt = tag_end(element, match.start())
        if gt < 0 or element[gt - 1] == _SLASH:
            texts.append("")
            continue
        end = element.find(b"<", gt + 1)
        if end < 0:
            continue
        texts.append(unescape(element[gt + 1 : end].decode("utf-8", "replace")).strip())
    return texts


def child_text(element: bytes, name: bytes) -> str | None:
    texts = child_texts(element, name)
    return texts[0] if texts else None


def first_child_name(element: bytes, after: int = 0) -> str:
    """The local name of the first child element of the element starting at ``after``."""
    gt = tag_end(element, after)
    if gt < 0:
        return ""
    pos = gt + 1
    while True:
        lt = element.find(b"<", pos)
        if lt < 0 or lt + 1 >= len(element):
            return ""
        second = element[lt + 1]
        if second == _SLASH:
            return ""
        if second in _MARKUP:
            pos = max(_skip_markup(element, lt), lt + 1)
            continue
        return local_name(element[lt:]).decode("utf-8", "replace")


def error_condition(element: bytes) -> str:
    """The defined condition of a stanza or stream error: its ``<error>``'s first child.

    For a stream error (``<stream:error><conflict/>...``) pass the error element itself; for a
    stanza (``<message type='error'>...<error><item-not-found/>``) the ``<error>`` child is
    found first. A ``<text>`` beside the condition is appended after a colon.
    """
    if local_name(element) == b"error":
        at = 0
    else:
        match = _child_pattern(b"error").search(element, 1)
        if match is None:
            return "unknown"
        at = match.start()
    condition = first_child_name(element, at) or "unknown"
    text = child_text(element[at:], b"text")
    return f"{condition}: {text}" if text else condition


def unescape(text: str) -> str:
    if "&" not in text:
        return text
    return _ENTITY.sub(_entity, text)


def _entity(match: re.Match[str]) -> str:
    entity = match.group(0)
    known = _ENTITIES.get(entity)
    if known is not None:
        return known
    body = entity[2:-1]
    try:
        return chr(int(body[1:], 16) if body[0] in "xX" else int(body))
    except (ValueError, OverflowError):
        return entity


def escape(text: str) -> str:
    """Escape for an attribute value or text, quoted with apostrophes."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )
