"""The archiving module's records, apart for its size: archive ids and the delivered copy.

:class:`ArchiveIds` hands out each archived message's seq and id (how and why is in
:mod:`roost.modules.mam`'s docstring); :class:`Stamped` is the recipient's copy of a message with
its stanza-id, serialized from the archived text; :func:`inspect_message` says whether a message is
archived at all.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

from roost.modules import mam_protocol as wire
from roost.storage.base import ARCHIVE_SEQ_DIGITS
from roost.xmpp import ns
from roost.xmpp.element import Element

HINTS: Final = "urn:xmpp:hints"  # XEP-0334
_NO_STORE: Final = frozenset({"no-store", "no-permanent-store"})


class ArchiveIds:
    """Archive seqs and ids: strictly increasing, and unique across nodes (see
    :mod:`roost.modules.mam`)."""

    __slots__ = ("_last", "_suffix")

    LENGTH: Final = ARCHIVE_SEQ_DIGITS + 12

    def __init__(self) -> None:
        # The id's tail: this process's own, so that two nodes writing one owner's archive in
        # the same microsecond still make two ids (the seq alone tells order, not which node).
        self._suffix = secrets.token_hex(6)
        self._last = 0

    def advance(self, seq: int) -> None:
        """Hand out only seqs above ``seq`` from now on (the last one stored)."""
        self._last = max(self._last, seq)

    def next(self) -> tuple[str, int]:
        """A new id and seq (microseconds since the epoch)."""
        seq = time.time_ns() // 1000
        if seq <= self._last:
            seq = self._last + 1  # two in one microsecond, or the clock stepped back
        self._last = seq
        return "%013x" % seq + self._suffix, seq  # noqa: UP031 -- a third cheaper than f"{:013x}"


# A message serialized, with the attributes and children it had then (copies).
SerializedText = tuple[str, dict[str, str], list[Element | str]]
NO_TEXT: SerializedText = ("", {}, [])


class Stamped(Element):
    """The recipient's copy as delivered: the routed message with its stanza-id appended.

    Its text is the archived text of the message with the stanza-id written before the closing
    tag, so the message is serialized once, for the archive, rather than again for the wire
    (``Element._write`` walks the whole tree; this splices strings). It checks first that it
    is still what that text was made from (the attributes and children then, and the stanza-id
    last), and serializes the ordinary way otherwise, or inside another element.
    """

    __slots__ = ("_attrs_then", "_by", "_children_then", "_id", "_sid", "_stamp", "_text")

    def __init__(self, stanza: Element, owner: str, archive_id: str, text: SerializedText) -> None:
        sid = Element("stanza-id", wire.SID, {"by": owner, "id": archive_id})
        super().__init__(stanza.name, stanza.xmlns, dict(stanza.attrs), [*stanza.children, sid])
        self._sid = sid
        self._by = owner
        self._id = archive_id
        self._text, self._attrs_then, self._children_then = text
        # What Element._write makes of the stanza-id, unescaped: ``owner`` is a parsed bare
        # JID, in which RFC 7622 allows none of the characters escaping would change (the
        # localpart forbids them, the domain is a host name), and the id is hex digits.
        self._stamp = f"<stanza-id xmlns='{wire.SID}' by='{owner}' id='{archive_id}'/>"

    def to_str(self, parent_xmlns: str = ns.CLIENT) -> str:
        children = self.children
        sid = self._sid
        attrs = sid.attrs
        text = self._text
        close = f"</{self.name}>"
        if (
            parent_xmlns == ns.CLIENT
            and children
            and children[-1] is sid
            and len(attrs) == 2
            and attrs.get("by") is self._by
            and attrs.get("id") is self._id
            and not sid.children
            and sid.name == "stanza-id"
            and sid.xmlns == wire.SID
            and self.xmlns != wire.SID
            and self.attrs == self._attrs_then
            and children[:-1] == self._children_then
            and text.endswith(close)
        ):
            return f"{text[: len(text) - len(close)]}{self._stamp}{close}"
        return super().to_str(parent_xmlns)


def inspect_message(stanza: Element) -> tuple[bool, bool]:
    """(whether the message is worth archiving, whether it carries a stanza-id)."""
    body = False
    sid = False
    for child in stanza.children:
        if type(child) is not Element:
            continue
        xmlns = child.xmlns
        if xmlns == ns.CLIENT:
            if child.name == "body":
                body = True
        elif xmlns == HINTS:
            if child.name in _NO_STORE:
                return False, sid
        elif xmlns == wire.SID and child.name == "stanza-id":
            sid = True
    return body, sid
