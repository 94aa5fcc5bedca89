"""The message archive part of the :class:`roost.storage.Storage` contract (XEP-0313 storage).

Runs through the shared ``storage`` fixture, so that every backend meets the same contract.
"""

from __future__ import annotations

import pytest

from roost.storage import ScramCredentials, Storage, StorageError
from roost.storage.base import (
    ArchivePage,
    ArchivePrefs,
    ArchiveQuery,
    ArchiveRecord,
    UnknownArchiveId,
)
from roost.storage.postgres_archive import STATEMENT_ROWS

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.net"

CREDENTIALS = [ScramCredentials("SCRAM-SHA-256", b"salt", 4096, b"k" * 32, b"s" * 32)]


async def create(storage: Storage, *jids: str) -> None:
    for jid in jids:
        assert await storage.create_user(jid, CREDENTIALS)


def seq_of(n: int) -> int:
    """Message n's seq: at 1000 + n seconds."""
    return (1_000 + n) * 1_000_000


def archive_id(n: int) -> str:
    return f"{seq_of(n):013x}-{n:04d}"


def record(
    n: int,
    owner: str = ALICE,
    with_jid: str = BOB,
    direction: str = "in",
) -> ArchiveRecord:
    return ArchiveRecord(
        owner=owner,
        seq=seq_of(n),
        id=archive_id(n),
        with_jid=with_jid,
        direction=direction,
        stanza=f"<message><body>{n}</body></message>",
    )


def ids(page: ArchivePage) -> list[str]:
    return [message.id for message in page.messages]


def numbered(*ns: int) -> list[str]:
    return [archive_id(n) for n in ns]


async def archive(storage: Storage, count: int) -> None:
    await storage.archive_messages([record(n) for n in range(count)])


# -- writing and reading back -------------------------------------------------------------------


async def test_archived_messages_come_back_in_seq_order(storage: Storage) -> None:
    await create(storage, ALICE)
    # Batches may arrive in any order, and a batch need not be sorted: seq decides.
    await storage.archive_messages([record(2), record(1)])
    await storage.archive_messages([record(3), record(0)])
    page = await storage.query_archive(ALICE, ArchiveQuery())
    assert ids(page) == numbered(0, 1, 2, 3)
    assert (page.complete, page.count) == (True, 4)
    assert [m.stamp for m in page.messages] == [1000.0, 1001.0, 1002.0, 1003.0]


async def test_every_field_round_trips(storage: Storage) -> None:
    await create(storage, ALICE)
    stanza = "<message to='a' from='b'><body>ünïcode &amp; more</body></message>"
    seq = 1_234_567_891_234_567
    record_ = ArchiveRecord(ALICE, seq, f"{seq:013x}suffix", "bob@example.org/phone", "out", stanza)
    assert record_.stamp == 1_234_567_891.234567
    await storage.archive_messages([record_])
    (message,) = (await storage.query_archive(ALICE, ArchiveQuery())).messages
    assert (message.id, message.stamp, message.with_jid, message.direction, message.stanza) == (
        f"{seq:013x}suffix",
        1_234_567_891.234567,
        "bob@example.org/phone",
        "out",
        stanza,
    )


async def test_text_that_needs_escaping_in_any_encoding_round_trips(storage: Storage) -> None:
    # Quotes, backslashes, control characters XML allows, characters outside the BMP, and a
    # resource with slashes and quotes: whatever the backend's batch encoding, they come back.
    await create(storage, ALICE)
    stanza = (
        "<message id='a\\b\"c'><body>line one\nline\ttwo\r\n"
        "\\u0041 \\n \"quoted\" 'single' \U0001f600 \u2028 \x7f</body></message>"
    )
    with_jid = 'bob@example.org/res/with "quote" \\ slash'
    record_ = ArchiveRecord(ALICE, seq_of(1), archive_id(1), with_jid, "in", stanza)
    await storage.archive_messages([record_])
    (message,) = (await storage.query_archive(ALICE, ArchiveQuery())).messages
    assert (message.with_jid, message.stanza) == (with_jid, stanza)


