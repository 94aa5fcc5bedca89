"""The archiving module's records, apart for its size: archive ids and the delivered copy.

:class:`ArchiveIds` hands out each archived message's seq and id (how and why is in
:mod:`roost.modules.mam`'s docstring); :class:`Stamped` is the recipient's copy of a message with
its stanza-id, serialized from the archived text; :func:`inspect_message` says whether a message is
archived at all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

from roost.modules import mam_protocol as wire
from roost.storage.base import ARCHIVE_SEQ_DIGITS
from roost.xmpp import ns
from roost.xmpp.element import Element, escape_attr

HINTS: Final = "urn:xmpp:hints"  # XEP-0334
_NO_STORE: Final = frozenset({"no-store", "no-permanent-store"})


class ArchiveIds:
    """Archive seqs and ids: strictly increasing, unguessable, recognisable (see
    :mod:`roost.modules.mam`)."""

    __slots__ = ("_keyed", "_last")

    LENGTH: Final = ARCHIVE_SEQ_DIGITS + 12

    def __init__(self, key: bytes | None = None) -> None:
        key = key if key is not None else secrets.token_bytes(32)
        # Copying a keyed hash is cheaper than keying a new one for every id. BLAKE2s rather
        # than BLAKE2b: the input fits one block, and BLAKE2s finishes it in half the time
        # (two ids a message, on the event loop). A key is 256 bits either way, and the tag
        # (48 bits) is far shorter than either digest.
        self._keyed = hashlib.blake2s(key=key, digest_size=6)
        self._last = 0

    def advance(self, seq: int) -> None:
        """Hand out only seqs above ``seq`` from now on (the last one stored)."""
        self._last = max(self._last, seq)

    def next(self, owner: str) -> tuple[str, int]:
        """A new id and seq (microseconds since the epoch) for a message of ``owner``."""
        seq = time.time_ns() // 1000
        if seq <= self._last:
            seq = self._last + 1  # two in one microsecond, or the clock stepped back
        self._last = seq
        head = "%013x" % seq  # noqa: UP031 -- a third cheaper than the f-string's format spec
        return head + self._tag(head, owner), seq

    def issued(self, archive_id: str, owner: str) -> bool:
        """Whether this node issued ``archive_id`` for ``owner``'s archive."""
        if len(archive_id) != self.LENGTH:
            return False
        head = archive_id[:ARCHIVE_SEQ_DIGITS]
        return hmac.compare_digest(archive_id[ARCHIVE_SEQ_DIGITS:], self._tag(head, owner))

    def _tag(self, head: str, owner: str) -> str:
        keyed = self._keyed.copy()
        keyed.update((head + owner).encode())
        return keyed.hexdigest()


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

    __slots__ = ("_attrs_then", "_children_then", "_sid", "_text")

    def __init__(self, stanza: Element, sid: Element, text: SerializedText) -> None:
        super().__init__(stanza.name, stanza.xmlns, dict(stanza.attrs), [*stanza.children, sid])
        self._sid = sid
        self._text, self._attrs_then, self._children_then = text

    def to_str(self, parent_xmlns: str = ns.CLIENT) -> str:
        children = self.children
        sid = self._sid
        attrs = sid.attrs
        close = "</" + self.name + ">"
        text = self._text
        if (
            parent_xmlns == ns.CLIENT
            and children
            and children[-1] is sid
            and self.attrs == self._attrs_then
            and children[:-1] == self._children_then
            and text.endswith(close)
            and tuple(attrs) == ("by", "id")
            and not sid.children
            and self.xmlns != wire.SID
        ):
            # What Element._write makes of the stanza-id, without walking it.
            by, archive_id = escape_attr(attrs["by"]), escape_attr(attrs["id"])
            stamp = f"<stanza-id xmlns='{wire.SID}' by='{by}' id='{archive_id}'/>"
            return text[: -len(close)] + stamp + close
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
