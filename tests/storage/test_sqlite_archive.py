"""What is particular to SQLite's message archive: records kept in chunks, one row per owner
and batch (roost.storage.sqlite_archive), and the migration from one row per record.

The archive's contract, which these rows must keep, is tested on every backend in
test_archive.py.
"""

from __future__ import annotations

import sqlite3
from itertools import pairwise
from pathlib import Path

import pytest

from roost.storage import migrations
from roost.storage.base import ArchiveQuery, ArchiveRecord
from roost.storage.sqlite import SQLiteStorage, _statements
from roost.storage.sqlite_archive import CHUNK_RECORDS, CHUNK_SPAN, every_record

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.net"
BASE = 1_700_000_000_000_000  # a seq: microseconds since the epoch


def record(seq: int, owner: str = ALICE, with_jid: str = f"{BOB}/phone") -> ArchiveRecord:
    return ArchiveRecord(owner, seq, f"{seq:013x}-id", with_jid, "in", f"<message>{seq}</message>")


def chunks(path: Path) -> list[tuple[str, int, int, int]]:
    """(owner, first_seq, last_seq, n) of every chunk, in order."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT owner, first_seq, last_seq, n FROM archive_chunk ORDER BY owner, first_seq"
        ).fetchall()
    connection.close()
    return rows


@pytest.fixture
async def store(sqlite_storage: SQLiteStorage) -> SQLiteStorage:
    """The shared SQLite store (conftest), with three accounts."""
    for jid in (ALICE, BOB, CAROL):
        await sqlite_storage.create_user(jid, [])
    return sqlite_storage


async def test_a_batch_is_one_row_per_owner(store: SQLiteStorage) -> None:
    batch = [record(BASE + n, owner=(ALICE, BOB, CAROL)[n % 3]) for n in range(30)]
    await store.archive_messages(batch)
    assert chunks(store.path) == [
        (ALICE, BASE, BASE + 27, 10),
        (BOB, BASE + 1, BASE + 28, 10),
        (CAROL, BASE + 2, BASE + 29, 10),
    ]


async def test_chunks_are_bounded_in_records_and_in_time(store: SQLiteStorage) -> None:
    many = [record(BASE + n) for n in range(CHUNK_RECORDS * 2 + 5)]
    far = [record(BASE + CHUNK_SPAN * 3 + n) for n in range(3)]
    await store.archive_messages(many + far)
    sizes = [n for _owner, _first, _last, n in chunks(store.path)]
    assert sizes == [CHUNK_RECORDS, CHUNK_RECORDS, 5, 3]
    page = await store.query_archive(ALICE, ArchiveQuery(limit=1000))
    assert [m.id for m in page.messages] == [r.id for r in many + far]
    # An id in any chunk is found, and pages cross chunk boundaries both ways.
    middle = many[CHUNK_RECORDS]
    after = await store.query_archive(ALICE, ArchiveQuery(after=middle.id, limit=2))
    assert [m.id for m in after.messages] == [r.id for r in many[CHUNK_RECORDS + 1 :][:2]]
    before = await store.query_archive(
        ALICE, ArchiveQuery(before=middle.id, backward=True, limit=2)
    )
    assert [m.id for m in before.messages] == [
        r.id for r in many[CHUNK_RECORDS - 2 : CHUNK_RECORDS]
    ]


async def test_the_records_of_one_seq_share_a_chunk(store: SQLiteStorage) -> None:
    # Two nodes' records of one seq (ids differ in their tails) where a chunk would end: the
    # chunk takes both, so that chunks stay apart and a scan from that seq finds both.
    edge = BASE + CHUNK_RECORDS - 1
    twin = ArchiveRecord(ALICE, edge, f"{edge:013x}-other", BOB, "in", "<message/>")
    await store.archive_messages([record(BASE + n) for n in range(CHUNK_RECORDS + 3)] + [twin])
    found = chunks(store.path)
    assert [n for *_rest, n in found] == [CHUNK_RECORDS + 1, 3]
    assert found[0][2] == edge < found[1][1]
    page = await store.query_archive(ALICE, ArchiveQuery(start=edge / 1e6, limit=2))
    assert [m.id for m in page.messages] == [f"{edge:013x}-id", twin.id]


async def test_an_overlapping_batch_is_merged_and_chunks_stay_apart(
    store: SQLiteStorage,
) -> None:
    await store.archive_messages([record(BASE + n) for n in (0, 10, 20)])
    await store.archive_messages([record(BASE + n) for n in (30, 40)])
    await store.archive_messages([record(BASE + n) for n in (15, 35, 50)])
    found = chunks(store.path)
    assert sum(n for *_rest, n in found) == 8
    for (_o, _f, last, _n), (_o2, first, _l, _n2) in pairwise(found):
        assert last < first
    page = await store.query_archive(ALICE, ArchiveQuery())
    assert [m.stamp for m in page.messages] == [
        (BASE + n) / 1e6 for n in (0, 10, 15, 20, 30, 35, 40, 50)
    ]


async def test_a_chunk_another_connection_wrote_is_merged_with(store: SQLiteStorage) -> None:
    """The store remembers each owner's last seq; another writer of the file (a second node
    sharing it) makes it look again."""
    await store.archive_messages([record(BASE + n) for n in (0, 10)])
    other = SQLiteStorage(store.path)
    await other.open()
    try:
        await other.archive_messages([record(BASE + n) for n in (20, 30)])
    finally:
        await other.close()
    await store.archive_messages([record(BASE + n) for n in (25, 40)])
    found = chunks(store.path)
    for (_o, _f, last, _n), (_o2, first, _l, _n2) in pairwise(found):
        assert last < first
    page = await store.query_archive(ALICE, ArchiveQuery())
    assert [m.stamp for m in page.messages] == [(BASE + n) / 1e6 for n in (0, 10, 20, 25, 30, 40)]


async def test_an_old_batch_does_not_hide_the_newer_chunks_after_it(store: SQLiteStorage) -> None:
    await store.archive_messages([record(BASE + n) for n in (100, 200)])
    await store.archive_messages([record(BASE + n) for n in (10, 20)])  # retried, older
    await store.archive_messages([record(BASE + n) for n in (150, 300)])
    found = chunks(store.path)
    for (_o, _f, last, _n), (_o2, first, _l, _n2) in pairwise(found):
        assert last < first
    page = await store.query_archive(ALICE, ArchiveQuery())
    assert [m.stamp for m in page.messages] == [
        (BASE + n) / 1e6 for n in (10, 20, 100, 150, 200, 300)
    ]


async def test_separators_in_a_record_are_replaced_not_misread(store: SQLiteStorage) -> None:
    odd = ArchiveRecord(ALICE, BASE, f"{BASE:013x}-id", BOB, "out", "<m>a\x1eb\x1fc</m>")
    await store.archive_messages([odd, record(BASE + 1)])
    page = await store.query_archive(ALICE, ArchiveQuery())
    assert [m.stanza for m in page.messages] == [
        "<m>a\ufffdb\ufffdc</m>",
        f"<message>{BASE + 1}</message>",
    ]
    assert page.messages[0].with_jid == BOB


async def test_a_conversation_query_skips_chunks_without_that_party(
    store: SQLiteStorage,
) -> None:
    await store.archive_messages([record(BASE + n, with_jid=CAROL) for n in range(5)])
    await store.archive_messages([record(BASE + 10), record(BASE + 11, with_jid=BOB)])
    await store.archive_messages([record(BASE + n, with_jid=CAROL) for n in range(20, 25)])
    with_bob = await store.query_archive(ALICE, ArchiveQuery(with_jid=BOB))
    assert [m.with_jid for m in with_bob.messages] == [f"{BOB}/phone", BOB]
    assert with_bob.count == 2
    phone = await store.query_archive(ALICE, ArchiveQuery(with_jid=f"{BOB}/phone"))
    assert [m.stamp for m in phone.messages] == [(BASE + 10) / 1e6]


# -- from one row per record (schema version 3) --------------------------------------------------


def version_3_file(path: Path) -> None:
    """A file as roost left it before chunks, holding two archived records."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for step in migrations.load("sqlite")[:3]:
            for statement in _statements(step.sql):
                connection.execute(statement)
        connection.execute("PRAGMA user_version = 3")
        for jid in (ALICE, BOB):
            connection.execute(
                "INSERT INTO users (jid, domain, created) VALUES (?, ?, 0)",
                (jid, jid.split("@")[1]),
            )
        connection.executemany(
            "INSERT INTO archive (seq, owner, id, with_jid, with_resource, direction, stanza)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (BASE, ALICE, "old-1", BOB, "phone/2", "in", "<message>'one' \"é\"</message>"),
                (BASE + 5, ALICE, "old-2", BOB, "", "out", "<message>two</message>"),
                (BASE + 7, BOB, "old-3", ALICE, "", "in", "<message>two</message>"),
            ],
        )
    finally:
        connection.close()


