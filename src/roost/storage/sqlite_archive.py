"""The message archive (XEP-0313) of :mod:`roost.storage.sqlite`: the functions its storage
thread runs for :class:`~roost.storage.sqlite.SQLiteStorage`'s archive methods.

Why chunks. The archive takes two records per message (the sender's and the recipient's copy),
and with one table row per record, writing them was most of what archiving cost: ~13 µs per
record in SQLite alone (a row and an index entry), on the core the event loop shares. So a
batch of records (see :mod:`roost.modules.mam`: up to a second of traffic) is stored as one
row per owner, an ``archive_chunk`` holding that owner's records of the batch joined into one
text (see ``RECORD`` below), in seq order. Under load a busy owner gets many records per chunk,
and the row and its two index entries are shared by them all: ~7 µs per record with the
grouping and joining, against 18 µs with a row each (docs/benchmarks-mam.md); a quiet owner
gets chunks of one record, no worse than a row each. Reading decodes whole chunks, which at
most ``CHUNK_RECORDS`` records bound.

A record is known by its seq and id (:mod:`roost.storage.base`), and an owner's records are in
(seq, id) order: two nodes can hand out one seq. The invariant that makes queries simple: **the
chunks of one owner never overlap** (for any two, one's ``last_seq`` is below the other's
``first_seq``), so the records of one seq share a chunk. Records normally arrive in order, so
a new chunk starts after the owner's last one. When it does not (a batch written again after
its commit was reported failed; the nodes of ``roost up --nodes N``, which share the file, each
writing a second of one owner's traffic), the chunks it would overlap are read, merged with it
(a record stored already keeps its stored text: a repeated record does nothing, as the
contract says) and written back. That costs more than an append, and stays correct. So an owner's
records in order are its chunks in ``first_seq`` order, each read in order; a query finds
the first chunk of its range through the index on (owner, first_seq) and reads forward or
backward until it has a page.

A chunk also spans at most ``CHUNK_SPAN`` microseconds of seq, so that the chunks straddling an
expiry time are found through the index on ``last_seq`` within a bounded range; expiry deletes
whole chunks before the time and rewrites the few that straddle it.

``every_record`` reads the records back one per row, as they were stored before schema
version 4 (which dropped that table), for ``roost storage migrate``.

"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from itertools import islice
from operator import attrgetter
from typing import Any, Final

from roost.storage.base import (
    ArchivedMessage,
    ArchivePage,
    ArchivePrefs,
    ArchiveQuery,
    ArchiveRecord,
    UnknownArchiveId,
    archive_id_seq,
)

CHUNK_RECORDS: Final = 256  # records per chunk at most (what one id lookup decodes)
CHUNK_SPAN: Final = 60_000_000  # µs of seq one chunk spans at most
_LOWEST: Final = -(2**63)
_HIGHEST: Final = 2**63 - 1

# A chunk's text: its records joined by RECORD, each its fields joined by FIELD (the stanza
# last, so that only RECORD may not appear in it). Both are C0 controls, which XML 1.0 does not
# allow in a document, JIDs do not allow (RFC 7622 via PRECIS), and archive ids never hold: a
# parsed stanza cannot contain them, and a record that does anyway has them replaced by U+FFFD
# (see _sanitized). Joining strings costs a quarter of JSON encoding, which must scan and escape
# every stanza, and splitting them less than decoding it.
RECORD: Final = "\x1e"
FIELD: Final = "\x1f"
_Row = tuple[int, str, str, str, str]  # seq, id, with_jid (as given), direction, stanza
_Key = tuple[int, str]  # seq, id: what a record is known by, and its place in the archive


def _text(r: ArchiveRecord) -> str:
    text = f"{r.seq}{FIELD}{r.id}{FIELD}{r.with_jid}{FIELD}{r.direction}{FIELD}{r.stanza}"
    if RECORD in text or text.count(FIELD) != 4:
        return _sanitized(r)
    return text


def _sanitized(r: ArchiveRecord) -> str:
    fields = (r.id, r.with_jid, r.direction, r.stanza)
    clean = [field.replace(RECORD, "\ufffd").replace(FIELD, "\ufffd") for field in fields]
    return FIELD.join([str(r.seq), *clean])


def _row(text: str) -> _Row:
    seq, archive_id, with_jid, direction, stanza = text.split(FIELD, 4)
    return int(seq), archive_id, with_jid, direction, stanza


def _bare(jid: str) -> str:
    return jid.partition("/")[0]  # RFC 7622 §3.1: the first slash


def _chunks(seqs: list[int]) -> Iterator[tuple[int, int]]:
    """Slices [start, end) of ``seqs`` (sorted) as chunks within CHUNK_RECORDS and CHUNK_SPAN,
    except that the records of one seq (from different nodes) always share a chunk."""
    start = 0
    while start < len(seqs):
        end = start + 1
        limit = seqs[start] + CHUNK_SPAN
        stop = min(len(seqs), start + CHUNK_RECORDS)
        while end < stop and seqs[end] <= limit:
            end += 1
        while end < len(seqs) and seqs[end] == seqs[end - 1]:
            end += 1
        yield start, end
        start = end


def _insert(
    connection: sqlite3.Connection, owner: str, seqs: list[int], texts: list[str], peers: list[str]
) -> None:
    """Store an owner's records (``seqs`` sorted, with their texts and bare peers) as chunks."""
    connection.executemany(
        "INSERT INTO archive_chunk (owner, first_seq, last_seq, n, peers, records)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                owner,
                seqs[start],
                seqs[end - 1],
                end - start,
                "\n" + "\n".join(set(peers[start:end])) + "\n",
                RECORD.join(texts[start:end]),
            )
            for start, end in _chunks(seqs)
        ),
    )


