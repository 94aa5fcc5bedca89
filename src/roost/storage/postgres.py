"""The PostgreSQL backend of :class:`~roost.storage.base.Storage`: one database for many nodes.

SQLite keeps a deployment on one machine; nodes on several machines share a PostgreSQL database
instead (``storage.url = "postgresql://roost@db.example.org/roost"``). The semantics are those
of the SQLite backend, and both pass the same test suite (``tests/storage``): roster versions
bumped by every change, offline ids that never repeat, archive ids that begin with their seq,
and every per-account row removed with its account (``ON DELETE CASCADE``).

Why a pool. The driver (asyncpg) is asynchronous, so no thread is needed; but one connection
runs one statement at a time, and a node issues many at once (a message to a group of offline
users is one ``store_offline`` each). Each call therefore borrows a connection from a pool of
at most ``pool_size`` (default 10) and returns it when done, so that up to that many statements
of one node run in parallel on the server, and the rest wait their turn in the pool rather
than on the server. The bound is deliberate: PostgreSQL allots a process to each connection and
refuses connections past ``max_connections`` (100 by default), so nodes times ``pool_size`` must
stay below it. The pool starts with one connection and grows on demand.

Why (almost) no transactions. Every call that must change several rows at once does so in one
statement where it can: a roster change and the bump of the roster version are one ``INSERT``
with a data-modifying ``WITH``, an archive batch is one ``INSERT ... SELECT FROM unnest(...)``
that skips unknown owners and repeated records, and a roster with its version is one ``SELECT``,
so one snapshot. A statement is atomic by itself, and each costs one round trip where an
explicit transaction would add ``BEGIN`` and ``COMMIT``. Only the rare account operations
(creating an account with its credentials, replacing credentials) run in a transaction. Calls
answered after the statement returned are committed (autocommit): a write that was answered
is durable.

Why an advisory lock. Nodes of a cluster typically start together, and each brings the schema
to the latest version when it opens (:mod:`roost.storage.migrations`, ``postgresql_*.sql``).
:meth:`PostgresStorage.open` migrates in one transaction that first takes a transaction-level
advisory lock (:data:`MIGRATION_LOCK`; released by the commit): the first node migrates, the
others wait for it, then find the schema current and do nothing. The version is recorded in a
``schema_version`` table, one row per step with the time it ran. Without the lock, two nodes
would both see version 0 and the second would fail on tables the first just created.

Errors. Every driver or connection error reaches callers as :class:`StorageError`. A violated
constraint (a write for an account that does not exist) is chained to an
:class:`IntegrityError`, PEP 249's name for it, which the storage gate
(:mod:`roost.gate.storage`) counts as the caller's mistake rather than a failing store. A store
serves one event loop. Cancelling a call abandons its statement, which may still take effect,
and closes its connection at once (rather than waiting for the server to confirm the
cancellation: a stalled server never does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from roost.storage import migrations
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
from roost.storage.postgres_archive import ARCHIVE_INSERT, archive_parameters, query_archive

__all__ = [
    "MIGRATION_LOCK",
    "TABLES",
    "URL_SCHEMES",
    "IntegrityError",
    "PostgresStatistics",
    "PostgresStorage",
    "redact_url",
]

URL_SCHEMES = ("postgresql", "postgres")

# The key of the advisory lock held while migrating: the bytes "roost-db" as a bigint. Advisory
# locks are per database, so deployments sharing a PostgreSQL server do not wait for each other.
MIGRATION_LOCK = int.from_bytes(b"roost-db", "big")

_MIGRATIONS = migrations.load("postgresql")

_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    summary text NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
)
"""

# What the driver and the network raise. asyncpg.PostgresError covers the server's errors and
# lost connections, InterfaceError misuse such as a closed pool.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

# Every table, in an order that respects the foreign keys (users first).
TABLES = (
    "users",
    "credentials",
    "roster",
    "roster_version",
    "offline",
    "vcard",
    "blocklist",
    "archive",
    "archive_prefs",
)


class IntegrityError(Exception):
    """A write broke a constraint of the schema (PEP 249's name). The cause of a StorageError."""


