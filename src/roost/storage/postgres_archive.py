"""The message archive (XEP-0313) of the PostgreSQL backend: its SQL, apart for its size.

:class:`~roost.storage.postgres.PostgresStorage` archives a batch of records with
:data:`ARCHIVE_INSERT`, one statement per ``STATEMENT_ROWS`` records in one transaction, their
parameters from :func:`archive_parameters`, and answers an archive query with
:func:`query_archive`. The semantics, shared with the SQLite backend, are
those of :mod:`roost.storage.base`: ``seq`` orders the archive (then the id, for records of one
seq from different nodes), is its time in microseconds and begins every archive id, so one
index, the primary key on (owner, seq, id), serves every query.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from roost.storage.base import (
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    ArchiveRecord,
    UnknownArchiveId,
    archive_id_seq,
)

# Records of accounts deleted (or never created) since the message was routed are left out,
# and a repeated record (a batch written again) does nothing, instead of failing the batch.
#
# The batch is one parameter, a JSON array of rows (see archive_rows), which PostgreSQL takes
# apart. It used to be seven arrays, one per column: asyncpg encodes an array parameter element
# by element with Python-level type checks, and with archiving on that took ~12 % of the event
# loop's time at 10,000 messages/s (py-spy), on the node's core. ``json.dumps`` is one C call
# over the batch, and the parsing happens in the database server, on its own core or machine.
ARCHIVE_INSERT = """
INSERT INTO archive (seq, owner, id, with_jid, with_resource, direction, stanza)
SELECT (r ->> 0)::bigint, r ->> 1, r ->> 2, r ->> 3, r ->> 4, r ->> 5, r ->> 6
FROM json_array_elements($1::json) AS r
WHERE EXISTS (SELECT FROM users WHERE users.jid = r ->> 1)
ON CONFLICT (owner, seq, id) DO NOTHING
"""

_ARCHIVE_COLUMNS = "seq, id, with_jid, with_resource, direction, stanza"


def archive_rows(records: list[ArchiveRecord]) -> str:
    """The parameter of :data:`ARCHIVE_INSERT`: ``[[seq, owner, id, with_jid, with_resource,
    direction, stanza], ...]`` as JSON (XML has no NUL character, which PostgreSQL's text
    could not hold)."""
    return json.dumps(
        [(r.seq, r.owner, r.id, *_split_jid(r.with_jid), r.direction, r.stanza) for r in records],
        ensure_ascii=False,
        separators=(",", ":"),
    )


# Records encoded at a time by archive_rows_in_turns: ~2 ms of the event loop's time each.
ROWS_AT_A_TIME = 1000
# Records per ARCHIVE_INSERT statement (archive_parameters). Handing asyncpg a parameter copies
# it whole while the loop waits: 18,000 records (~4.4 MB of JSON) held the loop ~10 ms, and a
# batch can hold 60,000.
STATEMENT_ROWS = 5000


async def archive_rows_in_turns(records: list[ArchiveRecord]) -> str:
    """:func:`archive_rows` of ``records`` (not empty), encoded ``ROWS_AT_A_TIME`` records at a
    time with the event loop's other work between them.

    Encoding is ~2 µs a record on the node's event loop, and a batch holds up to a second of
    traffic: in one piece, 18,000 records (9,000 messages/s) held the loop for ~36 ms, and
    p99 latency at that rate was 86 ms. ``json.dumps`` is one C call that keeps the GIL, so a
    worker thread would not have let the loop run either.
    """
    parts: list[str] = []
    for start in range(0, len(records), ROWS_AT_A_TIME):
        if parts:
            await asyncio.sleep(0)
        parts.append(archive_rows(records[start : start + ROWS_AT_A_TIME])[1:-1])
    return "[" + ",".join(parts) + "]"


async def archive_parameters(records: list[ArchiveRecord]) -> list[str]:
    """The parameters of the :data:`ARCHIVE_INSERT` statements that store ``records``: one per
    ``STATEMENT_ROWS`` records, each encoded in turns (:func:`archive_rows_in_turns`)."""
    return [
        await archive_rows_in_turns(records[start : start + STATEMENT_ROWS])
        for start in range(0, len(records), STATEMENT_ROWS)
    ]


def _split_jid(jid: str) -> tuple[str, str]:
    """A JID's bare part and resource ('' for none): RFC 7622 §3.1, the first slash splits."""
    bare, _, resource = jid.partition("/")
    return bare, resource


def _micros(stamp: float) -> int:
    return round(stamp * 1e6)


