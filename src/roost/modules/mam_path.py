"""The archiving module's message path: its two hooks and the buffer they fill, one native class.

Why apart. :class:`~roost.modules.mam.MamModule` is a :class:`~roost.core.module.Module`, a plain
Python class, so even compiled (:mod:`roost.compiled`) its methods reach their attributes through
the instance's dictionary and call one another as Python methods: callgrind counted 14 attribute
reads, 4 writes and 4 method calls of the module for each archived message, more of the event
loop's instructions than the archive ids and the records together. :class:`MessagePath` has no
such base, so mypyc makes it a native class, whose attributes are slots and whose methods call
each other directly. What it does, and why, is in :mod:`roost.modules.mam`'s docstring; the
module keeps what waits for I/O (preferences not cached, the writer task, queries) and reaches
this object for the rest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Protocol

from roost.c2s.session import C2SSession
from roost.core.hooks import Stop
from roost.modules import mam_protocol as wire
from roost.modules.mam_records import NO_TEXT, ArchiveIds, SerializedText, Stamped, inspect_message
from roost.modules.roster import RosterModule
from roost.storage.base import ArchivePrefs, ArchiveRecord
from roost.xmpp.element import Element
from roost.xmpp.jid import JID, InvalidJID, parse_jid

log = logging.getLogger("roost.modules.mam")

BATCH: Final = 60_000  # records per storage call at most (one call holds the storage thread)
HIGH_WATER: Final = 120_000  # records waiting for storage before messages wait for room
MAX_BUFFERED: Final = 300_000  # records waiting before new ones are refused (a stalled store)

_ARCHIVED_TYPES: Final = frozenset({"chat", "normal"})
ALWAYS: Final = ArchivePrefs("always")


class SlowPaths(Protocol):
    """What the module does for the path when a decision or a write must wait."""

    def outgoing_later(self, stanza: Element, session: C2SSession, to: JID) -> Any: ...

    def incoming_later(self, stanza: Element, owner: str, sender: JID) -> Any: ...

    def start_writer(self) -> None: ...


class MessagePath:
    """The sender's copy (``c2s.inbound``), the recipient's copy and its stanza-id
    (``router.message``), and the records they buffer for the module's writer."""

    def __init__(self, slow: SlowPaths, domain: str, hurry: asyncio.Event) -> None:
        self.slow = slow
        self.domain = domain
        self.hurry = hurry  # set when BATCH records wait: the writer stops gathering
        self.roster: RosterModule | None = None
        # Preferences by owner (the module loads them; insertion order is eviction order).
        self.prefs: dict[str, ArchivePrefs] = {}
        # Stanzas decided by the slow path, let through when routed again: id -> stanza (kept
        # so that the id is not reused meanwhile).
        self.passing: dict[int, Element] = {}
        self.ids = ArchiveIds()
        self.buffer: list[ArchiveRecord] = []
        self.buffered = 0  # records ever buffered
        self.refused = 0  # records refused because the buffer was full
        # Records waiting before messages wait for room (HIGH_WATER; lowered in tests and
        # live nodes), and whether ids continue from the last seq stored yet.
        self.high_water = HIGH_WATER
        self.sequenced = False
        self.writing = False  # the module's writer task runs
        # The last stanza serialized: the sender's and the recipient's copy share the text,
        # and the recipient's copy as delivered is made from it (Stamped). They also share
        # their archive id and seq, in two archives (see mam.py).
        self._text_of: Element | None = None
        self._text: SerializedText = NO_TEXT
        self._id: tuple[str, int] = ("", 0)

    # -- hooks ---------------------------------------------------------------------------------

    def outgoing(self, stanza: Element, session: C2SSession) -> Any:
        """The sender's copy (``c2s.inbound``), and no client's claim to an archive id."""
        if stanza.name != "message":
            return stanza
        archivable, has_sid = inspect_message(stanza)
        attrs = stanza.attrs
        to_attr = attrs.get("to")
        try:
            to = parse_jid(to_attr) if to_attr is not None else session.jid.bare
        except InvalidJID:
            return stanza  # the router bounces it
        if has_sid:
            stanza = without_claims(stanza, to.bare_str)
        if not archivable or attrs.get("type", "normal") not in _ARCHIVED_TYPES:
            return stanza
        owner = session.jid.bare_str
        if to.local is None or to.domain != self.domain or to.bare_str == owner:
            return stanza
        allowed = self.allowed(owner, to)
        if allowed is None:
            return Stop(self.slow.outgoing_later(stanza, session, to))
        if allowed:
            self.record(owner, str(to), "out", stanza)
        return stanza

    def incoming(self, stanza: Element, to: JID) -> Any:
        """The recipient's copy (``router.message``), and its stanza-id."""
        attrs = stanza.attrs
        if attrs.get("type", "normal") not in _ARCHIVED_TYPES:
            return stanza
        archivable, has_sid = inspect_message(stanza)
        if not archivable:
            return stanza
        owner = to.bare_str
        if has_sid and any(
            child.attrs.get("by") == owner for child in stanza.elements("stanza-id", wire.SID)
        ):
            return stanza  # stamped when first routed, and archived then (see the docstring)
        passing = self.passing
        if passing and passing.get(id(stanza)) is stanza:
            return stanza
        try:
            sender = parse_jid(attrs.get("from", ""))
        except InvalidJID:
            return stanza
        allowed = self.allowed(owner, sender)
        if allowed is None:
            return Stop(self.slow.incoming_later(stanza, owner, sender))
        if allowed:
            return self.archived_incoming(stanza, owner, sender)
        return stanza

    def archived_incoming(self, stanza: Element, owner: str, sender: JID) -> Element:
        archive_id = self.record(owner, str(sender), "in", stanza)
        if archive_id is None:
            return stanza
        return Stamped(stanza, owner, archive_id, self._text)  # record made _text of stanza

    # -- preferences ---------------------------------------------------------------------------

    def allowed(self, owner: str, other: JID) -> bool | None:
        """Whether the owner archives messages with ``other``; None when that must wait."""
        if len(self.buffer) >= self.high_water or not self.sequenced:
            return None
        prefs = self.prefs.get(owner)
        if prefs is None:
            return None
        if prefs is ALWAYS:
            return True
        return self.decided(prefs, owner, other)

    def decided(self, prefs: ArchivePrefs, owner: str, other: JID) -> bool | None:
        """What the preferences say; None when that needs the roster, which is not cached."""
        bare = other.bare_str
        full = str(other)
        if bare in prefs.never or full in prefs.never:
            return False
        if bare in prefs.always or full in prefs.always:
            return True
        if prefs.default != "roster":
            return prefs.default == "always"
        roster = self.roster.cached(owner) if self.roster is not None else None
        if roster is None:
            return None
        return any(item.jid == bare and item.visible for item in roster.items)

    # -- the buffer ----------------------------------------------------------------------------

    def record(self, owner: str, with_jid: str, direction: str, stanza: Element) -> str | None:
        """Buffer a message for ``owner``'s archive; its archive id, None when refused."""
        buffer = self.buffer
        if len(buffer) >= MAX_BUFFERED:
            self.refused += 1
            if self.refused % 1000 == 1:
                log.error("archive writes are not keeping up: %d messages refused", self.refused)
            return None
        if stanza is not self._text_of:
            # The sender's copy was serialized moments ago when this is the recipient's.
            self._text_of = stanza
            self._text = (stanza.to_str(), stanza.attrs.copy(), stanza.children.copy())
            self._id = self.ids.next()
        archive_id, seq = self._id
        buffer.append(ArchiveRecord(owner, seq, archive_id, with_jid, direction, self._text[0]))
        self.buffered += 1
        if not self.writing:
            self.writing = True
            self.slow.start_writer()
        elif len(buffer) == BATCH:
            self.hurry.set()
        return archive_id

    def forget_text(self) -> None:
        """Nothing more to share: let the last stanza and its text go."""
        self._text_of, self._text = None, NO_TEXT


def without_claims(stanza: Element, owner: str) -> Element:
    """``stanza`` without the stanza-ids claiming to be of ``owner``'s archive (XEP-0359 §3).

    A copy when there are any: modules before this one may hold the stanza (carbons)."""
    claimed = [child for child in stanza.elements("stanza-id", wire.SID) if _claims(child, owner)]
    if not claimed:
        return stanza
    stanza = stanza.shallow_copy()
    for child in claimed:
        stanza.remove(child)
    return stanza


def _claims(stanza_id: Element, owner: str) -> bool:
    try:
        return parse_jid(stanza_id.attrs.get("by", "")).bare_str == owner
    except InvalidJID:
        return False  # never one of ours