class ChunkWriter:
    """Appends batches of records as chunks; one per store, run on its storage thread.

    It remembers each owner's last stored seq, so that a batch that starts after it (nearly
    every batch) is appended without first looking for chunks it could overlap: that look-up
    was about a sixth of a batch's cost. What it remembers holds while no other connection
    has written to the file: ``PRAGMA data_version`` changes when one has (the nodes of
    ``roost up --nodes N`` share the file, ``roost user del`` runs beside the server), and
    then everything remembered is dropped. A value remembered too high (a rolled-back batch,
    expired chunks, a deleted account) only sends the next batch to the look-up.
    """

    __slots__ = ("_connection", "_last", "_version")

    def __init__(self) -> None:
        self._connection: sqlite3.Connection | None = None
        self._version = -1
        self._last: dict[str, int] = {}

    def write(self, connection: sqlite3.Connection, _: str, records: list[ArchiveRecord]) -> None:
        (version,) = connection.execute("PRAGMA data_version").fetchone()
        if connection is not self._connection or version != self._version:
            self._connection = connection
            self._version = int(version)
            self._last = {}
        last = self._last
        # Records of accounts deleted (or never created) since the message was routed are
        # left out, instead of failing the whole batch. The owners are checked once per
        # batch: an EXISTS per row would cost more than the insert.
        grouped: dict[str, list[ArchiveRecord]] = {}
        for r in records:
            mine = grouped.get(r.owner)
            if mine is None:
                grouped[r.owner] = [r]
            else:
                mine.append(r)
        owners = list(grouped)
        existing: set[str] = set()
        for start in range(0, len(owners), 500):  # within any SQLite's limit of variables
            chunk = owners[start : start + 500]
            found = connection.execute(
                f"SELECT jid FROM users WHERE jid IN ({', '.join('?' * len(chunk))})", chunk
            )
            existing.update(jid for (jid,) in found)
        for owner, mine in grouped.items():
            if owner in existing:
                last[owner] = _append(connection, owner, mine, last.get(owner))


