"""What is particular to the SQLite backend: the file, migrations, the thread, group commit."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.storage import RosterItem, ScramCredentials, StorageError, migrations, open_storage
from roost.storage.sqlite import SQLiteStorage, _statements
from roost.storage.sqlite_thread import THREAD_NICE

ALICE = "alice@example.org"
BOB = "bob@example.org"
LATEST = migrations.latest(migrations.load("sqlite"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "roost.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
    connection.close()
    return int(version)


def schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    connection.close()
    return rows


# -- the file ----------------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(path: Path) -> None:
    first = SQLiteStorage(path)
    await first.open()
    await first.create_user(ALICE, [])
    await first.put_roster_item(ALICE, RosterItem(BOB, groups=("Friends",)))
    message_id = await first.store_offline(ALICE, "<m/>", 5.0, BOB)
    await first.set_vcard(ALICE, "<vCard xmlns='vcard-temp'/>")
    await first.close()

    second = SQLiteStorage(path)
    await second.open()
    try:
        assert await second.list_users() == [ALICE]
        roster = await second.get_roster(ALICE)
        assert (roster.version, roster.items) == (1, [RosterItem(BOB, groups=("Friends",))])
        assert [m.id for m in await second.fetch_offline(ALICE)] == [message_id]
        assert await second.get_vcard(ALICE) == "<vCard xmlns='vcard-temp'/>"
    finally:
        await second.close()


async def test_the_file_is_in_wal_mode(store: SQLiteStorage, path: Path) -> None:
    await store.create_user(ALICE, [])
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


async def test_a_second_store_on_the_same_file_sees_the_first_ones_writes(
    store: SQLiteStorage, path: Path
) -> None:
    """As ``roost user add`` does while the server runs."""
    cli = SQLiteStorage(path)
    await cli.open()
    try:
        assert await store.create_user(ALICE, [])
        assert await cli.user_exists(ALICE)
        assert await cli.create_user(BOB, [])
        assert await store.list_users() == [ALICE, BOB]
        assert not await cli.create_user(ALICE, [])
    finally:
        await cli.close()


async def test_a_lock_held_elsewhere_fails_the_write_then_the_store_recovers(path: Path) -> None:
    store = SQLiteStorage(path, busy_timeout=0.01)
    await store.open()
    try:
        await store.create_user(ALICE, [])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="locked") as raised:
            await store.store_offline(ALICE, "<m/>", 1.0)
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert await store.count_offline(ALICE) == 0  # reading does not need the lock
        other.execute("ROLLBACK")
        other.close()
        await store.store_offline(ALICE, "<m/>", 1.0)
        assert await store.count_offline(ALICE) == 1
    finally:
        await store.close()


async def test_open_storage_creates_a_private_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "deployment" / "data"
    storage = open_storage(data_dir)
    assert isinstance(storage, SQLiteStorage)
    assert storage.path == data_dir / "roost.db"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert not storage.path.exists()  # not opened yet
    await storage.open()
    try:
        assert await storage.schema_version() == LATEST
    finally:
        await storage.close()
    again = open_storage(data_dir)  # an existing directory is fine
    assert isinstance(again, SQLiteStorage)
    assert again.path == storage.path


# -- migrations --------------------------------------------------------------------------------


@pytest.fixture
def empty_file(path: Path) -> Path:
    path.touch()
    return path


async def test_migrations_bring_an_empty_file_to_the_latest_version(empty_file: Path) -> None:
    path = empty_file
    store = SQLiteStorage(path)
    await store.open()
    try:
        assert await store.schema_version() == LATEST
    finally:
        await store.close()
    assert user_version(path) == LATEST
    names = {name for name, _ in schema(path)}
    assert {"users", "credentials", "roster", "roster_version", "offline", "vcard"} <= names


async def test_reopening_a_migrated_file_changes_nothing(path: Path) -> None:
    first = SQLiteStorage(path)
    await first.open()
    await first.create_user(ALICE, [])
    await first.close()
    before = schema(path)

    second = SQLiteStorage(path)
    await second.open()
    try:
        assert await second.schema_version() == LATEST
        assert await second.list_users() == [ALICE]
    finally:
        await second.close()
    assert schema(path) == before


async def test_a_database_from_a_newer_roost_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {LATEST + 1}")
    connection.close()
    store = SQLiteStorage(path)
    with pytest.raises(StorageError, match=f"schema version {LATEST + 1}.*newer"):
        await store.open()
    assert user_version(path) == LATEST + 1
    assert schema(path) == []  # nothing was created in it
    with pytest.raises(StorageError):
        await store.user_exists(ALICE)


async def test_two_stores_migrating_a_new_file_at_once(path: Path) -> None:
    first, second = SQLiteStorage(path), SQLiteStorage(path)
    await asyncio.gather(first.open(), second.open())
    try:
        assert await first.schema_version() == await second.schema_version() == LATEST
    finally:
        await asyncio.gather(first.close(), second.close())


def test_sqlite_migrations_are_numbered_from_one() -> None:
    steps = migrations.load("sqlite")
    assert [step.version for step in steps] == list(range(1, len(steps) + 1))
    assert steps[0].summary == "initial"
    assert migrations.load("no-such-dialect") == ()


def test_plan_picks_the_missing_steps() -> None:
    steps = (
        migrations.Migration(1, "one", "SELECT 1;"),
        migrations.Migration(2, "two", "SELECT 2;"),
        migrations.Migration(3, "three", "SELECT 3;"),
    )
    assert migrations.latest(steps) == 3
    assert migrations.plan(steps, 0, database="db") == list(steps)
    assert migrations.plan(steps, 2, database="db") == [steps[2]]
    assert migrations.plan(steps, 3, database="db") == []
    with pytest.raises(StorageError, match="db has schema version 4"):
        migrations.plan(steps, 4, database="db")


def test_scripts_split_at_statement_ends_only() -> None:
    script = """
        CREATE TABLE a (x TEXT DEFAULT ';');  -- a comment; with a semicolon
        CREATE TRIGGER t AFTER INSERT ON a BEGIN
            UPDATE a SET x = 'y;z';
            DELETE FROM a WHERE x = ';';
        END;
    """
    statements = list(_statements(script))
    assert [s.count("CREATE") for s in statements if s.strip(" \n;")] == [1, 1]
    connection = sqlite3.connect(":memory:")
    for statement in statements:
        connection.execute(statement)
    connection.execute("INSERT INTO a DEFAULT VALUES")
    assert connection.execute("SELECT x FROM a").fetchall() == [("y;z",)]
    connection.close()


# -- the thread and group commit ---------------------------------------------------------------


async def test_concurrent_writes_are_committed_together(store: SQLiteStorage) -> None:
    await store.create_user(ALICE, [])
    before = store.statistics()
    ids = await asyncio.gather(
        *(store.store_offline(ALICE, f"<m{n}/>", float(n)) for n in range(500))
    )
    after = store.statistics()
    assert len(set(ids)) == 500
    assert await store.count_offline(ALICE) == 500
    assert after.operations - before.operations == 500
    assert after.commits - before.commits <= 5  # one per transaction, not one per write
    assert after.largest_transaction >= 100
    # Issued in this order within one turn, they were stored in this order.
    assert ids == sorted(ids)
    assert [m.stanza for m in await store.fetch_offline(ALICE, limit=3)] == [
        "<m0/>",
        "<m1/>",
        "<m2/>",
    ]


async def test_a_failing_operation_fails_only_its_caller(store: SQLiteStorage) -> None:
    await store.create_user(ALICE, [])
    before = store.statistics()
    results = await asyncio.gather(
        *(store.store_offline(ALICE, f"<m{n}/>", 1.0) for n in range(10)),
        store.store_offline("nobody@example.org", "<lost/>", 1.0),  # no such account
        *(store.store_offline(ALICE, f"<m{n}/>", 1.0) for n in range(10, 20)),
        return_exceptions=True,
    )
    after = store.statistics()
    failure = results.pop(10)
    assert isinstance(failure, StorageError)
    assert "nobody@example.org" in str(failure)
    assert isinstance(failure.__cause__, sqlite3.IntegrityError)
    assert all(isinstance(result, int) for result in results)
    assert await store.count_offline(ALICE) == 20
    assert after.failed - before.failed == 1
    assert after.commits - before.commits == 1  # the failure did not split the transaction


async def test_a_failing_operation_is_undone_entirely(store: SQLiteStorage) -> None:
    """The account row written before the credentials failed is rolled back with them."""
    await store.create_user(ALICE, [])
    twice = ScramCredentials("SCRAM-SHA-256", b"salt", 4096, b"k" * 32, b"s" * 32)
    results = await asyncio.gather(
        store.store_offline(ALICE, "<before/>", 1.0),
        store.create_user(BOB, [twice, twice]),  # one mechanism twice: a primary key violation
        store.store_offline(ALICE, "<after/>", 1.0),
        return_exceptions=True,
    )
    assert isinstance(results[1], StorageError)
    assert not await store.user_exists(BOB)
    assert [m.stanza for m in await store.fetch_offline(ALICE)] == ["<before/>", "<after/>"]


async def test_reads_and_writes_of_one_batch_see_earlier_writes(store: SQLiteStorage) -> None:
    results = await asyncio.gather(
        store.create_user(ALICE, []),
        store.user_exists(ALICE),
        store.delete_user(ALICE),
        store.user_exists(ALICE),
    )
    assert list(results) == [True, True, True, False]


async def test_close_finishes_the_work_already_issued(path: Path) -> None:
    store = SQLiteStorage(path)
    await store.open()
    assert store._worker.alive
    await store.create_user(ALICE, [])
    *ids, _ = await asyncio.gather(
        *(store.store_offline(ALICE, f"<m{n}/>", 1.0) for n in range(100)), store.close()
    )
    assert len(set(ids)) == 100
    assert not store._worker.alive

    reopened = SQLiteStorage(path)
    await reopened.open()
    try:
        assert await reopened.count_offline(ALICE) == 100
    finally:
        await reopened.close()


async def test_calls_outside_open_and_close_fail(path: Path) -> None:
    store = SQLiteStorage(path)
    with pytest.raises(StorageError, match="not open"):
        await store.user_exists(ALICE)
    await store.open()
    with pytest.raises(StorageError, match="already"):
        await store.open()
    await store.close()
    await store.close()  # closing twice is harmless
    with pytest.raises(StorageError, match="closed"):
        await store.create_user(ALICE, [])


async def test_a_failed_open_stops_the_thread(tmp_path: Path) -> None:
    store = SQLiteStorage(tmp_path)  # a directory where the database file should be
    with pytest.raises(StorageError, match="unable to open"):
        await store.open()
    assert not store._worker.alive
    assert not [t for t in threading.enumerate() if t.name.startswith("roost-sqlite:")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_the_storage_thread_runs_below_the_event_loops_priority(
    store: SQLiteStorage, path: Path
) -> None:
    (thread,) = [t for t in threading.enumerate() if t.name == f"roost-sqlite:{path}"]
    assert thread.native_id is not None
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    theirs = os.getpriority(os.PRIO_PROCESS, thread.native_id)
    assert theirs == min(19, mine + THREAD_NICE)
    await store.create_user(ALICE, [])  # and it still works
    assert await store.user_exists(ALICE)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_a_thread_nice_of_zero_keeps_the_processs_priority(path: Path) -> None:
    store = SQLiteStorage(path, thread_nice=0)
    await store.open()
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == f"roost-sqlite:{path}"]
        assert thread.native_id is not None
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == mine
    finally:
        await store.close()