async def test_the_last_seq_is_the_greatest_of_any_owner(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    assert await storage.last_archive_seq() == 0
    await storage.archive_messages([record(5, owner=BOB), record(3)])
    assert await storage.last_archive_seq() == seq_of(5)


async def test_archives_are_per_owner(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    await storage.archive_messages(
        [record(1, owner=ALICE), record(2, owner=BOB, with_jid=ALICE), record(3, owner=BOB)]
    )
    assert ids(await storage.query_archive(ALICE, ArchiveQuery())) == numbered(1)
    assert ids(await storage.query_archive(BOB, ArchiveQuery())) == numbered(2, 3)
    assert ids(await storage.query_archive(CAROL, ArchiveQuery())) == []


async def test_a_repeated_record_or_an_unknown_owner_skips_only_that_record(
    storage: Storage,
) -> None:
    # A batch written again (its commit reported failed) repeats owner, seq and id.
    await create(storage, ALICE)
    await storage.archive_messages([record(1)])
    again = ArchiveRecord(ALICE, seq_of(1), archive_id(1), CAROL, "out", "<message/>")
    await storage.archive_messages([again, record(2, owner=CAROL), record(3)])
    page = await storage.query_archive(ALICE, ArchiveQuery())
    assert ids(page) == numbered(1, 3)
    assert page.messages[0].with_jid == BOB  # the first record stays
    assert ids(await storage.query_archive(CAROL, ArchiveQuery())) == []


def twin(n: int, tail: str, owner: str = ALICE) -> ArchiveRecord:
    """A record of message n's seq as another node would make it: the same seq, its own id."""
    return ArchiveRecord(owner, seq_of(n), f"{seq_of(n):013x}{tail}", CAROL, "in", f"<{tail}/>")


async def test_one_seq_from_two_nodes_keeps_both_records_in_id_order(storage: Storage) -> None:
    # Each node hands out seqs on its own clock, so two nodes can archive in one microsecond:
    # for two owners (one table in PostgreSQL) or for one. Nothing may be lost, and the id
    # orders the records of one seq.
    await create(storage, ALICE, BOB)
    await storage.archive_messages([record(1), twin(2, "-b"), twin(2, "-b", owner=BOB)])
    await storage.archive_messages([twin(2, "-a"), twin(2, "-c"), record(3)])  # merged in
    await storage.archive_messages([twin(2, "-a")])  # written again: nothing changes
    a, b, c = (f"{seq_of(2):013x}{tail}" for tail in ("-a", "-b", "-c"))
    everything = await storage.query_archive(ALICE, ArchiveQuery())
    assert ids(everything) == [archive_id(1), a, b, c, archive_id(3)]
    assert [m.stamp for m in everything.messages[1:4]] == [seq_of(2) / 1e6] * 3
    assert ids(await storage.query_archive(BOB, ArchiveQuery())) == [b]
    # Page positions and filters between records of one seq.
    after_a = await storage.query_archive(ALICE, ArchiveQuery(after=a, limit=1))
    assert (ids(after_a), after_a.complete) == ([b], False)
    before_c = await storage.query_archive(ALICE, ArchiveQuery(before=c, backward=True, limit=2))
    assert ids(before_c) == [a, b]
    between = ArchiveQuery(after_id=a, before_id=archive_id(3))
    assert ids(await storage.query_archive(ALICE, between)) == [b, c]
    named = ArchiveQuery(ids=(c, archive_id(1), a))
    assert ids(await storage.query_archive(ALICE, named)) == [archive_id(1), a, c]
    backward = await storage.query_archive(ALICE, ArchiveQuery(backward=True, limit=4))
    assert ids(backward) == [a, b, c, archive_id(3)]
    with pytest.raises(UnknownArchiveId):
        await storage.query_archive(BOB, ArchiveQuery(after=a))


async def test_an_empty_batch_is_fine(storage: Storage) -> None:
    await storage.archive_messages([])


async def test_a_batch_of_many_records_is_stored_whole(storage: Storage) -> None:
    # More than one statement's worth in PostgreSQL (postgres_archive.STATEMENT_ROWS), for
    # two owners, one of them unknown.
    await create(storage, ALICE)
    count = 2 * STATEMENT_ROWS + 7
    await storage.archive_messages(
        [record(n, owner=ALICE if n % 3 else CAROL) for n in range(count)]
    )
    alices = [n for n in range(count) if n % 3]
    assert (await storage.query_archive(ALICE, ArchiveQuery(limit=0))).count == len(alices)
    last = await storage.query_archive(ALICE, ArchiveQuery(limit=2, backward=True))
    assert ids(last) == numbered(*alices[-2:])
    assert ids(await storage.query_archive(CAROL, ArchiveQuery())) == []


async def test_deleting_the_owner_deletes_the_archive_and_prefs(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    await archive(storage, 5)
    await storage.archive_messages([record(n, owner=BOB, with_jid=ALICE) for n in (10, 11)])
    await storage.set_archive_prefs(ALICE, ArchivePrefs("never"))
    assert await storage.delete_user(ALICE)
    await create(storage, ALICE)  # a new account of the same name inherits nothing
    assert ids(await storage.query_archive(ALICE, ArchiveQuery())) == []
    assert await storage.get_archive_prefs(ALICE) is None
    assert len((await storage.query_archive(BOB, ArchiveQuery())).messages) == 2


# -- paging -------------------------------------------------------------------------------------


async def test_a_limited_page_is_not_complete(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 10)
    page = await storage.query_archive(ALICE, ArchiveQuery(limit=4))
    assert ids(page) == numbered(0, 1, 2, 3)
    assert (page.complete, page.count) == (False, 10)
    exact = await storage.query_archive(ALICE, ArchiveQuery(limit=10))
    assert (len(exact.messages), exact.complete) == (10, True)


async def test_paging_forward_with_after_visits_every_message_once(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 23)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await storage.query_archive(ALICE, ArchiveQuery(after=after, limit=5))
        seen += ids(page)
        assert page.count == 23  # the count ignores the page position
        if page.complete:
            break
        after = page.messages[-1].id
    assert seen == numbered(*range(23))


async def test_paging_backward_from_the_end_visits_every_message_once(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 23)
    pages: list[list[str]] = []
    before: str | None = None
    while True:
        page = await storage.query_archive(
            ALICE, ArchiveQuery(before=before, backward=True, limit=5)
        )
        pages.append(ids(page))
        if page.complete:
            break
        before = page.messages[0].id
    # Each page is oldest first; the pages go from the newest to the oldest.
    assert pages[0] == numbered(18, 19, 20, 21, 22)
    assert pages[-1] == numbered(0, 1, 2)
    assert [i for page in reversed(pages) for i in page] == numbered(*range(23))


async def test_after_and_before_together_bound_a_range(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 10)
    forward = ArchiveQuery(after=archive_id(2), before=archive_id(8), limit=3)
    page = await storage.query_archive(ALICE, forward)
    assert (ids(page), page.complete) == (numbered(3, 4, 5), False)
    backward = ArchiveQuery(after=archive_id(2), before=archive_id(8), backward=True, limit=3)
    page = await storage.query_archive(ALICE, backward)
    assert (ids(page), page.complete) == (numbered(5, 6, 7), False)


async def test_a_page_past_the_end_is_empty_and_complete(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 3)
    page = await storage.query_archive(ALICE, ArchiveQuery(after=archive_id(2)))
    assert (ids(page), page.complete, page.count) == ([], True, 3)
    page = await storage.query_archive(ALICE, ArchiveQuery(before=archive_id(0), backward=True))
    assert (ids(page), page.complete) == ([], True)


async def test_a_zero_limit_only_counts(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 3)
    page = await storage.query_archive(ALICE, ArchiveQuery(limit=0))
    assert (ids(page), page.count) == ([], 3)


async def test_unknown_ids_are_reported(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    await archive(storage, 3)
    await storage.archive_messages([record(n, owner=BOB, with_jid=ALICE) for n in (10, 11)])
    for query in (
        ArchiveQuery(after="nope"),
        ArchiveQuery(before="nope", backward=True),
        ArchiveQuery(after_id="nope"),
        ArchiveQuery(before_id="nope"),
        ArchiveQuery(ids=(archive_id(1), "nope")),
    ):
        with pytest.raises(UnknownArchiveId) as caught:
            await storage.query_archive(ALICE, query)
        assert caught.value.archive_id == "nope"
    # An id of another user's archive, or with the right seq but not the right rest, or
    # that does not begin with a seq, is not in this archive.
    for unknown in (archive_id(10), archive_id(1)[:-1] + "x", "zz" + archive_id(1)):
        with pytest.raises(UnknownArchiveId):
            await storage.query_archive(ALICE, ArchiveQuery(after=unknown))


# -- filters ------------------------------------------------------------------------------------


async def test_with_a_bare_jid_matches_every_resource_of_that_party(storage: Storage) -> None:
    await create(storage, ALICE)
    await storage.archive_messages(
        [
            record(0, with_jid=BOB),
            record(1, with_jid=f"{BOB}/phone"),
            record(2, with_jid=CAROL),
            record(3, with_jid=f"{BOB}/laptop", direction="out"),
            record(4, with_jid=f"{CAROL}/phone"),
        ]
    )
    page = await storage.query_archive(ALICE, ArchiveQuery(with_jid=BOB))
    assert (ids(page), page.count) == (numbered(0, 1, 3), 3)
    page = await storage.query_archive(ALICE, ArchiveQuery(with_jid=f"{BOB}/phone"))
    assert ids(page) == numbered(1)
    page = await storage.query_archive(ALICE, ArchiveQuery(with_jid=CAROL))
    assert ids(page) == numbered(2, 4)


async def test_start_and_end_are_inclusive(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 10)  # at 1000.0 .. 1009.0
    page = await storage.query_archive(ALICE, ArchiveQuery(start=1003.0, end=1006.0))
    assert (ids(page), page.count) == (numbered(3, 4, 5, 6), 4)
    assert ids(await storage.query_archive(ALICE, ArchiveQuery(start=1008.0))) == numbered(8, 9)
    assert ids(await storage.query_archive(ALICE, ArchiveQuery(end=1000.5))) == numbered(0)
    assert ids(await storage.query_archive(ALICE, ArchiveQuery(start=1006.0, end=1003.0))) == []


async def test_start_and_end_are_exact_to_the_microsecond(storage: Storage) -> None:
    await create(storage, ALICE)
    base = 1_700_000_000_123_456
    await storage.archive_messages(
        [
            ArchiveRecord(ALICE, base + n, f"{base + n:013x}x", BOB, "in", "<message/>")
            for n in (0, 1, 2)
        ]
    )
    page = await storage.query_archive(ALICE, ArchiveQuery(start=(base + 1) / 1e6))
    assert [m.stamp for m in page.messages] == [(base + 1) / 1e6, (base + 2) / 1e6]
    page = await storage.query_archive(ALICE, ArchiveQuery(end=(base + 1) / 1e6))
    assert [m.stamp for m in page.messages] == [base / 1e6, (base + 1) / 1e6]


async def test_after_id_and_before_id_are_filters_not_page_positions(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 10)
    query = ArchiveQuery(after_id=archive_id(2), before_id=archive_id(7), limit=2)
    page = await storage.query_archive(ALICE, query)
    assert (ids(page), page.count, page.complete) == (numbered(3, 4), 4, False)
    # A last page (backward) stays inside the filtered range.
    query = ArchiveQuery(after_id=archive_id(2), before_id=archive_id(7), backward=True, limit=2)
    assert ids(await storage.query_archive(ALICE, query)) == numbered(5, 6)


async def test_ids_selects_those_messages_in_archive_order(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 10)
    query = ArchiveQuery(ids=(archive_id(7), archive_id(2), archive_id(7)))
    page = await storage.query_archive(ALICE, query)
    assert (ids(page), page.count, page.complete) == (numbered(2, 7), 2, True)


async def test_filters_combine_with_paging(storage: Storage) -> None:
    await create(storage, ALICE)
    await storage.archive_messages([record(n, with_jid=BOB if n % 2 else CAROL) for n in range(20)])
    query = ArchiveQuery(with_jid=BOB, start=1005.0, after=archive_id(9), limit=3)
    page = await storage.query_archive(ALICE, query)
    # Bob's messages are the odd ones; from 1005 on that is 5, 7, 9, ... 19: 8 of them.
    assert (ids(page), page.count, page.complete) == (numbered(11, 13, 15), 8, False)


async def test_a_count_above_the_limit_is_not_given(storage: Storage) -> None:
    await create(storage, ALICE)
    await archive(storage, 12)
    page = await storage.query_archive(ALICE, ArchiveQuery(limit=5, count_limit=10))
    assert (len(page.messages), page.count) == (5, None)
    page = await storage.query_archive(ALICE, ArchiveQuery(limit=5, count_limit=12))
    assert page.count == 12
    page = await storage.query_archive(ALICE, ArchiveQuery(limit=5, count=False))
    assert (len(page.messages), page.count) == (5, None)


# -- preferences --------------------------------------------------------------------------------


async def test_prefs_are_none_until_set_then_round_trip_and_replace(storage: Storage) -> None:
    await create(storage, ALICE)
    assert await storage.get_archive_prefs(ALICE) is None
    prefs = ArchivePrefs("roster", always=(BOB, "ünï@example.org"), never=(f"{CAROL}/x",))
    await storage.set_archive_prefs(ALICE, prefs)
    assert await storage.get_archive_prefs(ALICE) == prefs
    await storage.set_archive_prefs(ALICE, ArchivePrefs("never"))
    assert await storage.get_archive_prefs(ALICE) == ArchivePrefs("never")


async def test_prefs_of_an_unknown_account_cannot_be_set(storage: Storage) -> None:
    with pytest.raises(StorageError):
        await storage.set_archive_prefs(CAROL, ArchivePrefs("never"))


async def test_expiry_removes_what_was_handled_before_the_limit(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    await storage.archive_messages([record(n) for n in range(5)] + [record(-1, owner=BOB)])
    assert await storage.expire_archive(1002.0) == 3  # alice's 0 and 1, bob's one
    assert ids(await storage.query_archive(ALICE, ArchiveQuery())) == numbered(2, 3, 4)
    assert ids(await storage.query_archive(BOB, ArchiveQuery())) == []
    assert await storage.expire_archive(1002.0) == 0  # idempotent


# -- many batches -------------------------------------------------------------------------------
# A store may keep a batch together (SQLite keeps an owner's records of one batch in one row),
# so what was written in many batches, or out of order, must read back as one archive.


async def test_many_batches_read_back_as_one_archive_both_ways(storage: Storage) -> None:
    await create(storage, ALICE, BOB)
    for start in range(0, 40, 7):
        await storage.archive_messages(
            [record(n, with_jid=CAROL if n % 3 else BOB) for n in range(start, min(start + 7, 40))]
            + [record(n + 100, owner=BOB, with_jid=ALICE) for n in range(start, start + 2)]
        )
    forward: list[str] = []
    after: str | None = None
    while True:
        page = await storage.query_archive(ALICE, ArchiveQuery(after=after, limit=6))
        forward += ids(page)
        assert page.count == 40
        if page.complete:
            break
        after = page.messages[-1].id
    assert forward == numbered(*range(40))
    backward: list[str] = []
    before: str | None = None
    while True:
        page = await storage.query_archive(
            ALICE, ArchiveQuery(before=before, backward=True, limit=9)
        )
        backward = ids(page) + backward
        if page.complete:
            break
        before = page.messages[0].id
    assert backward == numbered(*range(40))
    with_bob = await storage.query_archive(ALICE, ArchiveQuery(with_jid=BOB, limit=100))
    assert ids(with_bob) == numbered(*range(0, 40, 3))
    window = ArchiveQuery(start=1_005.0, end=1_020.0, after_id=archive_id(6), limit=100)
    assert ids(await storage.query_archive(ALICE, window)) == numbered(*range(7, 21))
    assert ids(await storage.query_archive(BOB, ArchiveQuery(limit=100))) == numbered(
        *(n + 100 for start in range(0, 40, 7) for n in range(start, start + 2))
    )


async def test_a_batch_older_than_what_is_stored_interleaves_in_seq_order(
    storage: Storage,
) -> None:
    await create(storage, ALICE)
    await storage.archive_messages([record(n) for n in (10, 20, 30)])
    # Out of order within the batch, overlapping what is stored, with one record stored
    # already: the stored record stays.
    late = [record(n) for n in (25, 5, 15, 35)]
    late.append(ArchiveRecord(ALICE, seq_of(20), archive_id(20), CAROL, "out", "<message/>"))
    await storage.archive_messages(late)
    page = await storage.query_archive(ALICE, ArchiveQuery(limit=100))
    assert ids(page) == numbered(5, 10, 15, 20, 25, 30, 35)
    assert page.messages[3].with_jid == BOB
    backward = await storage.query_archive(ALICE, ArchiveQuery(backward=True, limit=3))
    assert ids(backward) == numbered(25, 30, 35)
    assert await storage.last_archive_seq() == seq_of(35)
    assert await storage.expire_archive(1_016.0) == 3
    assert ids(await storage.query_archive(ALICE, ArchiveQuery())) == numbered(20, 25, 30, 35)