async def test_a_version_3_archive_is_migrated_to_chunks(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    version_3_file(path)
    store = SQLiteStorage(path)
    await store.open()
    try:
        page = await store.query_archive(ALICE, ArchiveQuery())
        assert [(m.id, m.stamp, m.with_jid, m.direction, m.stanza) for m in page.messages] == [
            ("old-1", BASE / 1e6, f"{BOB}/phone/2", "in", "<message>'one' \"é\"</message>"),
            ("old-2", (BASE + 5) / 1e6, BOB, "out", "<message>two</message>"),
        ]
        assert await store.last_archive_seq() == BASE + 7
        # New records go on after the migrated ones.
        await store.archive_messages([record(BASE + 10)])
        page = await store.query_archive(ALICE, ArchiveQuery(with_jid=f"{BOB}/phone"))
        assert [m.id for m in page.messages] == [record(BASE + 10).id]
    finally:
        await store.close()
    connection = sqlite3.connect(path)
    try:
        assert sorted(every_record(connection)) == [
            (BASE, ALICE, "old-1", BOB, "phone/2", "in", "<message>'one' \"é\"</message>"),
            (BASE + 5, ALICE, "old-2", BOB, "", "out", "<message>two</message>"),
            (BASE + 7, BOB, "old-3", ALICE, "", "in", "<message>two</message>"),
            (BASE + 10, ALICE, record(BASE + 10).id, BOB, "phone", "in", record(BASE + 10).stanza),
        ]
    finally:
        connection.close()
