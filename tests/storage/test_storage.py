"""The contract of :class:`roost.storage.Storage`, run against every backend (see conftest)."""

from __future__ import annotations

import asyncio

import pytest

from roost.storage import OfflineMessage, RosterItem, ScramCredentials, Storage, StorageError

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.net"
UNICODE = "ñandú.用户@exämple.org"


def scram(mechanism: str = "SCRAM-SHA-256", seed: int = 0) -> ScramCredentials:
    """Recognisable keys; the NUL and 0xff bytes catch a backend that stores them as text."""
    return ScramCredentials(
        mechanism=mechanism,
        salt=bytes([seed, 0, 255]) + b"salt",
        iterations=4096 + seed,
        stored_key=bytes([seed]) * 32,
        server_key=bytes([255 - seed]) * 32,
    )


async def create(storage: Storage, *jids: str) -> None:
    for jid in jids:
        assert await storage.create_user(jid, [scram()])


# -- schema ------------------------------------------------------------------------------------


async def test_a_new_store_is_at_a_positive_schema_version(storage: Storage) -> None:
    assert await storage.schema_version() >= 1


# -- accounts ----------------------------------------------------------------------------------


async def test_create_user_then_it_exists(storage: Storage) -> None:
    assert not await storage.user_exists(ALICE)
    assert await storage.create_user(ALICE, [scram()])
    assert await storage.user_exists(ALICE)
    assert not await storage.user_exists(BOB)


async def test_creating_an_existing_user_fails_and_keeps_its_credentials(storage: Storage) -> None:
    assert await storage.create_user(ALICE, [scram(seed=1)])
    assert not await storage.create_user(ALICE, [scram(seed=2)])
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-256") == scram(seed=1)