def _owner_last(connection: sqlite3.Connection, owner: str) -> int:
    """The owner's last stored seq (its chunks do not overlap: the last one's)."""
    found = connection.execute(
        "SELECT last_seq FROM archive_chunk WHERE owner = ? ORDER BY first_seq DESC LIMIT 1",
        (owner,),
    ).fetchone()
    return _LOWEST if found is None else int(found[0])


def _append(
    connection: sqlite3.Connection, owner: str, records: list[ArchiveRecord], known: int | None
) -> int:
    """Store an owner's new records, keeping its chunks apart and its records unique.

    ``known`` is the owner's last stored seq, or at least as high, if known; returns it
    after the records were stored.
    """
    seqs = [r.seq for r in records]
    if any(a >= b for a, b in zip(seqs, islice(seqs, 1, None), strict=False)):
        records = _unique(sorted(records, key=_KEY))  # sorted() is stable: the first stays
        seqs = [r.seq for r in records]
    first, last = seqs[0], seqs[-1]
    if known is None:
        known = _owner_last(connection, owner)
    texts = [_text(r) for r in records]
    peers = [_bare(r.with_jid) for r in records]
    if first <= known:
        # The owner's chunks that could overlap [first, last]: from the one holding
        # ``first`` (or the last before it) onwards, up to ``last``.
        overlapping = connection.execute(
            "SELECT chunk, records FROM archive_chunk WHERE owner = ? AND first_seq <= ?"
            " AND first_seq >= (SELECT coalesce(max(first_seq), ?) FROM archive_chunk"
            "                   WHERE owner = ? AND first_seq <= ?)"
            " AND last_seq >= ?",
            (owner, last, first, owner, first, first),
        ).fetchall()
    else:
        overlapping = []
    if overlapping:
        merged: dict[_Key, tuple[str, str]] = {}
        for _chunk, stored in overlapping:
            for text in stored.split(RECORD):
                row = _row(text)
                merged[row[0], row[1]] = (text, _bare(row[2]))
        for text, peer in zip(texts, peers, strict=True):
            row = _row(text)  # the key as stored (an id could have been sanitized)
            merged.setdefault((row[0], row[1]), (text, peer))  # a stored record stays
        keys = sorted(merged)
        seqs = [key[0] for key in keys]
        texts = [merged[key][0] for key in keys]
        peers = [merged[key][1] for key in keys]
        connection.executemany(
            "DELETE FROM archive_chunk WHERE chunk = ?", ((chunk,) for chunk, _text in overlapping)
        )
    _insert(connection, owner, seqs, texts, peers)
    return max(known, last)


_KEY = attrgetter("seq", "id")


def _unique(records: list[ArchiveRecord]) -> list[ArchiveRecord]:
    """Sorted ``records`` without repeated ones (the first of each seq and id stays)."""
    kept = [records[0]]
    for r in islice(records, 1, None):
        if r.seq != kept[-1].seq or r.id != kept[-1].id:
            kept.append(r)
    return kept


def last_seq(connection: sqlite3.Connection, _: str) -> int:
    (last,) = connection.execute("SELECT max(last_seq) FROM archive_chunk").fetchone()
    return 0 if last is None else int(last)


def _stored(connection: sqlite3.Connection, owner: str, seq: int, archive_id: str) -> bool:
    """Whether the owner's archive holds the record of ``seq`` and ``archive_id``."""
    found = connection.execute(
        "SELECT last_seq, records FROM archive_chunk WHERE owner = ? AND first_seq <= ?"
        " ORDER BY first_seq DESC LIMIT 1",
        (owner, seq),
    ).fetchone()
    if found is None or found[0] < seq:
        return False
    for text in found[1].split(RECORD):
        row = _row(text)
        if row[0] == seq and row[1] == archive_id:
            return True
    return False


