"""The embedded SQLite backend of :class:`~roost.storage.base.Storage`: one file, no server.

Why a thread. The stdlib :mod:`sqlite3` module blocks: a query waits for the disk, a commit for
the write-ahead log, and a write for the lock another process (the ``roost user add`` CLI) may
hold, up to the busy timeout. None of that may happen on the event loop, which serves every
connected client. So each :class:`SQLiteStorage` owns one thread
(:class:`~roost.storage.sqlite_thread.StorageThread`), which opens the connection, runs every
statement and closes it; coroutines hand it work through a queue and await an
:class:`asyncio.Future` that the thread settles through ``call_soon_threadsafe``. One thread
rather than a pool, because SQLite admits one writer at a time anyway, and a single owner needs
no locking around the connection and sees its own writes in order.

Why group commit. Committing is the expensive part of a small write: each commit appends every
page it touched to the WAL (for a burst of inserts, the same table and index pages again and
again), takes and releases the file's write lock, and costs a round trip to the thread. A busy
server issues many small writes at once (a message to a large group of offline users is one
``store_offline`` per user), and committing each alone would cap it at the commit rate of the
disk. Instead:

- operations issued during one turn of the event loop are collected and handed to the thread
  together, at the end of that turn (``call_soon``), so a burst arrives as one batch;
- the thread takes every batch waiting in the queue, runs their operations in one transaction
  (up to a bound, so that the write lock is never held for long) and commits once;
- each operation runs inside its own ``SAVEPOINT``: one that raises is rolled back to its
  savepoint and fails only its own caller, while the others of the transaction still commit;
- callers learn their result only after the commit succeeded, so a write that was answered is
  committed. Should the commit fail, every write of the transaction fails.

While the thread commits one transaction the next one accumulates, so the batch size adapts to
the load by itself: one operation at a time when idle, hundreds per commit under a burst.
:meth:`SQLiteStorage.statistics` counts operations and commits, to observe it.

Reads share the thread and the batching; a batch of reads only runs in a deferred (read)
transaction, which gives multi-statement reads such as :meth:`SQLiteStorage.get_roster` a
consistent snapshot and costs no commit. A batch with a write begins with ``BEGIN IMMEDIATE``:
it takes the write lock up front, so waiting for another process goes through the busy timeout;
a deferred transaction that tried to upgrade from reading to writing would fail at once instead.

The connection runs in WAL mode (readers in other processes never block the writer, nor the
other way round), with ``synchronous=NORMAL`` (a commit does not wait for fsync; a power cut can
lose the last commits but never corrupts the file), a busy timeout (other processes write the
same file), a page cache larger than SQLite's default (``CACHE_KIB``, for the archive's writes)
and foreign keys on: every per-account table references ``users``, so deleting an account
deletes everything stored for it in the same transaction, and a write for an account that does
not exist fails with :class:`StorageError` rather than leaving data for a future account of the
same name to inherit.

The schema is versioned (:mod:`roost.storage.migrations`, ``sqlite_*.sql``). :meth:`open` brings
the file to the latest version under ``BEGIN IMMEDIATE``, so that a server and a CLI opening a
new file at the same time migrate it once, and records it in ``PRAGMA user_version``.

Every :class:`sqlite3.Error` reaches callers as :class:`StorageError`. A store serves one
event loop. Cancelling a call does not cancel its operation, which may still take effect.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from roost.storage import migrations
from roost.storage import sqlite_archive as archive
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
from roost.storage.sqlite_thread import THREAD_NICE, SQLiteStatistics, StorageThread, roll_back

__all__ = ["SQLiteStatistics", "SQLiteStorage"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_MIGRATIONS = migrations.load("sqlite")

# The connection's page cache, in KiB (SQLite's default is 2 MiB). Archive writes touch one
# index page per owner of each batch (see archive.ChunkWriter): with the default, a batch for a
# thousand users already evicts the pages it is about to write again, and each one is read back
# from the file. Pages are cached only as they are used, so a small database stays small.
CACHE_KIB = 32 * 1024


class SQLiteStorage(Storage):
    """:class:`Storage` in one SQLite file. See the module docstring."""

    name = "sqlite"

    def __init__(
        self, path: Path, *, busy_timeout: float = 5.0, thread_nice: int = THREAD_NICE
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._worker = StorageThread(str(path), self._connect, _disconnect, nice=thread_nice)
        self._archive = archive.ChunkWriter()  # used on the storage thread only

    @property
    def path(self) -> Path:
        return self._path

    def statistics(self) -> SQLiteStatistics:
        """A snapshot of the storage thread's counters (to observe group commit)."""
        return self._worker.statistics()

    # -- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._worker.start()

    async def close(self) -> None:
        await self._worker.stop()

    async def schema_version(self) -> int:
        return await self._read(_schema_version, "")

    # -- accounts ----------------------------------------------------------------------------

    async def create_user(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        return await self._write(_create_user, jid, list(credentials), time.time())

    async def delete_user(self, jid: str) -> bool:
        return await self._write(_delete_user, jid)

    async def user_exists(self, jid: str) -> bool:
        return await self._read(_user_exists, jid)

    async def list_users(self, domain: str | None = None) -> list[str]:
        return await self._read(_list_users, domain or "", domain is not None)

    async def get_credentials(self, jid: str, mechanism: str) -> ScramCredentials | None:
        return await self._read(_get_credentials, jid, mechanism)

    async def set_credentials(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        return await self._write(_set_credentials, jid, list(credentials))

    # -- roster ------------------------------------------------------------------------------

    async def get_roster(self, jid: str) -> Roster:
        return await self._read(_get_roster, jid)

    async def get_roster_item(self, jid: str, contact: str) -> RosterItem | None:
        return await self._read(_get_roster_item, jid, contact)

    async def put_roster_item(self, jid: str, item: RosterItem) -> int:
        # A copy: the caller may mutate its item before the thread gets to it.
        return await self._write(_put_roster_item, jid, dataclasses.replace(item))

    async def delete_roster_item(self, jid: str, contact: str) -> int:
        return await self._write(_delete_roster_item, jid, contact)

    # -- offline messages --------------------------------------------------------------------

    async def store_offline(self, jid: str, stanza: str, stamp: float, sender: str = "") -> int:
        return await self._write(_store_offline, jid, stanza, stamp, sender)

    async def count_offline(self, jid: str) -> int:
        return await self._read(_count_offline, jid)

    async def fetch_offline(self, jid: str, limit: int = 1000) -> list[OfflineMessage]:
        return await self._read(_fetch_offline, jid, limit)

    async def delete_offline(self, jid: str, ids: list[int]) -> None:
        await self._write(_delete_offline, jid, list(ids))

    async def expire_offline(self, before: float) -> int:
        return await self._write(_expire_offline, "", before)

    # -- vCard-temp --------------------------------------------------------------------------

    async def get_vcard(self, jid: str) -> str | None:
        return await self._read(_get_vcard, jid)

    async def set_vcard(self, jid: str, vcard: str | None) -> None:
        await self._write(_set_vcard, jid, vcard)

    # -- blocking ----------------------------------------------------------------------------

    async def get_blocklist(self, jid: str) -> list[str]:
        return await self._read(_get_blocklist, jid)

    async def block(self, jid: str, items: list[str]) -> None:
        await self._write(_block, jid, list(items))

    async def unblock(self, jid: str, items: list[str] | None) -> None:
        await self._write(_unblock, jid, None if items is None else list(items))

    # -- message archive -----------------------------------------------------------------------

    async def archive_messages(self, records: list[ArchiveRecord]) -> None:
        if records:
            await self._write(self._archive.write, "", list(records))

    async def query_archive(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        return await self._read(archive.query_page, owner, query)

    async def last_archive_seq(self) -> int:
        return await self._read(archive.last_seq, "")

    async def get_archive_prefs(self, owner: str) -> ArchivePrefs | None:
        return await self._read(archive.get_prefs, owner)

    async def set_archive_prefs(self, owner: str, prefs: ArchivePrefs) -> None:
        await self._write(archive.set_prefs, owner, prefs)

    async def expire_archive(self, before: float) -> int:
        return await self._write(archive.expire, "", before)

    # -- plumbing ----------------------------------------------------------------------------

    async def _read(
        self,
        function: Callable[Concatenate[sqlite3.Connection, str, _P], _T],
        jid: str,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        return await self._worker.submit(
            lambda connection: function(connection, jid, *args, **kwargs),
            writes=False,
            what=f"{function.__name__.strip('_')} {jid}".rstrip(),
        )

    async def _write(
        self,
        function: Callable[Concatenate[sqlite3.Connection, str, _P], _T],
        jid: str,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        return await self._worker.submit(
            lambda connection: function(connection, jid, *args, **kwargs),
            writes=True,
            what=f"{function.__name__.strip('_')} {jid}",
        )

    # Run on the storage thread.

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            mode = self._enable_wal(connection)
            if mode != "wal":
                raise StorageError(f"{self._path}: cannot use WAL journal mode (got {mode!r})")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(f"PRAGMA cache_size = -{CACHE_KIB:d}")
            connection.execute("PRAGMA foreign_keys = ON")
            (foreign_keys,) = connection.execute("PRAGMA foreign_keys").fetchone()
            if foreign_keys != 1:
                raise StorageError("this SQLite library does not enforce foreign keys")
            self._migrate(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _enable_wal(self, connection: sqlite3.Connection) -> str:
        # Switching a file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at
        # once instead of calling the busy handler: retry until the busy timeout, for when two
        # processes (or stores) open a new file at the same time. Sleeping is fine here, on the
        # storage thread, before anyone can be waiting on it.
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            try:
                (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as error:
                busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        # IMMEDIATE: of two processes opening a new file at once, the second waits, then finds
        # the file migrated.
        connection.execute("BEGIN IMMEDIATE")
        try:
            (current,) = connection.execute("PRAGMA user_version").fetchone()
            steps = migrations.plan(_MIGRATIONS, current, database=str(self._path))
            for step in steps:
                for statement in _statements(step.sql):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {step.version:d}")
            if steps and connection.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise StorageError(f"{self._path}: migration left dangling references")
            connection.execute("COMMIT")
        except BaseException:
            roll_back(connection)
            raise


def _disconnect(connection: sqlite3.Connection) -> None:
    try:
        # Recommended before closing a long-lived connection: refreshes the query planner's
        # statistics where they went stale. It is an optimisation only: when another process
        # holds the write lock (nodes of one machine share the file), closing must still succeed.
        connection.execute("PRAGMA optimize")
    except sqlite3.OperationalError:
        pass
    finally:
        connection.close()


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements.

    ``executescript`` would be simpler, but it commits first, outside the migration's
    transaction. ``complete_statement`` knows about quotes and trigger bodies, so a ``;`` inside
    them does not end a statement.
    """
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


# -- operations, run by the storage thread -------------------------------------------------------


def _schema_version(connection: sqlite3.Connection, _: str) -> int:
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    return int(version)


def _create_user(
    connection: sqlite3.Connection, jid: str, credentials: list[ScramCredentials], created: float
) -> bool:
    inserted = connection.execute(
        "INSERT INTO users (jid, domain, created) VALUES (?, ?, ?) ON CONFLICT (jid) DO NOTHING",
        (jid, jid.rpartition("@")[2], created),
    )
    if inserted.rowcount == 0:
        return False
    _insert_credentials(connection, jid, credentials)
    return True


def _delete_user(connection: sqlite3.Connection, jid: str) -> bool:
    # The foreign keys cascade to credentials, roster, roster_version, offline and vcard.
    return connection.execute("DELETE FROM users WHERE jid = ?", (jid,)).rowcount > 0


def _user_exists(connection: sqlite3.Connection, jid: str) -> bool:
    return connection.execute("SELECT 1 FROM users WHERE jid = ?", (jid,)).fetchone() is not None


def _list_users(connection: sqlite3.Connection, domain: str, filtered: bool) -> list[str]:
    if filtered:
        rows = connection.execute("SELECT jid FROM users WHERE domain = ? ORDER BY jid", (domain,))
    else:
        rows = connection.execute("SELECT jid FROM users ORDER BY jid")
    return [jid for (jid,) in rows]


def _get_credentials(
    connection: sqlite3.Connection, jid: str, mechanism: str
) -> ScramCredentials | None:
    row = connection.execute(
        "SELECT salt, iterations, stored_key, server_key FROM credentials"
        " WHERE jid = ? AND mechanism = ?",
        (jid, mechanism),
    ).fetchone()
    if row is None:
        return None
    salt, iterations, stored_key, server_key = row
    return ScramCredentials(
        mechanism, bytes(salt), iterations, bytes(stored_key), bytes(server_key)
    )


def _set_credentials(
    connection: sqlite3.Connection, jid: str, credentials: list[ScramCredentials]
) -> bool:
    if not _user_exists(connection, jid):
        return False
    connection.execute("DELETE FROM credentials WHERE jid = ?", (jid,))
    _insert_credentials(connection, jid, credentials)
    return True


def _insert_credentials(
    connection: sqlite3.Connection, jid: str, credentials: list[ScramCredentials]
) -> None:
    connection.executemany(
        "INSERT INTO credentials (jid, mechanism, salt, iterations, stored_key, server_key)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(jid, c.mechanism, c.salt, c.iterations, c.stored_key, c.server_key) for c in credentials],
    )


_ROSTER_COLUMNS = (
    "contact, name, subscription, ask, pending_in, approved, groups, pending_in_stanza, in_roster"
)


def _roster_item(row: tuple[Any, ...]) -> RosterItem:
    (
        contact,
        name,
        subscription,
        ask,
        pending_in,
        approved,
        groups,
        pending_in_stanza,
        in_roster,
    ) = row
    return RosterItem(
        jid=contact,
        name=name,
        subscription=subscription,
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(json.loads(groups)),
        pending_in_stanza=pending_in_stanza,
        in_roster=bool(in_roster),
    )


def _roster_version(connection: sqlite3.Connection, owner: str) -> int:
    row = connection.execute(
        "SELECT version FROM roster_version WHERE owner = ?", (owner,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _bump_roster_version(connection: sqlite3.Connection, owner: str) -> int:
    (version,) = connection.execute(
        "INSERT INTO roster_version (owner, version) VALUES (?, 1)"
        " ON CONFLICT (owner) DO UPDATE SET version = version + 1 RETURNING version",
        (owner,),
    ).fetchone()
    return int(version)


def _get_roster(connection: sqlite3.Connection, owner: str) -> Roster:
    rows = connection.execute(
        f"SELECT {_ROSTER_COLUMNS} FROM roster WHERE owner = ? ORDER BY contact", (owner,)
    )
    items = [_roster_item(row) for row in rows]
    return Roster(_roster_version(connection, owner), items)


def _get_roster_item(connection: sqlite3.Connection, owner: str, contact: str) -> RosterItem | None:
    row = connection.execute(
        f"SELECT {_ROSTER_COLUMNS} FROM roster WHERE owner = ? AND contact = ?", (owner, contact)
    ).fetchone()
    return None if row is None else _roster_item(row)


def _put_roster_item(connection: sqlite3.Connection, owner: str, item: RosterItem) -> int:
    connection.execute(
        f"INSERT OR REPLACE INTO roster (owner, {_ROSTER_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            owner,
            item.jid,
            item.name,
            item.subscription,
            int(item.ask),
            int(item.pending_in),
            int(item.approved),
            json.dumps(list(item.groups), ensure_ascii=False),
            item.pending_in_stanza,
            int(item.in_roster),
        ),
    )
    return _bump_roster_version(connection, owner)


def _delete_roster_item(connection: sqlite3.Connection, owner: str, contact: str) -> int:
    deleted = connection.execute(
        "DELETE FROM roster WHERE owner = ? AND contact = ?", (owner, contact)
    )
    if deleted.rowcount == 0:
        # Nothing changed, so neither does the version a client may already hold.
        return _roster_version(connection, owner)
    return _bump_roster_version(connection, owner)


def _store_offline(
    connection: sqlite3.Connection, owner: str, stanza: str, stamp: float, sender: str
) -> int:
    inserted = connection.execute(
        "INSERT INTO offline (owner, sender, stamp, stanza) VALUES (?, ?, ?, ?)",
        (owner, sender, stamp, stanza),
    )
    assert inserted.lastrowid is not None  # always set after an INSERT into a rowid table
    return inserted.lastrowid


def _count_offline(connection: sqlite3.Connection, owner: str) -> int:
    (count,) = connection.execute(
        "SELECT count(*) FROM offline WHERE owner = ?", (owner,)
    ).fetchone()
    return int(count)


def _fetch_offline(connection: sqlite3.Connection, owner: str, limit: int) -> list[OfflineMessage]:
    rows = connection.execute(
        "SELECT id, stanza, stamp, sender FROM offline WHERE owner = ? ORDER BY id LIMIT ?",
        (owner, max(limit, 0)),  # a negative LIMIT would mean "no limit" to SQLite
    )
    return [OfflineMessage(id, stanza, stamp, sender) for id, stanza, stamp, sender in rows]


def _delete_offline(connection: sqlite3.Connection, owner: str, ids: list[int]) -> None:
    # The owner condition keeps one user from deleting another's messages by id.
    connection.executemany(
        "DELETE FROM offline WHERE owner = ? AND id = ?", [(owner, id) for id in ids]
    )


def _expire_offline(connection: sqlite3.Connection, _: str, before: float) -> int:
    return connection.execute("DELETE FROM offline WHERE stamp < ?", (before,)).rowcount


def _get_vcard(connection: sqlite3.Connection, owner: str) -> str | None:
    row = connection.execute("SELECT xml FROM vcard WHERE owner = ?", (owner,)).fetchone()
    return None if row is None else str(row[0])


def _set_vcard(connection: sqlite3.Connection, owner: str, vcard: str | None) -> None:
    if vcard is None:
        connection.execute("DELETE FROM vcard WHERE owner = ?", (owner,))
    else:
        connection.execute(
            "INSERT OR REPLACE INTO vcard (owner, xml) VALUES (?, ?)", (owner, vcard)
        )


def _get_blocklist(connection: sqlite3.Connection, owner: str) -> list[str]:
    rows = connection.execute(
        "SELECT blocked FROM blocklist WHERE owner = ? ORDER BY blocked", (owner,)
    )
    return [str(row[0]) for row in rows]


def _block(connection: sqlite3.Connection, owner: str, items: list[str]) -> None:
    connection.executemany(
        "INSERT OR IGNORE INTO blocklist (owner, blocked) VALUES (?, ?)",
        [(owner, item) for item in items],
    )


def _unblock(connection: sqlite3.Connection, owner: str, items: list[str] | None) -> None:
    if items is None:
        connection.execute("DELETE FROM blocklist WHERE owner = ?", (owner,))
    else:
        connection.executemany(
            "DELETE FROM blocklist WHERE owner = ? AND blocked = ?",
            [(owner, item) for item in items],
        )
