"""Storage behind a gate: every call roost makes to its store passes the ``storage`` gate.

:class:`GatedStorage` is a :class:`~roost.storage.base.Storage` that hands each call to the
store it wraps through the gate, partitioned per database (the SQLite file's name, say), so
that the server and every module keep calling ``server.storage`` as before and cannot bypass
the gate. Opening and closing are not gated: they are the server's own start and stop, and a
gate that refused ``close()`` would lose the writes it flushes.

What counts as a failure of the store (:func:`is_storage_failure`): a
:class:`~roost.storage.base.StorageError`, except one caused by an integrity error (PEP 249's
``IntegrityError``: a write for an account that no longer exists is the caller's mistake, and
a healthy database reports it; a client must not be able to trip the gate with it), and a call
that outlived ``call_timeout``. Anything else that comes out of the store (an unknown archive
id, a bad argument) is an answer and counts as a success.

Errors are translated at this boundary, so that nothing above knows about gates: a call the
gate refuses, or one that timed out, raises :class:`StorageUnavailable`, a StorageError that
says when to try again. :func:`storage_stanza_error` is what a client gets for either kind:
``<resource-constraint/>`` when the store is gated or too slow, ``<internal-server-error/>``
when it failed, both of type ``wait`` (RFC 6120 §8.3.2: "retry after waiting"), so that a
client knows its stanza was not kept and that sending it again later is right. A call that
timed out may still take effect in the store (a SQLite write cannot be withdrawn once
handed to its thread), so a client's retry can store a message twice: delivery stays at least
once, never lost.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from roost.gate.errors import GateRejected
from roost.gate.gate import Gate
from roost.storage.base import (
    ArchivePage,
    ArchivePrefs,
    ArchiveQuery,
    ArchiveRecord,
    OfflineMessage,
    Roster,
    RosterItem,
    ScramCredentials,
    Storage,
    StorageError,
)
from roost.xmpp.errors import StanzaError, resource_constraint

_P = ParamSpec("_P")
_T = TypeVar("_T")

STORAGE_GATE = "storage"


class StorageUnavailable(StorageError):
    """The store was not asked (its gate is open or full), or did not answer in time."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def is_storage_failure(exc: BaseException) -> bool:
    """Whether an exception from the store is its failure (see the module docstring)."""
    if isinstance(exc, StorageError):
        cause = exc.__cause__
        return cause is None or type(cause).__name__ != "IntegrityError"
    return isinstance(exc, TimeoutError | OSError)


def storage_stanza_error(exc: StorageError) -> StanzaError:
    """The stanza error a client gets when the store failed it (see the module docstring)."""
    if isinstance(exc, StorageUnavailable):
        seconds = max(1, math.ceil(exc.retry_after))
        return resource_constraint(f"storage is unavailable; try again in {seconds} s")
    return StanzaError(
        "internal-server-error", "storage failed; try again later", error_type="wait"
    )


def database_name(storage: Storage) -> str:
    """The partition of a store: its database file's name, or its backend's name."""
    path = getattr(storage, "path", None)
    if isinstance(path, Path):
        return path.name
    database = getattr(storage, "database", None)
    return database if isinstance(database, str) and database else storage.name


