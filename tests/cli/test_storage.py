"""``roost storage migrate``: an SQLite data directory copied into PostgreSQL, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.cli import main
from roost.storage import RosterItem, ScramCredentials, Storage
from roost.storage.base import ArchivePrefs, ArchiveQuery, ArchiveRecord
from roost.storage.postgres import PostgresStorage
from roost.storage.sqlite import SQLiteStorage
from roost.testing.postgres import (
    PostgresUnavailable,
    create_database,
    drop_database,
    unavailable,
)

ALICE = "alice@example.org"
BOB = "bob@example.org"
NANDU = "ñandú@exämple.org"


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database."""
    try:
        url = await create_database()
    except PostgresUnavailable as error:
        unavailable(error)
    try:
        yield url
    finally:
        await drop_database(url)


def keys(mechanism: str, seed: int) -> ScramCredentials:
    return ScramCredentials(mechanism, bytes([seed, 0, 255]), 4096 + seed, b"\x00" * 32, b"k" * 32)


async def fill(store: Storage) -> None:
    """Some of everything a store keeps, with the details a copy could get wrong."""
    await store.create_user(ALICE, [keys("SCRAM-SHA-1", 1), keys("SCRAM-SHA-256", 2)])
    await store.create_user(BOB, [keys("SCRAM-SHA-256", 3)])
    await store.create_user(NANDU, [])
    # Five changes, three items: the version (5) is not the number of items.
    await store.put_roster_item(ALICE, RosterItem(BOB, name="Bob", groups=("Zeta", "Alpha")))
    await store.put_roster_item(ALICE, RosterItem(NANDU, subscription="both", approved=True))
    await store.put_roster_item(ALICE, RosterItem("eve@example.net"))
    hidden = RosterItem(
        "eve@example.net", pending_in=True, pending_in_stanza="<p/>", in_roster=False
    )
    await store.put_roster_item(ALICE, hidden)
    await store.put_roster_item(
        ALICE, RosterItem(BOB, subscription="to", ask=True, groups=("Zeta", "Alpha"))
    )
    # Offline ids with a gap: the copy keeps them, and new ones come after.
    ids = [
        await store.store_offline(BOB, f"<message><body>{n}</body></message>", 10.5 + n, ALICE)
        for n in range(4)
    ]
    await store.delete_offline(BOB, [ids[1]])
    await store.set_vcard(ALICE, "<vCard xmlns='vcard-temp'><FN>Alice Ælfwine</FN></vCard>")
    await store.block(ALICE, ["spam.example", "mallory@example.net/x"])
    parties = [(ALICE, f"{BOB}/phone", "out"), (BOB, ALICE, "in"), (ALICE, NANDU, "in")] * 3
    records = []
    for n, (owner, with_jid, direction) in enumerate(parties):
        seq = 1_700_000_000_000_000 + n
        stanza = f"<message>{n}</message>"
        records.append(ArchiveRecord(owner, seq, f"{seq:013x}-{n}", with_jid, direction, stanza))
    await store.archive_messages(records)
    await store.set_archive_prefs(ALICE, ArchivePrefs("roster", always=(BOB,), never=(NANDU,)))


async def contents(store: Storage) -> dict[str, Any]:
    """Everything the store holds, as the Storage interface shows it."""
    found: dict[str, Any] = {"users": await store.list_users()}
    for jid in found["users"]:
        found[jid] = (
            [await store.get_credentials(jid, m) for m in ("SCRAM-SHA-1", "SCRAM-SHA-256")],
            await store.get_roster(jid),
            await store.fetch_offline(jid),
            await store.get_vcard(jid),
            await store.get_blocklist(jid),
            await store.query_archive(jid, ArchiveQuery(limit=100)),
            await store.get_archive_prefs(jid),
        )
    found["last_archive_seq"] = await store.last_archive_seq()
    return found


async def snapshot(store: Storage) -> dict[str, Any]:
    await store.open()
    try:
        return await contents(store)
    finally:
        await store.close()


async def roost(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.postgres
async def test_migrate_copies_everything_then_refuses_a_full_target_unless_forced(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = SQLiteStorage(tmp_path / "roost.db")
    await source.open()
    await fill(source)
    await source.close()

    assert await roost("storage", "migrate", "--to", target, "--data-dir", str(tmp_path)) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines()[1:])
    assert printed == {
        "users": "3",
        "credentials": "3",
        "roster": "3",
        "roster_version": "1",
        "offline": "3",
        "vcard": "1",
        "blocklist": "2",
        "archive": "9",
        "archive_prefs": "1",
    }
    expected = await snapshot(SQLiteStorage(tmp_path / "roost.db"))
    assert await snapshot(PostgresStorage(target)) == expected
    assert expected[ALICE][1].version == 5

    copy = PostgresStorage(target)
    await copy.open()
    try:
        # The copy goes on where the original left off.
        newest = max(message.id for message in expected[BOB][2])
        assert await copy.store_offline(BOB, "<message/>", 99.0) > newest
        assert await copy.put_roster_item(ALICE, RosterItem("new@example.org")) == 6
    finally:
        await copy.close()

    # Copying again would mix two stores: refused, and the target is left as it was.
    assert await roost("storage", "migrate", "--to", target, "--data-dir", str(tmp_path)) == 1
    assert "is not empty (users 3, " in capsys.readouterr().err
    assert (await snapshot(PostgresStorage(target)))[BOB][2][-1].stanza == "<message/>"
    # --force replaces what it holds with the source's contents.
    argv = ("storage", "migrate", "--to", target, "--data-dir", str(tmp_path), "--force")
    assert await roost(*argv) == 0
    assert await snapshot(PostgresStorage(target)) == expected


async def test_migrate_wants_a_postgresql_url_and_an_existing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await roost("storage", "migrate", "--to", "mysql://db/roost") == 2
    assert "postgresql://" in capsys.readouterr().err
    missing = tmp_path / "nothing-here"
    url = "postgresql://roost:hunter2@127.0.0.1:1/roost"
    assert await roost("storage", "migrate", "--to", url, "--data-dir", str(missing)) == 1
    error = capsys.readouterr().err
    assert "no such database" in error
    assert not missing.exists()  # not created by looking for it
    assert "hunter2" not in error


async def test_roost_user_manages_the_configured_postgresql_store(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOST_STORAGE__URL", target)
    argv = ["user", "add", ALICE, "--password", "secret", "--data-dir", str(tmp_path)]
    assert await asyncio.to_thread(main, argv) == 0
    store = PostgresStorage(target)
    await store.open()
    try:
        assert await store.user_exists(ALICE)
    finally:
        await store.close()
    assert not (tmp_path / "roost.db").exists()  # nothing went to an SQLite file
