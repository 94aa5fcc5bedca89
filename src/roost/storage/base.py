"""The storage interface: everything roost keeps durably, behind one async API.

Protocol code never talks SQL. It calls a :class:`Storage`, which the SQLite backend
(:mod:`roost.storage.sqlite`, the embedded default) implements, and which a PostgreSQL backend
implements for deployments of more than one machine. Both run the same test suite
(``tests/storage``).

Accounts are keyed by their bare JID string (``alice@example.org``), so one store can hold
several virtual hosts. Passwords are never stored: an account has SCRAM credentials (salt,
iteration count, StoredKey, ServerKey; RFC 5802 §3) for each hash it supports, from which
SCRAM logins are verified directly and PLAIN logins by recomputing the StoredKey.

Every method is a coroutine and never blocks the event loop.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


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
