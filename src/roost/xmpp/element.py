"""A light XML element for stanzas, with fast and correctly escaped serialization.

Why not ``xml.etree``: ElementTree stores namespaces inside tag names (``{ns}tag``), has no
notion of the stream's default namespace, and its serializer invents ``ns0:`` prefixes, which
XMPP clients do not expect for stanza payloads. A stanza here is parsed once (by
:mod:`roost.xmpp.parser`), routed as this object, and serialized once per delivery. The class
uses ``__slots__`` because a busy server holds many of them in queues and offline buffers.

Namespaces follow the model of XMPP itself: every element has an ``xmlns``; serialization emits
an ``xmlns`` declaration only where an element's namespace differs from its parent's, so a
stanza in ``jabber:client`` serializes inside a client stream without any declaration.
Attributes in the XML namespace are keyed ``xml:lang``; other namespaced attributes use Clark
notation (``{uri}name``) and get generated prefixes when serialized.

:class:`KnownText` is an element that already has its text, when that text is at hand (a
stanza another cluster node serialized and this one parsed): written unchanged, it costs no
tree walk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from roost.xmpp import ns

__all__ = ["Element", "KnownText", "escape_attr", "escape_text"]

_XML_PREFIX: Final = "xml:"


def escape_text(text: str) -> str:
    """Escape character data (``&``, ``<``, ``>``, and carriage return).

    A literal carriage return would reach the receiver as a line feed (XML 1.0 §2.11 end-of-line
    handling), so it is written as a character reference.
    """
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def escape_attr(value: str) -> str:
    """Escape an attribute value for single-quoted output.

    Whitespace characters other than space are written as character references so that
    attribute-value normalisation (XML 1.0 §3.3.3) on the receiving side gives back the value.
    """
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "'" in value:
        value = value.replace("'", "&apos;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value or "\r" in value or "\t" in value:
        value = value.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return value


class Element:
    """An XML element: ``name``, ``xmlns``, ``attrs`` and ``children`` (elements and text)."""

    __slots__ = ("attrs", "children", "name", "xmlns")

    name: str
    xmlns: str
    attrs: dict[str, str]
    children: list[Element | str]

    def __init__(
        self,
        name: str,
        xmlns: str = ns.CLIENT,
        attrs: dict[str, str] | None = None,
        children: list[Element | str] | None = None,
    ) -> None:
        self.name = name
        self.xmlns = xmlns
        self.attrs = {} if attrs is None else attrs
        self.children = [] if children is None else children

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.attrs[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.attrs[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.attrs

    @property
    def text(self) -> str:
        """The concatenated character data directly inside this element."""
        children = self.children
        if not children:
            return ""
        if len(children) == 1:
            only = children[0]
            return only if isinstance(only, str) else ""
        return "".join(c for c in children if isinstance(c, str))

    @text.setter
    def text(self, value: str) -> None:
        self.children = [c for c in self.children if not isinstance(c, str)]
        if value:
            self.children.insert(0, value)

    def elements(self, name: str | None = None, xmlns: str | None = None) -> Iterator[Element]:
        """Child elements, optionally filtered by name and namespace."""
        for child in self.children:
            if isinstance(child, Element):
                if name is not None and child.name != name:
                    continue
                if xmlns is not None and child.xmlns != xmlns:
                    continue
                yield child

    def find(self, name: str, xmlns: str | None = None) -> Element | None:
        """The first child element with this name (and namespace, when given)."""
        for child in self.children:
            if (
                not isinstance(child, str)
                and child.name == name
                and (xmlns is None or child.xmlns == xmlns)
            ):
                return child
        return None

    def find_text(self, name: str, xmlns: str | None = None) -> str | None:
        child = self.find(name, xmlns)
        return None if child is None else child.text

    def first_child(self) -> Element | None:
        """The first child element (the payload of an IQ, for instance)."""
        for child in self.children:
            if not isinstance(child, str):
                return child
        return None

    # -- building --------------------------------------------------------------------------

    def append(self, child: Element | str) -> Element | str:
        self.children.append(child)
        return child

    def add(
        self, name: str, xmlns: str | None = None, attrs: dict[str, str] | None = None
    ) -> Element:
        """Append and return a new child element; it inherits this namespace by default."""
        child = Element(name, self.xmlns if xmlns is None else xmlns, attrs)
        self.children.append(child)
        return child

    def add_text(self, name: str, text: str, xmlns: str | None = None) -> Element:
        child = self.add(name, xmlns)
        if text:
            child.children.append(text)
        return child

    def remove(self, child: Element) -> None:
        self.children.remove(child)

    def copy(self) -> Element:
        """A deep copy: routing mutates ``to``/``from`` on copies, never on shared stanzas."""
        return Element(
            self.name,
            self.xmlns,
            dict(self.attrs),
            [c if isinstance(c, str) else c.copy() for c in self.children],
        )

    def shallow_copy(self) -> Element:
        """A copy whose attributes may be changed; children are shared, not copied."""
        return Element(self.name, self.xmlns, dict(self.attrs), list(self.children))

    # -- serialization ---------------------------------------------------------------------

    def to_bytes(self, parent_xmlns: str = ns.CLIENT) -> bytes:
        return self.to_str(parent_xmlns).encode()

    def to_str(self, parent_xmlns: str = ns.CLIENT) -> str:
        out: list[str] = []
        self._write(out, parent_xmlns)
        return "".join(out)

    def __str__(self) -> str:
        return self.to_str()

    def _write(self, out: list[str], parent_xmlns: str) -> None:
        name = self.name
        out.append("<" + name)
        xmlns = self.xmlns
        if xmlns != parent_xmlns:
            out.append(" xmlns='" + escape_attr(xmlns) + "'")
        attrs = self.attrs
        if attrs:
            prefixes: dict[str, str] | None = None
            for key, value in attrs.items():
                if key[0] == "{":
                    # Clark notation: declare a prefix for this attribute's namespace.
                    uri, _, local = key[1:].partition("}")
                    if prefixes is None:
                        prefixes = {}
                    prefix = prefixes.get(uri)
                    if prefix is None:
                        prefix = prefixes[uri] = f"ns{len(prefixes)}"
                        out.append(f" xmlns:{prefix}='{escape_attr(uri)}'")
                    out.append(f" {prefix}:{local}='{escape_attr(value)}'")
                else:
                    out.append(" " + key + "='" + escape_attr(value) + "'")
        children = self.children
        if not children:
            out.append("/>")
            return
        out.append(">")
        for child in children:
            if isinstance(child, str):
                out.append(escape_text(child))
            else:
                child._write(out, xmlns)
        out.append("</" + name + ">")

    # -- comparison and display ------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (
            self.name == other.name
            and self.xmlns == other.xmlns
            and self.attrs == other.attrs
            and _normal_children(self.children) == _normal_children(other.children)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        text = self.to_str()
        if len(text) > 200:
            text = text[:197] + "..."
        return f"<Element {{{self.xmlns}}}{self.name} {text}>"


class KnownText(Element):
    """An element that has its text already: ``to_str`` returns it while it still holds.

    Made from a parsed element and the text it was parsed from, read as a child of a stream
    whose default namespace is ``parent_xmlns`` (a stanza that another cluster node serialized
    with this module and this node parsed; :mod:`roost.cluster.forwarding`). The element takes
    over the parsed one's attributes and children and keeps copies of both as they were.
    ``to_str`` returns the text under that same parent namespace, as long as the attributes and
    the list of children are still equal to the copies (the children are the same objects, so
    the comparison stops at identity: two shallow compares); otherwise, after any change or
    under another parent, it walks the tree the ordinary way. A change made in place inside a
    child element is not seen: code that changes a stanza it did not make works on a copy
    (``copy`` and ``shallow_copy`` return plain elements). The MAM module's stamped copies check
    the same way.
    """

    __slots__ = ("_attrs_then", "_children_then", "_parent", "_text")

    def __init__(self, element: Element, text: str, parent_xmlns: str = ns.CLIENT) -> None:
        super().__init__(element.name, element.xmlns, element.attrs, element.children)
        self._text = text
        self._parent = parent_xmlns
        self._attrs_then = element.attrs.copy()
        self._children_then = element.children.copy()

    def to_str(self, parent_xmlns: str = ns.CLIENT) -> str:
        if (
            parent_xmlns == self._parent
            and self.attrs == self._attrs_then
            and self.children == self._children_then
        ):
            return self._text
        return super().to_str(parent_xmlns)


def _normal_children(children: list[Element | str]) -> list[Element | str]:
    """Children with adjacent text merged and empty text dropped, for equality."""
    merged: list[Element | str] = []
    for child in children:
        if isinstance(child, str):
            if not child:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + child
                continue
        merged.append(child)
    return merged
