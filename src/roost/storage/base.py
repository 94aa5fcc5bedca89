"""The storage interface: everything roost keeps durably, behind one async API.

Protocol code never talks SQL. It calls a :class:`Storage`, which the SQLite backend
(:mod:`roost.storage.sqlite`, the embedded default) implements, and which the PostgreSQL backend
(:mod:`roost.storage.postgres`) implements for deployments of more than one machine. Both run
the same test suite (``tests/storage``).

Accounts are keyed by their bare JID string (``alice@example.org``), so one store can hold
several virtual hosts. Passwords are never stored: an account has SCRAM credentials (salt,
iteration count, StoredKey, ServerKey; RFC 5802 §3) for each hash it supports, from which
SCRAM logins are verified directly and PLAIN logins by recomputing the StoredKey.

Every method is a coroutine and never blocks the event loop. Calls made concurrently may take
effect in any order (the PostgreSQL backend runs them on several connections at once): a caller
that needs one call to see another's effect awaits the first, as a session does by handling its
client's stanzas one after the other.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import msgspec


class StorageError(Exception):
    """A backend failed (I/O, corruption, unavailable). Protocol code answers with an error."""


@dataclass(slots=True, frozen=True)
class ScramCredentials:
    """Salted SCRAM keys for one hash function (RFC 5802 §3)."""

    mechanism: str  # "SCRAM-SHA-1" or "SCRAM-SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(slots=True)
class RosterItem:
    """One contact in a user's roster, with its subscription state (RFC 6121 §2.1.2, §3).

    ``subscription`` is ``none``, ``to``, ``from`` or ``both``. ``ask`` marks an outbound
    subscription request awaiting an answer ("pending out"); ``pending_in`` an inbound request
    awaiting the user's approval, whose original presence stanza is kept in
    ``pending_in_stanza`` so that it can be delivered again at the next login (RFC 6121 §3.1.3).
    ``approved`` is a subscription pre-approval (RFC 6121 §3.4). ``in_roster`` is false for
    an item created only to hold an inbound request: such an item is not shown in roster
    results (§3.1.3) until the user adds the contact or approves the request.
    """

    jid: str
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    pending_in: bool = False
    approved: bool = False
    groups: tuple[str, ...] = ()
    pending_in_stanza: str | None = None
    in_roster: bool = True

    @property
    def visible(self) -> bool:
        """Whether the item belongs in the roster the user sees (RFC 6121 §2.1.2)."""
        return self.in_roster or self.subscription != "none" or self.ask


@dataclass(slots=True, frozen=True)
class OfflineMessage:
    """A message stored for a user who was offline (XEP-0160), oldest first by ``id``."""

    id: int
    stanza: str  # the serialized stanza as it will be delivered
    stamp: float  # POSIX time the server received it, for the XEP-0203 delay
    sender: str = ""


@dataclass(slots=True)
class Roster:
    version: int
    items: list[RosterItem] = field(default_factory=list)


class Storage(abc.ABC):
    """Durable state of a roost deployment. See the module docstring."""

    name: str = "storage"

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema to the current version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release every resource; the object cannot be used afterwards."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    # -- accounts ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_user(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        """Create an account; False if it already exists."""

    @abc.abstractmethod
    async def delete_user(self, jid: str) -> bool:
        """Delete an account and everything stored for it; False if there was none."""

    @abc.abstractmethod
    async def user_exists(self, jid: str) -> bool: ...

    @abc.abstractmethod
    async def list_users(self, domain: str | None = None) -> list[str]:
        """Bare JIDs of every account (of one domain when given), sorted."""

    @abc.abstractmethod
    async def get_credentials(self, jid: str, mechanism: str) -> ScramCredentials | None: ...

    @abc.abstractmethod
    async def set_credentials(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        """Replace every credential of an account (a password change); False if no account."""

    # -- roster ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_roster(self, jid: str) -> Roster:
        """Every item (visible or not) and the current roster version (0 when empty)."""

    @abc.abstractmethod
    async def get_roster_item(self, jid: str, contact: str) -> RosterItem | None: ...

    @abc.abstractmethod
    async def put_roster_item(self, jid: str, item: RosterItem) -> int:
        """Insert or replace an item; returns the new roster version."""

    @abc.abstractmethod
    async def delete_roster_item(self, jid: str, contact: str) -> int:
        """Remove an item (if present); returns the new roster version."""

    # -- offline messages ------------------------------------------------------------------

    @abc.abstractmethod
    async def store_offline(self, jid: str, stanza: str, stamp: float, sender: str = "") -> int:
        """Append a message to the user's offline queue; returns its id."""

    @abc.abstractmethod
    async def count_offline(self, jid: str) -> int: ...

    @abc.abstractmethod
    async def fetch_offline(self, jid: str, limit: int = 1000) -> list[OfflineMessage]:
        """The oldest ``limit`` stored messages, oldest first. They stay stored."""

    @abc.abstractmethod
    async def delete_offline(self, jid: str, ids: list[int]) -> None:
        """Remove delivered messages."""

    @abc.abstractmethod
    async def expire_offline(self, before: float) -> int:
        """Remove every user's offline messages stored before ``before`` (POSIX time); how
        many were removed (the expiry policy, ``limits.offline_expire_after``)."""

    # -- vCard-temp ------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_vcard(self, jid: str) -> str | None:
        """The stored ``<vCard/>`` element, serialized; None when there is none."""

    @abc.abstractmethod
    async def set_vcard(self, jid: str, vcard: str | None) -> None:
        """Store (or with None delete) a user's vCard."""

    # -- blocking (XEP-0191) -----------------------------------------------------------------

    @abc.abstractmethod
    async def get_blocklist(self, jid: str) -> list[str]:
        """The JIDs the user blocks, sorted."""

    @abc.abstractmethod
    async def block(self, jid: str, items: list[str]) -> None:
        """Add JIDs to the blocklist (already blocked ones are fine)."""

    @abc.abstractmethod
    async def unblock(self, jid: str, items: list[str] | None) -> None:
        """Remove these JIDs from the blocklist, or every JID when ``items`` is None."""

    # -- message archive (XEP-0313) ------------------------------------------------------------

    @abc.abstractmethod
    async def archive_messages(self, records: list[ArchiveRecord]) -> None:
        """Append messages to their owners' archives (one call per batch, not per message).

        A record whose owner has no account (any more) is skipped, and so is one whose
        ``seq`` is already stored, rather than failing the batch: one stale record must not
        lose the others.
        """

    @abc.abstractmethod
    async def query_archive(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        """One page of the owner's archive, oldest first; see :class:`ArchiveQuery`.

        Raises :class:`UnknownArchiveId` when an id the query names (``after_id``,
        ``before_id``, ``ids``, ``after``, ``before``) is not in the owner's archive.
        """

    @abc.abstractmethod
    async def last_archive_seq(self) -> int:
        """The greatest ``seq`` archived so far, for any owner (0 when none).

        An archiving node starts its sequence above it, so that a clock that stepped back
        while it was down cannot put new messages before old ones.
        """

    @abc.abstractmethod
    async def get_archive_prefs(self, owner: str) -> ArchivePrefs | None:
        """The owner's archiving preferences; None when the owner never set any."""

    @abc.abstractmethod
    async def set_archive_prefs(self, owner: str, prefs: ArchivePrefs) -> None:
        """Replace the owner's archiving preferences (StorageError when no such account)."""

    @abc.abstractmethod
    async def expire_archive(self, before: float) -> int:
        """Remove every archived message handled before ``before`` (POSIX time); how many
        (the expiry policy, ``mam.expire_after``)."""


# -- message archive records -----------------------------------------------------------------
#
# Order, time and ids are one number. A record's ``seq`` is the time the server handled the
# message, in microseconds since the epoch, and the archiving node hands them out strictly
# increasing (two messages in one microsecond get consecutive values), above every seq already
# stored (:meth:`Storage.last_archive_seq`). So ``seq`` order is arrival order (XEP-0313 §3.1),
# a time filter is a seq range, and an archive id, which begins with its seq, finds its record
# without an index of its own. Each index costs every archived message a write, which is most
# of what archiving costs; this way a backend needs one, on (owner, seq), to answer every query.
#
# Each node hands out seqs on its own, so two nodes can give one seq to two records, of two
# owners or of one; their ids differ in the tail each node adds. A record is therefore known by
# (owner, seq, id), and an owner's records are in (seq, id) order, ids compared by code point.
# A repeated record (a batch written again after its commit was reported failed) does nothing.

ARCHIVE_SEQ_DIGITS = 13  # hex digits of the seq at the start of an archive id (until 2112)


def archive_id_seq(archive_id: str) -> int | None:
    """The seq an archive id begins with; None when it does not begin with one."""
    head = archive_id[:ARCHIVE_SEQ_DIGITS]
    if len(head) != ARCHIVE_SEQ_DIGITS or not all(c in "0123456789abcdef" for c in head):
        return None
    return int(head, 16)


class UnknownArchiveId(LookupError):
    """A query named an archive id that the owner's archive does not hold."""

    def __init__(self, archive_id: str) -> None:
        super().__init__(f"no archived message has the id {archive_id!r}")
        self.archive_id = archive_id


# A msgspec Struct rather than a dataclass: a record is created on the message path and waits
# in the archiving module's buffer for up to a second, and a Struct with gc=False is made in
# under half the time and is never tracked by the garbage collector (its fields are strings
# and an int, which make no cycles). As dataclasses, the tens of thousands of records waiting
# at a time were what the young collections walked and promoted: 11 collections taking 0.33 s
# in 10 s of the closed loop with SM and MAM, none since (docs/benchmarks-mam.md). Not frozen,
# which costs more to make; nobody changes a record once it is made.
class ArchiveRecord(msgspec.Struct, gc=False):
    """A message to archive, as the archiving module hands it to :meth:`archive_messages`.

    ``seq`` is the record's place and time (see above; its stamp is ``seq / 1e6``), and
    ``id`` its archive id: ``seq`` as :data:`ARCHIVE_SEQ_DIGITS` lowercase hex digits, then
    what the archiving node adds to tell its ids from another node's. ``with_jid`` is the other
    party as addressed (full or bare JID); the store keeps its bare JID and its resource apart so
    that a query can ask for either. ``direction`` is ``in`` (the owner received it) or
    ``out`` (the owner sent it); ``stanza`` the message serialized, as it was routed.
    """

    owner: str
    seq: int
    id: str
    with_jid: str
    direction: str
    stanza: str

    @property
    def stamp(self) -> float:
        return self.seq / 1e6


@dataclass(slots=True, frozen=True)
class ArchivedMessage:
    """A message read back from an archive. ``with_jid`` is as it was given when stored."""

    id: str
    stamp: float  # POSIX time, to the microsecond
    with_jid: str
    direction: str
    stanza: str


@dataclass(slots=True, frozen=True)
class ArchiveQuery:
    """What :meth:`Storage.query_archive` returns: filters, then a page of what matches.

    Filters (a message must pass every one given): ``with_jid`` (a bare JID matches every
    resource of that party, a full JID only that resource), ``start`` and ``end`` (inclusive
    POSIX times, to the microsecond), ``after_id`` and ``before_id`` (exclusive: only
    messages after, or before, that one), ``ids`` (only these messages).

    The page: up to ``limit`` matching messages, counted from the oldest (or, with
    ``backward``, from the newest) message of the range left between ``after`` and ``before``
    (exclusive ids, like RSM's ``<after/>`` and ``<before/>``, XEP-0059). A page is always
    returned oldest first.

    ``count``: also count the messages that pass the filters (regardless of the page), up
    to ``count_limit``; counting costs a scan of the matching index range, hence the cap.
    """

    with_jid: str | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] | None = None
    after: str | None = None
    before: str | None = None
    backward: bool = False
    limit: int = 50
    count: bool = True
    count_limit: int = 10_000


@dataclass(slots=True, frozen=True)
class ArchivePage:
    """A page of an archive query.

    ``complete`` is true when no matching message lies beyond the page in the direction of
    paging (after it going forward, before it going backward). ``count`` is the number of
    messages passing the filters; None when not asked for or above the query's
    ``count_limit``.
    """

    messages: list[ArchivedMessage]
    complete: bool
    count: int | None


@dataclass(slots=True, frozen=True)
class ArchivePrefs:
    """Archiving preferences (XEP-0441): which conversations are archived.

    ``default`` is ``always``, ``never`` or ``roster`` (only contacts in the roster); the JIDs
    in ``always`` and ``never`` override it for those parties.
    """

    default: str = "always"
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