def _archive_key(connection: sqlite3.Connection, owner: str, archive_id: str) -> _Key:
    """The key of an id of the owner's archive; UnknownArchiveId when it holds no such id."""
    seq = archive_id_seq(archive_id)
    if seq is not None and _stored(connection, owner, seq, archive_id):
        return seq, archive_id
    raise UnknownArchiveId(archive_id)


def _micros(stamp: float) -> int:
    return round(stamp * 1e6)


class _Filter:
    """The filters of a query (not its page position), as a predicate on stored records.

    ``lo`` and ``hi`` bound seqs, inclusively: the query's time range, and the part of the
    archive a scan reads. ``after`` and ``before`` bound records by key, exclusively: the
    records of one seq are told apart by their ids.
    """

    __slots__ = ("after", "bare", "before", "hi", "ids", "lo", "resource")

    def __init__(self, connection: sqlite3.Connection, owner: str, query: ArchiveQuery) -> None:
        self.bare: str | None = None
        self.resource: str | None = None
        if query.with_jid is not None:
            self.bare, slash, resource = query.with_jid.partition("/")
            self.resource = resource if slash else None
        self.lo, self.hi = _LOWEST, _HIGHEST
        if query.start is not None:
            self.lo = max(self.lo, _micros(query.start))
        if query.end is not None:
            self.hi = min(self.hi, _micros(query.end))
        self.after: _Key | None = None
        self.before: _Key | None = None
        if query.after_id is not None:
            self.after = _archive_key(connection, owner, query.after_id)
            self.lo = max(self.lo, self.after[0])
        if query.before_id is not None:
            self.before = _archive_key(connection, owner, query.before_id)
            self.hi = min(self.hi, self.before[0])
        self.ids: frozenset[str] | None = None
        if query.ids is not None:
            keys = [_archive_key(connection, owner, i) for i in query.ids]
            self.ids = frozenset(key[1] for key in keys)
            self.lo = max(self.lo, min((key[0] for key in keys), default=_HIGHEST))
            self.hi = min(self.hi, max((key[0] for key in keys), default=_LOWEST))

    def passes(self, row: _Row) -> bool:
        seq = row[0]
        if not self.lo <= seq <= self.hi or not _between(row, self.after, self.before):
            return False
        if self.bare is not None:
            bare, _slash, resource = row[2].partition("/")
            if bare != self.bare or (self.resource is not None and resource != self.resource):
                return False
        return self.ids is None or row[1] in self.ids


def _between(row: _Row, after: _Key | None, before: _Key | None) -> bool:
    """Whether the record is after ``after`` and before ``before`` (where given)."""
    if after is not None and (row[0] < after[0] or (row[0] == after[0] and row[1] <= after[1])):
        return False
    return before is None or row[0] < before[0] or (row[0] == before[0] and row[1] < before[1])


def _scan(
    connection: sqlite3.Connection,
    owner: str,
    matches: _Filter,
    backward: bool,
    after: _Key | None = None,
    before: _Key | None = None,
) -> Iterator[_Row]:
    """The owner's records passing ``matches`` and between the page position's ``after`` and
    ``before`` (where given), in order or backward."""
    lo = matches.lo if after is None else max(matches.lo, after[0])
    hi = matches.hi if before is None else min(matches.hi, before[0])
    if lo > hi:
        return
    where = (
        "owner = ? AND first_seq <= ? AND first_seq >= (SELECT coalesce(max(first_seq), ?)"
        " FROM archive_chunk WHERE owner = ? AND first_seq <= ?) AND last_seq >= ?"
    )
    params: list[Any] = [owner, hi, lo, owner, lo, lo]
    if matches.bare is not None:
        where += " AND instr(peers, ?) > 0"
        params.append(f"\n{matches.bare}\n")
    cursor = connection.execute(
        f"SELECT records FROM archive_chunk WHERE {where}"
        f" ORDER BY first_seq {'DESC' if backward else 'ASC'}",
        params,
    )
    for (text,) in cursor:
        texts = text.split(RECORD)
        if backward:
            texts.reverse()
        for record in texts:
            row = _row(record)
            if lo <= row[0] <= hi and matches.passes(row) and _between(row, after, before):
                yield row