@dataclass(slots=True, frozen=True)
class PostgresStatistics:
    """A snapshot of a store's pool and counters."""

    connections: int  # open now, idle or lent
    idle: int  # open and not lent
    max_connections: int  # the pool's bound
    operations: int  # calls made since it opened
    failed: int  # calls that raised a StorageError


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``, for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
    except ValueError:
        return "(an invalid URL)"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class PostgresStorage(Storage):
    """:class:`Storage` in a PostgreSQL database. See the module docstring.

    ``dsn`` is a libpq connection URL (``postgresql://user:password@host:port/database``);
    what it leaves out comes from the ``PG*`` environment variables and ``~/.pgpass``, as
    with ``psql``.
    """

    name = "postgresql"

    def __init__(self, dsn: str, *, pool_size: int = 10, connect_timeout: float = 10.0) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self._dsn = dsn
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: Any = None  # an asyncpg.Pool while open
        self._closed = False
        self._operations = 0
        self._failed = 0

    @property
    def url(self) -> str:
        """The connection URL without its password."""
        return redact_url(self._dsn)

    @property
    def database(self) -> str:
        """The database's name as the URL gives it ('' when it leaves it to the defaults)."""
        try:
            return urlsplit(self._dsn).path.lstrip("/")
        except ValueError:
            return ""

    def __repr__(self) -> str:
        if self._pool is not None:
            state = f"pool={self._pool.get_size()}/{self._pool_size}"
        else:
            state = "closed" if self._closed else "not open"
        return f"<PostgresStorage {self.url} {state}>"

    def statistics(self) -> PostgresStatistics:
        pool = self._pool
        return PostgresStatistics(
            connections=0 if pool is None else int(pool.get_size()),
            idle=0 if pool is None else int(pool.get_idle_size()),
            max_connections=self._pool_size,
            operations=self._operations,
            failed=self._failed,
        )

    # -- life cycle --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None or self._closed:
            raise StorageError(f"{self!r} cannot be opened again")
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                server_settings=self._server_settings(),
            )
        except (*_DRIVER_ERRORS, ValueError) as error:
            raise StorageError(f"{self.url}: cannot connect: {error}") from error
        try:
            async with pool.acquire() as connection:
                await self._migrate(connection)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    def _server_settings(self) -> dict[str, str]:
        # Names the connections in pg_stat_activity, unless the URL names them itself
        # (?application_name=roost-node1): parameters of the URL other than libpq's own are
        # settings of the session, as with libpq's "options".
        try:
            query = parse_qs(urlsplit(self._dsn).query)
        except ValueError:
            query = {}
        return {} if "application_name" in query else {"application_name": "roost"}

    async def _migrate(self, connection: Any) -> None:
        try:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await connection.execute(_SCHEMA_VERSION_TABLE)
                current = await connection.fetchval(
                    "SELECT coalesce(max(version), 0) FROM schema_version"
                )
                for step in migrations.plan(_MIGRATIONS, int(current), database=self.url):
                    await connection.execute(step.sql)
                    await connection.execute(
                        "INSERT INTO schema_version (version, summary) VALUES ($1, $2)",
                        step.version,
                        step.summary,
                    )
        except _DRIVER_ERRORS as error:
            raise StorageError(f"{self.url}: cannot migrate the schema: {error}") from error

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self._closed = True
        if pool is None:
            return
        try:
            # Waits for the calls in flight to give their connections back, for a while.
            await asyncio.wait_for(pool.close(), self._connect_timeout)
        except TimeoutError:
            pool.terminate()
        except BaseException:
            pool.terminate()
            raise

    async def schema_version(self) -> int:
        async with self._connection("schema_version") as connection:
            return int(
                await connection.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            )

    # -- accounts ----------------------------------------------------------------------------

    async def create_user(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        async with self._transaction(f"create_user {jid}") as connection:
            created = await connection.fetchval(
                "INSERT INTO users (jid, domain, created) VALUES ($1, $2, $3)"
                " ON CONFLICT (jid) DO NOTHING RETURNING true",
                jid,
                jid.rpartition("@")[2],
                time.time(),
            )
            if not created:
                return False
            await _insert_credentials(connection, jid, credentials)
            return True

    async def delete_user(self, jid: str) -> bool:
        # The foreign keys cascade to everything the account owns.
        async with self._connection(f"delete_user {jid}") as connection:
            deleted = await connection.fetchval(
                "DELETE FROM users WHERE jid = $1 RETURNING true", jid
            )
            return deleted is not None

    async def user_exists(self, jid: str) -> bool:
        async with self._connection(f"user_exists {jid}") as connection:
            return bool(
                await connection.fetchval("SELECT EXISTS (SELECT FROM users WHERE jid = $1)", jid)
            )

    async def list_users(self, domain: str | None = None) -> list[str]:
        async with self._connection(f"list_users {domain or ''}".rstrip()) as connection:
            if domain is None:
                rows = await connection.fetch("SELECT jid FROM users ORDER BY jid")
            else:
                rows = await connection.fetch(
                    "SELECT jid FROM users WHERE domain = $1 ORDER BY jid", domain
                )
        return [str(row[0]) for row in rows]

    async def get_credentials(self, jid: str, mechanism: str) -> ScramCredentials | None:
        async with self._connection(f"get_credentials {jid}") as connection:
            row = await connection.fetchrow(
                "SELECT salt, iterations, stored_key, server_key FROM credentials"
                " WHERE jid = $1 AND mechanism = $2",
                jid,
                mechanism,
            )
        if row is None:
            return None
        salt, iterations, stored_key, server_key = row
        return ScramCredentials(
            mechanism, bytes(salt), int(iterations), bytes(stored_key), bytes(server_key)
        )

    async def set_credentials(self, jid: str, credentials: list[ScramCredentials]) -> bool:
        async with self._transaction(f"set_credentials {jid}") as connection:
            # FOR KEY SHARE, the lock a foreign key takes: the account cannot be deleted
            # between this check and the insert.
            found = await connection.fetchval(
                "SELECT true FROM users WHERE jid = $1 FOR KEY SHARE", jid
            )
            if not found:
                return False
            await connection.execute("DELETE FROM credentials WHERE jid = $1", jid)
            await _insert_credentials(connection, jid, credentials)
            return True

    # -- roster ------------------------------------------------------------------------------

    async def get_roster(self, jid: str) -> Roster:
        # One statement, so one snapshot: the version is that of the items returned. The
        # LEFT JOIN yields one row (with no item) for an empty roster.
        async with self._connection(f"get_roster {jid}") as connection:
            rows = await connection.fetch(
                f"SELECT v.version, {_ROSTER_COLUMNS_OF_R}"
                " FROM (SELECT coalesce(max(version), 0) AS version FROM roster_version"
                "       WHERE owner = $1) AS v"
                " LEFT JOIN roster AS r ON r.owner = $1"
                " ORDER BY r.contact",
                jid,
            )
        version = int(rows[0][0])
        return Roster(version, [_roster_item(row[1:]) for row in rows if row[1] is not None])

    async def get_roster_item(self, jid: str, contact: str) -> RosterItem | None:
        async with self._connection(f"get_roster_item {jid}") as connection:
            row = await connection.fetchrow(
                f"SELECT {_ROSTER_COLUMNS} FROM roster WHERE owner = $1 AND contact = $2",
                jid,
                contact,
            )
        return None if row is None else _roster_item(tuple(row))

    async def put_roster_item(self, jid: str, item: RosterItem) -> int:
        # The item and the version change in one statement. Concurrent changes of one roster
        # queue on the version's row, so each gets its own version, in commit order.
        async with self._connection(f"put_roster_item {jid}") as connection:
            version = await connection.fetchval(
                f"WITH item AS (INSERT INTO roster (owner, {_ROSTER_COLUMNS})"
                "   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                "   ON CONFLICT (owner, contact) DO UPDATE SET"
                "   name = excluded.name, subscription = excluded.subscription,"
                "   ask = excluded.ask, pending_in = excluded.pending_in,"
                "   approved = excluded.approved, groups = excluded.groups,"
                "   pending_in_stanza = excluded.pending_in_stanza,"
                "   in_roster = excluded.in_roster)"
                f" {_BUMP_ROSTER_VERSION} VALUES ($1, 1) {_BUMP_ON_CONFLICT}",
                jid,
                item.jid,
                item.name,
                item.subscription,
                item.ask,
                item.pending_in,
                item.approved,
                list(item.groups),
                item.pending_in_stanza,
                item.in_roster,
            )
        return int(version)

    async def delete_roster_item(self, jid: str, contact: str) -> int:
        async with self._connection(f"delete_roster_item {jid}") as connection:
            version = await connection.fetchval(
                "WITH gone AS (DELETE FROM roster WHERE owner = $1 AND contact = $2 RETURNING 1)"
                f" {_BUMP_ROSTER_VERSION} SELECT $1, 1 FROM gone {_BUMP_ON_CONFLICT}",
                jid,
                contact,
            )
            if version is None:
                # Nothing changed, so neither does the version a client may already hold.
                # Read in a statement of its own: it sees a change committed meanwhile.
                version = await connection.fetchval(
                    "SELECT coalesce(max(version), 0) FROM roster_version WHERE owner = $1", jid
                )
        return int(version)

    # -- offline messages --------------------------------------------------------------------

    async def store_offline(self, jid: str, stanza: str, stamp: float, sender: str = "") -> int:
        async with self._connection(f"store_offline {jid}") as connection:
            id = await connection.fetchval(
                "INSERT INTO offline (owner, sender, stamp, stanza) VALUES ($1, $2, $3, $4)"
                " RETURNING id",
                jid,
                sender,
                stamp,
                stanza,
            )
        return int(id)

    async def count_offline(self, jid: str) -> int:
        async with self._connection(f"count_offline {jid}") as connection:
            return int(
                await connection.fetchval("SELECT count(*) FROM offline WHERE owner = $1", jid)
            )

    async def fetch_offline(self, jid: str, limit: int = 1000) -> list[OfflineMessage]:
        async with self._connection(f"fetch_offline {jid}") as connection:
            rows = await connection.fetch(
                "SELECT id, stanza, stamp, sender FROM offline WHERE owner = $1"
                " ORDER BY id LIMIT $2",
                jid,
                max(limit, 0),
            )
        return [
            OfflineMessage(int(id), str(stanza), float(stamp), str(sender))
            for id, stanza, stamp, sender in rows
        ]

    async def expire_offline(self, before: float) -> int:
        async with self._connection("expire_offline") as connection:
            status = await connection.execute("DELETE FROM offline WHERE stamp < $1", before)
        return _deleted(status)

    async def delete_offline(self, jid: str, ids: list[int]) -> None:
        if not ids:
            return
        # The owner condition keeps one user from deleting another's messages by id.
        async with self._connection(f"delete_offline {jid}") as connection:
            await connection.execute(
                "DELETE FROM offline WHERE owner = $1 AND id = ANY($2::bigint[])", jid, list(ids)
            )

    # -- vCard-temp --------------------------------------------------------------------------

    async def get_vcard(self, jid: str) -> str | None:
        async with self._connection(f"get_vcard {jid}") as connection:
            xml = await connection.fetchval("SELECT xml FROM vcard WHERE owner = $1", jid)
        return None if xml is None else str(xml)

    async def set_vcard(self, jid: str, vcard: str | None) -> None:
        async with self._connection(f"set_vcard {jid}") as connection:
            if vcard is None:
                await connection.execute("DELETE FROM vcard WHERE owner = $1", jid)
            else:
                await connection.execute(
                    "INSERT INTO vcard (owner, xml) VALUES ($1, $2)"
                    " ON CONFLICT (owner) DO UPDATE SET xml = excluded.xml",
                    jid,
                    vcard,
                )

    # -- blocking ----------------------------------------------------------------------------

    async def get_blocklist(self, jid: str) -> list[str]:
        async with self._connection(f"get_blocklist {jid}") as connection:
            rows = await connection.fetch(
                "SELECT blocked FROM blocklist WHERE owner = $1 ORDER BY blocked", jid
            )
        return [str(row[0]) for row in rows]

    async def block(self, jid: str, items: list[str]) -> None:
        if not items:
            return
        async with self._connection(f"block {jid}") as connection:
            await connection.execute(
                "INSERT INTO blocklist (owner, blocked) SELECT $1, unnest($2::text[])"
                " ON CONFLICT DO NOTHING",
                jid,
                list(items),
            )

    async def unblock(self, jid: str, items: list[str] | None) -> None:
        async with self._connection(f"unblock {jid}") as connection:
            if items is None:
                await connection.execute("DELETE FROM blocklist WHERE owner = $1", jid)
            elif items:
                await connection.execute(
                    "DELETE FROM blocklist WHERE owner = $1 AND blocked = ANY($2::text[])",
                    jid,
                    list(items),
                )

    # -- message archive -----------------------------------------------------------------------

    async def archive_messages(self, records: list[ArchiveRecord]) -> None:
        if not records:
            return
        parameters = await archive_parameters(records)
        async with self._connection(f"archive_messages ({len(records)})") as connection:
            # An account deleted between a statement's snapshot (EXISTS says it is there)
            # and its foreign key check fails the statement; the next attempt's snapshot no
            # longer sees the account and skips its records. Two attempts suffice unless
            # accounts keep being deleted under it; three bound it. A batch is stored whole
            # or not at all, whatever number of statements it takes.
            for attempt in range(3):
                try:
                    async with connection.transaction():
                        for rows in parameters:
                            await connection.execute(ARCHIVE_INSERT, rows)
                    return
                except asyncpg.ForeignKeyViolationError:
                    if attempt == 2:
                        raise

    async def query_archive(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        async with self._connection(f"query_archive {owner}") as connection:
            return await query_archive(connection, owner, query)

    async def last_archive_seq(self) -> int:
        async with self._connection("last_archive_seq") as connection:
            return int(await connection.fetchval("SELECT coalesce(max(seq), 0) FROM archive"))

    async def get_archive_prefs(self, owner: str) -> ArchivePrefs | None:
        async with self._connection(f"get_archive_prefs {owner}") as connection:
            row = await connection.fetchrow(
                "SELECT default_mode, always, never FROM archive_prefs WHERE owner = $1", owner
            )
        if row is None:
            return None
        default, always, never = row
        return ArchivePrefs(str(default), tuple(always), tuple(never))

    async def expire_archive(self, before: float) -> int:
        async with self._connection("expire_archive") as connection:
            # seq is the handling time in microseconds: the primary key serves the range.
            status = await connection.execute(
                "DELETE FROM archive WHERE seq < $1", round(before * 1_000_000)
            )
        return _deleted(status)

    async def set_archive_prefs(self, owner: str, prefs: ArchivePrefs) -> None:
        async with self._connection(f"set_archive_prefs {owner}") as connection:
            await connection.execute(
                "INSERT INTO archive_prefs (owner, default_mode, always, never)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (owner) DO UPDATE SET"
                " default_mode = excluded.default_mode, always = excluded.always,"
                " never = excluded.never",
                owner,
                prefs.default,
                list(prefs.always),
                list(prefs.never),
            )

    # -- plumbing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[Any]:
        """A connection of the pool for one call; driver errors become StorageErrors."""
        pool = self._pool
        if pool is None:
            state = "closed" if self._closed else "not open"
            raise StorageError(f"{what}: the store {self.url} is {state}")
        self._operations += 1
        try:
            connection = await pool.acquire()
            try:
                yield connection
            except asyncio.CancelledError:
                # Cancelled mid-statement (the storage gate's call timeout, say). Given the
                # connection back, asyncpg would wait for the server to confirm the
                # cancellation, which on a stalled link never comes, and the cancelled call
                # would hang with it. The connection is dropped instead; the pool opens
                # another when one is needed.
                connection.terminate()
                raise
            finally:
                await pool.release(connection)
        except _DRIVER_ERRORS as error:
            self._failed += 1
            raise StorageError(f"{what}: {error}") from _cause(error)

    @asynccontextmanager
    async def _transaction(self, what: str) -> AsyncIterator[Any]:
        async with self._connection(what) as connection, connection.transaction():
            yield connection


def _cause(error: BaseException) -> BaseException:
    """What a StorageError is raised from: an IntegrityError for a broken constraint."""
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        integrity = IntegrityError(str(error))
        integrity.__cause__ = error
        return integrity
    return error


async def _insert_credentials(
    connection: Any, jid: str, credentials: Sequence[ScramCredentials]
) -> None:
    if not credentials:
        return
    await connection.execute(
        "INSERT INTO credentials (jid, mechanism, salt, iterations, stored_key, server_key)"
        " SELECT $1, * FROM unnest($2::text[], $3::bytea[], $4::integer[], $5::bytea[],"
        " $6::bytea[])",
        jid,
        [c.mechanism for c in credentials],
        [c.salt for c in credentials],
        [c.iterations for c in credentials],
        [c.stored_key for c in credentials],
        [c.server_key for c in credentials],
    )


# -- roster --------------------------------------------------------------------------------------

_ROSTER_FIELDS = (
    "contact",
    "name",
    "subscription",
    "ask",
    "pending_in",
    "approved",
    "groups",
    "pending_in_stanza",
    "in_roster",
)
_ROSTER_COLUMNS = ", ".join(_ROSTER_FIELDS)
_ROSTER_COLUMNS_OF_R = ", ".join(f"r.{field}" for field in _ROSTER_FIELDS)

_BUMP_ROSTER_VERSION = "INSERT INTO roster_version (owner, version)"
_BUMP_ON_CONFLICT = (
    "ON CONFLICT (owner) DO UPDATE SET version = roster_version.version + 1 RETURNING version"
)


def _roster_item(row: Sequence[Any]) -> RosterItem:
    contact, name, subscription, ask, pending_in, approved, groups, stanza, in_roster = row
    return RosterItem(
        jid=str(contact),
        name=name,
        subscription=str(subscription),
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(groups),
        pending_in_stanza=stanza,
        in_roster=bool(in_roster),
    )


def _deleted(status: str) -> int:
    """The row count of a ``DELETE n`` command status."""
    return int(status.rsplit(" ", 1)[-1])