async def test_delete_user(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    assert await storage.delete_user(ALICE)
    assert not await storage.user_exists(ALICE)
    assert await storage.user_exists(BOB)
    assert not await storage.delete_user(ALICE)
    assert not await storage.delete_user("nobody@example.org")


async def test_list_users_is_sorted(storage: Storage) -> None:
    await create(storage, CAROL, BOB, ALICE, "zed@example.org", "Aaron@example.org")
    assert await storage.list_users() == sorted(
        [ALICE, BOB, CAROL, "zed@example.org", "Aaron@example.org"]
    )


async def test_list_users_of_one_domain(storage: Storage) -> None:
    # Neither a subdomain nor a domain ending with the same letters belongs to example.org.
    await create(
        storage, BOB, CAROL, ALICE, "dave@sub.example.org", "erin@notexample.org", "f_1@ex_a.org"
    )
    assert await storage.list_users("example.org") == [ALICE, BOB]
    assert await storage.list_users("example.net") == [CAROL]
    assert await storage.list_users("ex_a.org") == ["f_1@ex_a.org"]
    assert await storage.list_users("exa.org") == []
    assert await storage.list_users("unknown.example") == []


async def test_list_users_of_an_empty_store(storage: Storage) -> None:
    assert await storage.list_users() == []


async def test_credentials_are_kept_per_mechanism(storage: Storage) -> None:
    sha1, sha256 = scram("SCRAM-SHA-1", seed=1), scram("SCRAM-SHA-256", seed=2)
    assert await storage.create_user(ALICE, [sha1, sha256])
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-1") == sha1
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-256") == sha256
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-512") is None
    assert await storage.get_credentials(BOB, "SCRAM-SHA-1") is None


async def test_credentials_round_trip_exactly(storage: Storage) -> None:
    original = ScramCredentials("SCRAM-SHA-256", bytes(range(256)), 600_000, b"\x00" * 32, b"")
    await storage.create_user(ALICE, [original])
    stored = await storage.get_credentials(ALICE, "SCRAM-SHA-256")
    assert stored == original
    assert stored is not None
    assert type(stored.salt) is bytes


async def test_an_account_may_have_no_credentials(storage: Storage) -> None:
    assert await storage.create_user(ALICE, [])
    assert await storage.user_exists(ALICE)
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-256") is None


async def test_set_credentials_replaces_every_mechanism(storage: Storage) -> None:
    await storage.create_user(ALICE, [scram("SCRAM-SHA-1", 1), scram("SCRAM-SHA-256", 1)])
    assert await storage.set_credentials(ALICE, [scram("SCRAM-SHA-256", 9)])
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-256") == scram("SCRAM-SHA-256", 9)
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-1") is None


async def test_set_credentials_of_an_unknown_user(storage: Storage) -> None:
    assert not await storage.set_credentials(ALICE, [scram()])
    assert not await storage.user_exists(ALICE)


# -- roster ------------------------------------------------------------------------------------


async def test_an_empty_roster_is_at_version_zero(storage: Storage) -> None:
    await create(storage, ALICE)
    roster = await storage.get_roster(ALICE)
    assert (roster.version, roster.items) == (0, [])
    assert (await storage.get_roster("nobody@example.org")).version == 0
    assert await storage.get_roster_item(ALICE, BOB) is None


async def test_every_roster_change_increments_the_version(storage: Storage) -> None:
    await create(storage, ALICE)
    assert await storage.put_roster_item(ALICE, RosterItem(BOB)) == 1
    assert await storage.put_roster_item(ALICE, RosterItem(CAROL)) == 2
    assert await storage.put_roster_item(ALICE, RosterItem(BOB, subscription="to")) == 3
    assert await storage.delete_roster_item(ALICE, CAROL) == 4
    assert (await storage.get_roster(ALICE)).version == 4


async def test_deleting_an_absent_roster_item_keeps_the_version(storage: Storage) -> None:
    await create(storage, ALICE)
    assert await storage.delete_roster_item(ALICE, BOB) == 0
    await storage.put_roster_item(ALICE, RosterItem(BOB))
    assert await storage.delete_roster_item(ALICE, CAROL) == 1
    assert await storage.delete_roster_item(ALICE, BOB) == 2
    assert await storage.delete_roster_item(ALICE, BOB) == 2


async def test_roster_versions_are_per_user(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    await storage.put_roster_item(ALICE, RosterItem(CAROL))
    await storage.put_roster_item(ALICE, RosterItem(BOB))
    assert await storage.put_roster_item(BOB, RosterItem(ALICE)) == 1
    assert [item.jid for item in (await storage.get_roster(BOB)).items] == [ALICE]


async def test_a_roster_item_round_trips_every_field(storage: Storage) -> None:
    await create(storage, ALICE)
    item = RosterItem(
        jid=BOB,
        name="Bob « le bricoleur » 🛠",
        subscription="from",
        ask=True,
        pending_in=True,
        approved=True,
        groups=("Friends", "Équipe", "同事"),
        pending_in_stanza="<presence from='bob@example.org' type='subscribe'><status>hi ✋"
        "</status></presence>",
    )
    await storage.put_roster_item(ALICE, item)
    assert await storage.get_roster_item(ALICE, BOB) == item
    assert (await storage.get_roster(ALICE)).items == [item]


async def test_roster_defaults_round_trip(storage: Storage) -> None:
    await create(storage, ALICE)
    await storage.put_roster_item(ALICE, RosterItem(BOB))
    stored = await storage.get_roster_item(ALICE, BOB)
    assert stored == RosterItem(BOB)
    assert stored is not None
    assert stored.groups == ()
    assert stored.name is None
    assert stored.pending_in_stanza is None


async def test_groups_keep_their_order(storage: Storage) -> None:
    await create(storage, ALICE)
    groups = ("zeta", "Alpha", 'a "quoted" [group], with, commas', "")
    await storage.put_roster_item(ALICE, RosterItem(BOB, groups=groups))
    stored = await storage.get_roster_item(ALICE, BOB)
    assert stored is not None
    assert stored.groups == groups


async def test_putting_an_item_again_replaces_it(storage: Storage) -> None:
    await create(storage, ALICE)
    await storage.put_roster_item(
        ALICE, RosterItem(BOB, name="Bob", groups=("A",), pending_in=True, pending_in_stanza="<p/>")
    )
    replacement = RosterItem(BOB, subscription="both")
    await storage.put_roster_item(ALICE, replacement)
    roster = await storage.get_roster(ALICE)
    assert roster.items == [replacement]


async def test_get_roster_returns_invisible_items_too(storage: Storage) -> None:
    await create(storage, ALICE)
    hidden = RosterItem(
        BOB, pending_in=True, pending_in_stanza="<presence type='subscribe'/>", in_roster=False
    )
    shown = RosterItem(CAROL, subscription="both")
    await storage.put_roster_item(ALICE, hidden)
    await storage.put_roster_item(ALICE, shown)
    items = {item.jid: item for item in (await storage.get_roster(ALICE)).items}
    assert items == {BOB: hidden, CAROL: shown}
    assert not items[BOB].visible


async def test_deleting_a_roster_item(storage: Storage) -> None:
    await create(storage, ALICE)
    await storage.put_roster_item(ALICE, RosterItem(BOB))
    await storage.put_roster_item(ALICE, RosterItem(CAROL))
    await storage.delete_roster_item(ALICE, BOB)
    assert await storage.get_roster_item(ALICE, BOB) is None
    assert [item.jid for item in (await storage.get_roster(ALICE)).items] == [CAROL]


async def test_concurrent_roster_changes_get_distinct_versions(storage: Storage) -> None:
    await create(storage, ALICE)
    versions = await asyncio.gather(
        *(storage.put_roster_item(ALICE, RosterItem(f"contact{i}@example.org")) for i in range(50))
    )
    assert sorted(versions) == list(range(1, 51))
    assert (await storage.get_roster(ALICE)).version == 50


# -- offline messages --------------------------------------------------------------------------


async def test_offline_messages_come_back_oldest_first(storage: Storage) -> None:
    await create(storage, ALICE)
    ids = [
        await storage.store_offline(ALICE, f"<message id='{n}'/>", 1000.0 + n, sender=BOB)
        for n in range(5)
    ]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    fetched = await storage.fetch_offline(ALICE)
    assert fetched == [
        OfflineMessage(id, f"<message id='{n}'/>", 1000.0 + n, BOB) for n, id in enumerate(ids)
    ]


async def test_offline_expiry_removes_messages_stored_before_the_limit(
    storage: Storage,
) -> None:
    await create(storage, ALICE, BOB)
    for n in range(4):
        await storage.store_offline(ALICE, f"<message id='{n}'/>", 1000.0 + n, sender=BOB)
    await storage.store_offline(BOB, "<message id='b'/>", 1000.5, sender=ALICE)
    assert await storage.expire_offline(1002.0) == 3  # alice's 0 and 1, bob's one
    assert [m.stamp for m in await storage.fetch_offline(ALICE)] == [1002.0, 1003.0]
    assert await storage.fetch_offline(BOB) == []
    assert await storage.count_offline(ALICE) == 2


async def test_offline_message_fields_round_trip(storage: Storage) -> None:
    await create(storage, ALICE)
    stanza = "<message><body>Grüße 👋 — 你好</body></message>"
    id = await storage.store_offline(ALICE, stanza, 1_700_000_000.123456)
    assert await storage.fetch_offline(ALICE) == [
        OfflineMessage(id, stanza, 1_700_000_000.123456, "")
    ]


async def test_fetch_offline_is_limited_and_keeps_the_messages(storage: Storage) -> None:
    await create(storage, ALICE)
    ids = [await storage.store_offline(ALICE, f"<m{n}/>", float(n)) for n in range(10)]
    assert [m.id for m in await storage.fetch_offline(ALICE, limit=3)] == ids[:3]
    assert [m.id for m in await storage.fetch_offline(ALICE, limit=3)] == ids[:3]
    assert await storage.fetch_offline(ALICE, limit=0) == []
    assert await storage.count_offline(ALICE) == 10


async def test_delete_some_offline_messages_then_fetch_the_rest(storage: Storage) -> None:
    await create(storage, ALICE)
    ids = [await storage.store_offline(ALICE, f"<m{n}/>", float(n)) for n in range(6)]
    await storage.delete_offline(ALICE, [ids[0], ids[2], ids[3]])
    assert [m.id for m in await storage.fetch_offline(ALICE)] == [ids[1], ids[4], ids[5]]
    assert await storage.count_offline(ALICE) == 3
    await storage.delete_offline(ALICE, [])
    await storage.delete_offline(ALICE, [ids[0]])  # already gone: nothing happens
    assert await storage.count_offline(ALICE) == 3


async def test_ids_keep_increasing_after_the_newest_message_was_deleted(storage: Storage) -> None:
    await create(storage, ALICE)
    first = await storage.store_offline(ALICE, "<m1/>", 1.0)
    await storage.delete_offline(ALICE, [first])
    second = await storage.store_offline(ALICE, "<m2/>", 2.0)
    assert second > first


async def test_offline_queues_are_per_user(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    alice_id = await storage.store_offline(ALICE, "<for-alice/>", 1.0)
    bob_id = await storage.store_offline(BOB, "<for-bob/>", 2.0)
    assert [m.stanza for m in await storage.fetch_offline(ALICE)] == ["<for-alice/>"]
    assert await storage.count_offline(BOB) == 1
    # One user's delivery cannot delete another user's messages, even by id.
    await storage.delete_offline(ALICE, [bob_id])
    assert await storage.count_offline(BOB) == 1
    await storage.delete_offline(ALICE, [alice_id])
    assert await storage.count_offline(ALICE) == 0
    assert await storage.count_offline("nobody@example.org") == 0
    assert await storage.fetch_offline("nobody@example.org") == []


# -- vCard -------------------------------------------------------------------------------------


async def test_vcard_set_get_replace_delete(storage: Storage) -> None:
    await create(storage, ALICE)
    assert await storage.get_vcard(ALICE) is None
    first = "<vCard xmlns='vcard-temp'><FN>Alice Ælfwine</FN></vCard>"
    second = "<vCard xmlns='vcard-temp'><NICKNAME>爱丽丝</NICKNAME></vCard>"
    await storage.set_vcard(ALICE, first)
    assert await storage.get_vcard(ALICE) == first
    await storage.set_vcard(ALICE, second)
    assert await storage.get_vcard(ALICE) == second
    await storage.set_vcard(ALICE, None)
    assert await storage.get_vcard(ALICE) is None
    await storage.set_vcard(ALICE, None)  # deleting what is not there is fine
    assert await storage.get_vcard(BOB) is None


# -- accounts own their data -------------------------------------------------------------------


async def test_delete_user_wipes_everything_it_owned(storage: Storage) -> None:
    await storage.create_user(ALICE, [scram("SCRAM-SHA-1"), scram("SCRAM-SHA-256")])
    await create(storage, BOB)
    await storage.put_roster_item(ALICE, RosterItem(BOB, subscription="both"))
    await storage.put_roster_item(BOB, RosterItem(ALICE, subscription="both"))
    await storage.store_offline(ALICE, "<m/>", 1.0)
    await storage.store_offline(BOB, "<m/>", 1.0)
    await storage.set_vcard(ALICE, "<vCard xmlns='vcard-temp'/>")

    assert await storage.delete_user(ALICE)
    # A new account of the same name starts clean.
    assert await storage.create_user(ALICE, [])
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-1") is None
    assert await storage.get_credentials(ALICE, "SCRAM-SHA-256") is None
    roster = await storage.get_roster(ALICE)
    assert (roster.version, roster.items) == (0, [])
    assert await storage.count_offline(ALICE) == 0
    assert await storage.get_vcard(ALICE) is None
    # Other accounts keep what they own, including their roster item about the deleted one.
    assert (await storage.get_roster(BOB)).items == [RosterItem(ALICE, subscription="both")]
    assert await storage.count_offline(BOB) == 1


async def test_writes_for_an_unknown_account_fail(storage: Storage) -> None:
    """Nothing is stored for an account that does not exist: a later one would inherit it."""
    with pytest.raises(StorageError):
        await storage.store_offline(ALICE, "<m/>", 1.0)
    with pytest.raises(StorageError):
        await storage.put_roster_item(ALICE, RosterItem(BOB))
    with pytest.raises(StorageError):
        await storage.set_vcard(ALICE, "<vCard xmlns='vcard-temp'/>")
    # The store is still usable, and the account starts empty.
    await create(storage, ALICE)
    assert await storage.count_offline(ALICE) == 0
    assert (await storage.get_roster(ALICE)).version == 0
    assert await storage.get_vcard(ALICE) is None


async def test_unicode_jids_everywhere(storage: Storage) -> None:
    contact = "ζωή@παράδειγμα.ελ"
    assert await storage.create_user(UNICODE, [scram()])
    assert await storage.user_exists(UNICODE)
    assert await storage.list_users("exämple.org") == [UNICODE]
    assert await storage.get_credentials(UNICODE, "SCRAM-SHA-256") == scram()
    await storage.put_roster_item(UNICODE, RosterItem(contact, name="Ζωή"))
    assert await storage.get_roster_item(UNICODE, contact) == RosterItem(contact, name="Ζωή")
    await storage.store_offline(UNICODE, "<message><body>🦤</body></message>", 1.0, contact)
    assert [(m.stanza, m.sender) for m in await storage.fetch_offline(UNICODE)] == [
        ("<message><body>🦤</body></message>", contact)
    ]
    await storage.set_vcard(UNICODE, "<vCard xmlns='vcard-temp'><FN>Ñandú</FN></vCard>")
    assert await storage.get_vcard(UNICODE) == "<vCard xmlns='vcard-temp'><FN>Ñandú</FN></vCard>"
    assert await storage.delete_user(UNICODE)
    assert await storage.list_users() == []


async def test_concurrent_calls_each_get_their_own_result(storage: Storage) -> None:
    # Concurrent calls may run in any order (a pool runs them at once), so none of these
    # depends on another.
    await create(storage, ALICE, BOB)
    await storage.set_vcard(BOB, "<vCard xmlns='vcard-temp'/>")
    results = await asyncio.gather(
        storage.user_exists(ALICE),
        storage.user_exists("dave@example.org"),
        storage.create_user(ALICE, []),
        storage.create_user(CAROL, []),
        storage.get_vcard(BOB),
        storage.count_offline(ALICE),
    )
    assert list(results) == [True, False, False, True, "<vCard xmlns='vcard-temp'/>", 0]


async def test_blocklist_block_unblock_and_unblock_all(storage: Storage) -> None:
    await create(storage, ALICE)
    assert await storage.get_blocklist(ALICE) == []
    await storage.block(ALICE, [CAROL, BOB, "spam.example"])
    await storage.block(ALICE, [BOB])  # again: no duplicate
    assert await storage.get_blocklist(ALICE) == sorted([BOB, CAROL, "spam.example"])
    await storage.unblock(ALICE, [CAROL])
    assert await storage.get_blocklist(ALICE) == sorted([BOB, "spam.example"])
    await storage.unblock(ALICE, None)
    assert await storage.get_blocklist(ALICE) == []


async def test_deleting_a_user_deletes_its_blocklist(storage: Storage) -> None:
    await create(storage, ALICE)
    await storage.block(ALICE, [BOB])
    await storage.delete_user(ALICE)
    await create(storage, ALICE)
    assert await storage.get_blocklist(ALICE) == []
