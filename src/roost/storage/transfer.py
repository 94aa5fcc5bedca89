"""Copying a deployment's SQLite store into PostgreSQL (``roost storage migrate``).

A deployment that outgrows one machine moves its data from the SQLite file of its data
directory to the PostgreSQL database its nodes will share. :func:`copy_sqlite_to_postgres`
copies every table (accounts with their SCRAM credentials, rosters with their versions,
offline messages with their ids, vCards, blocklists, archives and archiving preferences) so
that clients notice nothing: a roster version a client holds stays valid, and archive ids stay
the same.

How. The SQLite file is first brought to its latest schema (opening it does that), and the
PostgreSQL database to its own. Then, in one transaction of the target, each table is read in
one read transaction of the source (a consistent snapshot, even with a server still writing
it; what it writes afterwards is not copied, so stop it first) and written with ``COPY``, the
fastest way into PostgreSQL, in batches, so that an archive of millions of messages never sits
in memory at once. Offline ids are copied as they are, and the target's id sequence is moved
past the greatest. Should anything fail, the transaction leaves the target as it was.

A target that holds data is refused (:class:`TargetNotEmpty`), since copying into it would mix
two deployments' accounts; ``force`` empties it first, in the same transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg

from roost.storage import sqlite_archive
from roost.storage.base import StorageError
from roost.storage.postgres import TABLES, PostgresStorage, redact_url
from roost.storage.sqlite import SQLiteStorage

__all__ = ["TargetNotEmpty", "copy_sqlite_to_postgres", "count_rows"]

BATCH = 5000  # rows per COPY: large enough to amortize a round trip, small enough to hold


class TargetNotEmpty(StorageError):
    """The target database already holds data (``counts``: rows per table, non-zero only)."""

    def __init__(self, url: str, counts: dict[str, int]) -> None:
        held = ", ".join(f"{table} {count}" for table, count in counts.items())
        super().__init__(f"{redact_url(url)} is not empty ({held})")
        self.counts = counts


def _flag(value: Any) -> bool:
    return bool(value)


def _json_list(value: Any) -> list[str]:
    return [str(item) for item in json.loads(value)]


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    # Conversions of SQLite's values (0/1 for booleans, JSON arrays) to the target's types.
    convert: dict[str, Callable[[Any], Any]]
    order: str  # the source's primary key, so that COPY appends in index order
    # Rows read otherwise than by selecting the columns from the table of that name.
    read: Callable[[sqlite3.Connection], Iterator[tuple[Any, ...]]] | None = None

    def row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            self.convert[column](value) if column in self.convert and value is not None else value
            for column, value in zip(self.columns, values, strict=True)
        )


_TABLES = (
    _Table("users", ("jid", "domain", "created"), {"created": float}, "jid"),
    _Table(
        "credentials",
        ("jid", "mechanism", "salt", "iterations", "stored_key", "server_key"),
        {"salt": bytes, "stored_key": bytes, "server_key": bytes},
        "jid, mechanism",
    ),
    _Table(
        "roster",
        (
            "owner",
            "contact",
            "name",
            "subscription",
            "ask",
            "pending_in",
            "approved",
            "groups",
            "pending_in_stanza",
            "in_roster",
        ),
        {
            "ask": _flag,
            "pending_in": _flag,
            "approved": _flag,
            "groups": _json_list,
            "in_roster": _flag,
        },
        "owner, contact",
    ),
    _Table("roster_version", ("owner", "version"), {}, "owner"),
    _Table("offline", ("id", "owner", "sender", "stamp", "stanza"), {"stamp": float}, "id"),
    _Table("vcard", ("owner", "xml"), {}, "owner"),
    _Table("blocklist", ("owner", "blocked"), {}, "owner, blocked"),
    _Table(
        "archive",
        ("seq", "owner", "id", "with_jid", "with_resource", "direction", "stanza"),
        {},
        "seq",
        sqlite_archive.every_record,  # stored in chunks in SQLite
    ),
    _Table(
        "archive_prefs",
        ("owner", "default_mode", "always", "never"),
        {"always": _json_list, "never": _json_list},
        "owner",
    ),
)


async def copy_sqlite_to_postgres(
    sqlite_path: Path, url: str, *, force: bool = False
) -> dict[str, int]:
    """Copy the SQLite store at ``sqlite_path`` into the PostgreSQL database at ``url``.

    Returns the rows copied per table. Raises :class:`TargetNotEmpty` when the target holds
    data and ``force`` is false, and :class:`StorageError` when either database fails.
    """
    if not await asyncio.to_thread(sqlite_path.is_file):
        raise StorageError(f"{sqlite_path}: no such database")
    # Opening each store brings its schema to the latest version.
    source = SQLiteStorage(sqlite_path)
    await source.open()
    await source.close()
    target = PostgresStorage(url, pool_size=1)
    await target.open()
    await target.close()

    # Read on threads, one at a time (hence check_same_thread=False): SQLite blocks.
    reader = await asyncio.to_thread(
        sqlite3.connect,
        f"file:{sqlite_path}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        connection = await asyncpg.connect(url)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reader.close()
        raise StorageError(f"{redact_url(url)}: cannot connect: {error}") from error
    try:
        async with connection.transaction():
            if not await _empty(connection):
                if not force:
                    held = await count_rows(connection)
                    raise TargetNotEmpty(url, {t: n for t, n in held.items() if n})
                await connection.execute(f"TRUNCATE {', '.join(TABLES)}")
            # A read transaction: its first read takes the snapshot every table is read from.
            reader.execute("BEGIN")
            copied = {table.name: await _copy(reader, connection, table) for table in _TABLES}
            reader.execute("COMMIT")
            await connection.execute(
                "SELECT setval(pg_get_serial_sequence('offline', 'id'), max(id))"
                " FROM offline HAVING max(id) IS NOT NULL"
            )
        return copied
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        raise StorageError(f"copying into {redact_url(url)} failed: {error}") from error
    except sqlite3.Error as error:
        raise StorageError(f"reading {sqlite_path} failed: {error}") from error
    finally:
        reader.close()
        await connection.close()


async def _copy(reader: sqlite3.Connection, connection: Any, table: _Table) -> int:
    if table.read is None:
        cursor = await asyncio.to_thread(
            reader.execute,
            f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order}",
        )

        def fetch() -> list[Any]:
            return cursor.fetchmany(BATCH)

    else:
        read = table.read(reader)

        def fetch() -> list[Any]:
            return list(islice(read, BATCH))

    copied = 0
    while batch := await asyncio.to_thread(fetch):
        rows = [table.row(values) for values in batch]
        await connection.copy_records_to_table(table.name, records=rows, columns=table.columns)
        copied += len(rows)
    return copied


async def _empty(connection: Any) -> bool:
    return not await connection.fetchval(
        "SELECT " + " OR ".join(f"EXISTS (SELECT FROM {table})" for table in TABLES)
    )


async def count_rows(connection: Any) -> dict[str, int]:
    """The rows of every roost table in the database of ``connection`` (an asyncpg one)."""
    counts = await connection.fetchrow(
        "SELECT " + ", ".join(f"(SELECT count(*) FROM {table})" for table in TABLES)
    )
    return {table: int(count) for table, count in zip(TABLES, counts, strict=True)}