class _Where:
    """The conditions of a query and their numbered parameters ($1, $2, ...)."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def add(self, template: str, *values: Any) -> None:
        """Add ``template`` with its ``?`` marks replaced, in turn, by parameters holding
        ``values``."""
        parts = template.split("?")
        assert len(parts) == len(values) + 1, template
        sql = parts[0]
        for value, part in zip(values, parts[1:], strict=True):
            self.params.append(value)
            sql += f"${len(self.params)}{part}"
        self.conditions.append(sql)

    @property
    def next(self) -> str:
        """The placeholder of a parameter given after those of the conditions."""
        return f"${len(self.params) + 1}"

    @property
    def sql(self) -> str:
        return " AND ".join(self.conditions)


async def query_archive(connection: Any, owner: str, query: ArchiveQuery) -> ArchivePage:
    seqs = await _archive_seqs(connection, owner, query)

    def after(archive_id: str) -> tuple[str, int, str]:
        return "(seq, id) > (?, ?)", seqs[archive_id], archive_id

    def before(archive_id: str) -> tuple[str, int, str]:
        return "(seq, id) < (?, ?)", seqs[archive_id], archive_id

    where = _Where()
    where.add("owner = ?", owner)
    if query.with_jid is not None:
        bare, resource = _split_jid(query.with_jid)
        where.add("with_jid = ?", bare)
        if "/" in query.with_jid:
            where.add("with_resource = ?", resource)
    if query.start is not None:
        where.add("seq >= ?", _micros(query.start))
    if query.end is not None:
        where.add("seq <= ?", _micros(query.end))
    if query.after_id is not None:
        where.add(*after(query.after_id))
    if query.before_id is not None:
        where.add(*before(query.before_id))
    if query.ids is not None:
        where.add(
            "seq = ANY(?::bigint[]) AND id = ANY(?::text[])",
            sorted({seqs[id] for id in query.ids}),
            sorted(set(query.ids)),
        )
    count: int | None = None
    if query.count:
        # A statement of its own, so the count may see a message the page does not (or the
        # other way round) when one is archived in between: RSM counts may be approximate
        # (XEP-0059 §2.6), and a page is exact.
        cap = max(query.count_limit, 0)
        found = await connection.fetchval(
            f"SELECT count(*) FROM (SELECT FROM archive WHERE {where.sql} LIMIT {where.next})"
            " AS matching",
            *where.params,
            cap + 1,
        )
        count = int(found) if found <= cap else None
    if query.after is not None:
        where.add(*after(query.after))
    if query.before is not None:
        where.add(*before(query.before))
    limit = max(query.limit, 0)
    rows = list(
        await connection.fetch(
            f"SELECT {_ARCHIVE_COLUMNS} FROM archive WHERE {where.sql}"
            f" ORDER BY {'seq DESC, id DESC' if query.backward else 'seq, id'}"
            f" LIMIT {where.next}",
            *where.params,
            limit + 1,  # one more than asked tells whether the page is the last
        )
    )
    complete = len(rows) <= limit
    del rows[limit:]
    if query.backward:
        rows.reverse()
    messages = [
        ArchivedMessage(
            str(id),
            seq / 1e6,
            f"{with_jid}/{resource}" if resource else str(with_jid),
            str(direction),
            str(stanza),
        )
        for seq, id, with_jid, resource, direction, stanza in rows
    ]
    return ArchivePage(messages, complete, count)


async def _archive_seqs(connection: Any, owner: str, query: ArchiveQuery) -> dict[str, int]:
    """The seq of every id the query names, looked up at once.

    Raises UnknownArchiveId for the first one (in the order after_id, before_id, ids, after,
    before) that the owner's archive does not hold: an id finds its row by the seq it begins
    with and by itself (records of one seq from different nodes differ in their ids).
    """
    named = [
        *([query.after_id] if query.after_id is not None else []),
        *([query.before_id] if query.before_id is not None else []),
        *(query.ids or ()),
        *([query.after] if query.after is not None else []),
        *([query.before] if query.before is not None else []),
    ]
    if not named:
        return {}
    wanted = {seq for seq in map(archive_id_seq, named) if seq is not None}
    stored: set[str] = set()
    if wanted:
        rows = await connection.fetch(
            "SELECT id FROM archive"
            " WHERE owner = $1 AND seq = ANY($2::bigint[]) AND id = ANY($3::text[])",
            owner,
            sorted(wanted),
            sorted(set(named)),
        )
        stored = {str(id) for (id,) in rows}
    seqs: dict[str, int] = {}
    for archive_id in named:
        seq = archive_id_seq(archive_id)
        if seq is None or archive_id not in stored:
            raise UnknownArchiveId(archive_id)
        seqs[archive_id] = seq
    return seqs
