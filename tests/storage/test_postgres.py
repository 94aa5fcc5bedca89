"""What is particular to the PostgreSQL backend: migrating under a lock, errors, secrets, a server.

The contract every backend meets is in test_storage.py and test_archive.py, which run against
PostgreSQL too (see conftest).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from roost.config.pipeline import REDACTED, SCHEMA, display
from roost.gate.storage import GatedStorage, is_storage_failure
from roost.storage import StorageError, migrations, open_storage
from roost.storage.base import ArchiveQuery, ArchiveRecord
from roost.storage.postgres import IntegrityError, PostgresStorage, redact_url
from roost.storage.sqlite import SQLiteStorage
from roost.testing import running_server
from roost.testing.faultproxy import FaultProxy
from roost.testing.postgres import create_database, drop_database
from roost.testing.rawclient import RawClient

pytestmark = pytest.mark.postgres

LATEST = migrations.latest(migrations.load("postgresql"))
UNREACHABLE = "postgresql://roost:hunter2@127.0.0.1:1/roost"  # port 1: nobody listens


async def test_nodes_starting_together_migrate_the_schema_once(postgres_url: str) -> None:
    url = await create_database()
    try:
        nodes = [PostgresStorage(url, pool_size=2) for _ in range(4)]
        await asyncio.gather(*(node.open() for node in nodes))
        assert [await node.schema_version() for node in nodes] == [LATEST] * 4
        await asyncio.gather(*(node.close() for node in nodes))
        connection = await asyncpg.connect(url)
        try:
            steps = await connection.fetch("SELECT version FROM schema_version ORDER BY version")
        finally:
            await connection.close()
        assert [step["version"] for step in steps] == list(range(1, LATEST + 1))
    finally:
        await drop_database(url)


async def test_an_archive_of_schema_version_1_keeps_its_records_and_takes_twins() -> None:
    # Version 1 keyed the archive by seq alone, so a second node's record of the same seq was
    # dropped; version 2 keys it by owner, seq and id.
    url = await create_database()
    try:
        connection = await asyncpg.connect(url)
        try:
            first = migrations.load("postgresql")[0]
            await connection.execute(first.sql)
            await connection.execute(
                "CREATE TABLE schema_version (version integer PRIMARY KEY, summary text NOT NULL,"
                " applied timestamptz NOT NULL DEFAULT now());"
                " INSERT INTO schema_version (version, summary) VALUES (1, 'initial');"
                " INSERT INTO users (jid, domain, created) VALUES ('a@x', 'x', 0), ('b@x', 'x', 0);"
                " INSERT INTO archive VALUES"
                " (7, 'a@x', '0000000000007one', 'b@x', '', 'in', '<message/>')"
            )
        finally:
            await connection.close()
        store = PostgresStorage(url)
        await store.open()
        try:
            assert await store.schema_version() == LATEST
            twins = [
                ArchiveRecord(owner, 7, "0000000000007two", "c@x", "in", "<m/>")
                for owner in ("a@x", "b@x")
            ]
            await store.archive_messages(twins)
            page = await store.query_archive("a@x", ArchiveQuery(after="0000000000007one"))
            assert [m.id for m in page.messages] == ["0000000000007two"]
            assert len((await store.query_archive("b@x", ArchiveQuery())).messages) == 1
        finally:
            await store.close()
    finally:
        await drop_database(url)


async def test_a_database_written_by_a_newer_roost_is_refused(
    postgres_storage: PostgresStorage, postgres_url: str
) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(
            "INSERT INTO schema_version (version, summary) VALUES ($1, 'from the future')",
            LATEST + 1,
        )
        with pytest.raises(StorageError, match="written by a newer roost"):
            await PostgresStorage(postgres_url).open()
    finally:
        await connection.execute("DELETE FROM schema_version WHERE version > $1", LATEST)
        await connection.close()


async def test_a_write_for_an_unknown_account_is_the_callers_mistake_not_a_failure(
    postgres_storage: PostgresStorage,
) -> None:
    with pytest.raises(StorageError) as caught:
        await postgres_storage.store_offline("ghost@example.org", "<message/>", 1.0)
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert not is_storage_failure(caught.value)  # the storage gate stays closed
    statistics = postgres_storage.statistics()
    assert (statistics.operations, statistics.failed) == (1, 1)
    assert 1 <= statistics.connections <= statistics.max_connections == 10


async def test_an_unreachable_server_and_a_closed_store_fail_with_storage_errors(
    postgres_storage: PostgresStorage,
) -> None:
    with pytest.raises(StorageError, match="cannot connect") as caught:
        await PostgresStorage(UNREACHABLE, connect_timeout=2).open()
    assert is_storage_failure(caught.value)
    assert "hunter2" not in str(caught.value)
    await postgres_storage.close()
    with pytest.raises(StorageError, match="is closed"):
        await postgres_storage.user_exists("alice@example.org")
    with pytest.raises(StorageError, match="cannot be opened again"):
        await postgres_storage.open()


def test_the_password_in_a_url_is_never_shown() -> None:
    store = PostgresStorage(UNREACHABLE)
    assert store.url == "postgresql://roost:***@127.0.0.1:1/roost"
    assert repr(store) == "<PostgresStorage postgresql://roost:***@127.0.0.1:1/roost not open>"
    assert store.database == "roost"
    assert redact_url("postgresql://roost@db/roost") == "postgresql://roost@db/roost"
    assert display(SCHEMA["storage.url"], UNREACHABLE) == REDACTED  # roost config show


def test_open_storage_chooses_the_backend_by_its_url(tmp_path: Path) -> None:
    store = open_storage(tmp_path / "data", url=UNREACHABLE)
    assert isinstance(store, PostgresStorage)
    assert not (tmp_path / "data").exists()  # no data directory needed for the store
    assert isinstance(open_storage(tmp_path / "data", url=""), SQLiteStorage)
    with pytest.raises(StorageError, match="unsupported storage URL 'mysql://roost:\\*\\*\\*@"):
        open_storage(tmp_path, url="mysql://roost:hunter2@db/roost")


async def test_jids_sort_by_code_point_whatever_the_database_collation(
    postgres_storage: PostgresStorage, postgres_url: str
) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        linguistic = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND data_type = 'text'"
            " AND column_name IN ('jid', 'domain', 'owner', 'contact', 'blocked', 'with_jid')"
            " AND collation_name IS DISTINCT FROM 'C'"
        )
    finally:
        await connection.close()
    assert linguistic == []
    for jid in ("zed@example.org", "Zed@example.org", "alice@example.org", "Émile@example.org"):
        await postgres_storage.create_user(jid, [])
    users = await postgres_storage.list_users()
    assert (
        users
        == sorted(users)
        == [
            "Zed@example.org",
            "alice@example.org",
            "zed@example.org",
            "Émile@example.org",
        ]
    )


async def test_a_server_on_postgresql_logs_in_and_keeps_offline_messages(
    tmp_path: Path, postgres_storage: PostgresStorage, postgres_url: str
) -> None:
    async with running_server(tmp_path, storage_url=postgres_url, offline_limit=3) as server:
        store = server.server.storage
        assert isinstance(store, GatedStorage)
        assert isinstance(store.inner, PostgresStorage)
        assert store.partition == postgres_storage.database  # the storage gate's partition
        await server.create_user("alice")
        await server.create_user("bob")
        alice = await RawClient.logged_in(server.host, server.port, "alice", cert=server.cert)
        for i in range(4):
            await alice.send(
                f"<message to='bob@localhost' type='chat' id='m{i}'><body>m{i}</body></message>"
            )
        bounced = await alice.expect("message")  # the fourth one: bob's queue is full
        assert (bounced.attrs["id"], bounced.attrs["type"]) == ("m3", "error")
        await alice.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.expect("iq")  # stanzas are handled in order: the others are stored
        assert await postgres_storage.count_offline("bob@localhost") == 3

        bob = await RawClient.logged_in(server.host, server.port, "bob", cert=server.cert)
        await bob.send("<presence/>")
        delivered = [await bob.expect("message") for _ in range(3)]
        assert [message.find_text("body") for message in delivered] == ["m0", "m1", "m2"]
        assert all(message.find("delay", "urn:xmpp:delay") for message in delivered)
        await bob.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await bob.expect("iq")
        assert await postgres_storage.count_offline("bob@localhost") == 0
        await alice.close()
        await bob.close()


async def test_a_call_cancelled_on_a_stalled_link_ends_at_once(postgres_url: str) -> None:
    target = urlsplit(postgres_url)
    async with FaultProxy((target.hostname or "127.0.0.1", target.port or 5432)) as proxy:
        user = target.netloc.rpartition("@")[0]
        store = PostgresStorage(
            target._replace(netloc=f"{user}@{proxy.host}:{proxy.port}").geturl(), pool_size=1
        )
        await store.open()
        try:
            proxy.stall()
            call = asyncio.create_task(store.user_exists("alice@example.org"))
            await proxy.wait_for(lambda s: s.held > 0)  # the statement is held on the way
            call.cancel()  # as the storage gate does when the call outlives its timeout
            async with asyncio.timeout(10):  # not waiting for the stalled server to confirm
                with pytest.raises(asyncio.CancelledError):
                    await call
            assert store.statistics().connections == 0  # dropped, not given back
            proxy.heal()
            assert await store.user_exists("alice@example.org") is False  # on a new one
        finally:
            await store.close()