def query_page(connection: sqlite3.Connection, owner: str, query: ArchiveQuery) -> ArchivePage:
    matches = _Filter(connection, owner, query)
    count: int | None = None
    if query.count:
        cap = max(query.count_limit, 0)
        found = sum(1 for _row in islice(_scan(connection, owner, matches, False), cap + 1))
        count = found if found <= cap else None
    after = None if query.after is None else _archive_key(connection, owner, query.after)
    before = None if query.before is None else _archive_key(connection, owner, query.before)
    limit = max(query.limit, 0)
    # One more than asked tells whether the page is the last.
    scan = _scan(connection, owner, matches, query.backward, after, before)
    rows = list(islice(scan, limit + 1))
    complete = len(rows) <= limit
    del rows[limit:]
    if query.backward:
        rows.reverse()
    messages = [
        ArchivedMessage(archive_id, seq / 1e6, with_jid, direction, stanza)
        for seq, archive_id, with_jid, direction, stanza in rows
    ]
    return ArchivePage(messages, complete, count)


def get_prefs(connection: sqlite3.Connection, owner: str) -> ArchivePrefs | None:
    row = connection.execute(
        "SELECT default_mode, always, never FROM archive_prefs WHERE owner = ?", (owner,)
    ).fetchone()
    if row is None:
        return None
    default, always, never = row
    return ArchivePrefs(default, tuple(json.loads(always)), tuple(json.loads(never)))


def set_prefs(connection: sqlite3.Connection, owner: str, prefs: ArchivePrefs) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO archive_prefs (owner, default_mode, always, never)"
        " VALUES (?, ?, ?, ?)",
        (
            owner,
            prefs.default,
            json.dumps(list(prefs.always), ensure_ascii=False),
            json.dumps(list(prefs.never), ensure_ascii=False),
        ),
    )


def expire(connection: sqlite3.Connection, _: str, before: float) -> int:
    limit = _micros(before)
    # Chunks that straddle the limit lose their older records; a chunk spans at most
    # CHUNK_SPAN, which bounds the range of the last_seq index to look through.
    straddling = connection.execute(
        "SELECT chunk, owner, records FROM archive_chunk"
        " WHERE last_seq >= ? AND last_seq < ? AND first_seq < ?",
        (limit, limit + CHUNK_SPAN, limit),
    ).fetchall()
    removed = 0
    for chunk, owner, stored in straddling:
        texts = stored.split(RECORD)
        kept = [(row, text) for text in texts if (row := _row(text))[0] >= limit]
        removed += len(texts) - len(kept)
        connection.execute("DELETE FROM archive_chunk WHERE chunk = ?", (chunk,))
        _insert(
            connection,
            owner,
            [row[0] for row, _text in kept],
            [text for _row, text in kept],
            [_bare(row[2]) for row, _text in kept],
        )
    (whole,) = connection.execute(
        "SELECT coalesce(sum(n), 0) FROM archive_chunk WHERE last_seq < ?", (limit,)
    ).fetchone()
    connection.execute("DELETE FROM archive_chunk WHERE last_seq < ?", (limit,))
    return removed + int(whole)


def every_record(connection: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """Every stored record as a row of the one-row-per-record layout (schema version 3, and
    PostgreSQL's): seq, owner, id, with_jid (bare), with_resource, direction, stanza.

    For ``roost storage migrate``; chunk by chunk, in order of their last seq.
    """
    cursor = connection.execute("SELECT owner, records FROM archive_chunk ORDER BY last_seq")
    for owner, stored in cursor:
        for text in stored.split(RECORD):
            seq, archive_id, with_jid, direction, stanza = _row(text)
            bare, _slash, resource = with_jid.partition("/")
            yield seq, owner, archive_id, bare, resource, direction, stanza