class GatedStorage(Storage):
    """``inner`` behind ``gate``, in partition ``partition``. See the module docstring."""

    def __init__(self, inner: Storage, gate: Gate, partition: str | None = None) -> None:
        self.inner = inner
        self.gate = gate
        self.partition = partition if partition is not None else database_name(inner)
        self.name = inner.name
        gate.failure = is_storage_failure

    async def _call(
        self, function: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        try:
            async with self.gate.call(self.partition):
                return await function(*args, **kwargs)
        except GateRejected as exc:
            raise StorageUnavailable(
                f"storage {self.partition}: {exc.reason}", exc.retry_after
            ) from exc
        except TimeoutError as exc:
            limit = self.gate.policy.call_timeout
            raise StorageUnavailable(
                f"storage {self.partition}: no answer within {limit:g} s", limit
            ) from exc

    def __repr__(self) -> str:
        return f"<GatedStorage {self.inner!r} partition={self.partition!r}>"

    # -- life cycle (not gated) ------------------------------------------------------------

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def schema_version(self) -> int:
        return await self._call(self.inner.schema_version)

    # -- accounts ----------------------------------------------------------------------------

    async def create_user(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        return await self._call(self.inner.create_user, jid, credentials)

    async def delete_user(self, jid: str) -> bool:
        return await self._call(self.inner.delete_user, jid)

    async def user_exists(self, jid: str) -> bool:
        return await self._call(self.inner.user_exists, jid)

    async def list_users(self, domain: str | None = None) -> list[str]:
        return await self._call(self.inner.list_users, domain)

    async def get_credentials(self, jid: str, mechanism: str) -> ScramCredentials | None:
        return await self._call(self.inner.get_credentials, jid, mechanism)

    async def set_credentials(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        return await self._call(self.inner.set_credentials, jid, credentials)

    # -- roster ------------------------------------------------------------------------------

    async def get_roster(self, jid: str) -> Roster:
        return await self._call(self.inner.get_roster, jid)

    async def get_roster_item(self, jid: str, contact: str) -> RosterItem | None:
        return await self._call(self.inner.get_roster_item, jid, contact)

    async def put_roster_item(self, jid: str, item: RosterItem) -> int:
        return await self._call(self.inner.put_roster_item, jid, item)

    async def delete_roster_item(self, jid: str, contact: str) -> int:
        return await self._call(self.inner.delete_roster_item, jid, contact)

    # -- offline messages ------------------------------------------------------------------

    async def store_offline(self, jid: str, stanza: str, stamp: float, sender: str = "") -> int:
        return await self._call(self.inner.store_offline, jid, stanza, stamp, sender)

    async def count_offline(self, jid: str) -> int:
        return await self._call(self.inner.count_offline, jid)

    async def fetch_offline(self, jid: str, limit: int = 1000) -> list[OfflineMessage]:
        return await self._call(self.inner.fetch_offline, jid, limit)

    async def delete_offline(self, jid: str, ids: list[int]) -> None:
        await self._call(self.inner.delete_offline, jid, ids)

    async def expire_offline(self, before: float) -> int:
        return await self._call(self.inner.expire_offline, before)

    # -- vCard-temp ------------------------------------------------------------------------

    async def get_vcard(self, jid: str) -> str | None:
        return await self._call(self.inner.get_vcard, jid)

    async def set_vcard(self, jid: str, vcard: str | None) -> None:
        await self._call(self.inner.set_vcard, jid, vcard)

    # -- blocking (XEP-0191) -----------------------------------------------------------------

    async def get_blocklist(self, jid: str) -> list[str]:
        return await self._call(self.inner.get_blocklist, jid)

    async def block(self, jid: str, items: list[str]) -> None:
        await self._call(self.inner.block, jid, items)

    async def unblock(self, jid: str, items: list[str] | None) -> None:
        await self._call(self.inner.unblock, jid, items)

    # -- message archive (XEP-0313) ------------------------------------------------------------

    async def archive_messages(self, records: list[ArchiveRecord]) -> None:
        await self._call(self.inner.archive_messages, records)

    async def query_archive(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        return await self._call(self.inner.query_archive, owner, query)

    async def last_archive_seq(self) -> int:
        return await self._call(self.inner.last_archive_seq)

    async def get_archive_prefs(self, owner: str) -> ArchivePrefs | None:
        return await self._call(self.inner.get_archive_prefs, owner)

    async def set_archive_prefs(self, owner: str, prefs: ArchivePrefs) -> None:
        await self._call(self.inner.set_archive_prefs, owner, prefs)

    async def expire_archive(self, before: float) -> int:
        return await self._call(self.inner.expire_archive, before)
