"""The message archive (XEP-0313) of :mod:`roost.storage.sqlite`: the functions its storage
thread runs for :class:`~roost.storage.sqlite.SQLiteStorage`'s archive methods.

Kept apart from the rest of the backend for size; the schema is in the same migrations, and
the batching that makes archive writes cheap is described in :mod:`roost.storage.sqlite` and
:mod:`roost.modules.mam`.
"""

from __future__ import annotations

import json
import sqlite3
from operator import attrgetter
from typing import Any

from roost.storage.base import (
    ArchivedMessage,
    ArchivePage,
    ArchivePrefs,
    ArchiveQuery,
    ArchiveRecord,
    UnknownArchiveId,
    archive_id_seq,
)

_ARCHIVE_COLUMNS = "seq, id, with_jid, with_resource, direction, stanza"


def write(connection: sqlite3.Connection, _: str, records: list[ArchiveRecord]) -> None:
    # Records of accounts deleted (or never created) since the message was routed are left
    # out, and a repeated seq does nothing, instead of failing the whole batch. The owners are
    # checked once per batch: an EXISTS per row would cost more than the insert.
    owners = list({record.owner for record in records})
    existing: set[str] = set()
    for start in range(0, len(owners), 500):  # within any SQLite's limit of variables
        chunk = owners[start : start + 500]
        found = connection.execute(
            f"SELECT jid FROM users WHERE jid IN ({', '.join('?' * len(chunk))})", chunk
        )
        existing.update(jid for (jid,) in found)
    # Grouped by owner, the rows of one owner land on the same index pages, which a commit then
    # writes once rather than once per row: for a batch of many users' messages that halves the
    # cost. (The order of inserts changes nothing else: seq is given.) The rows are made one at
    # a time as SQLite takes them, not as a list: each is gone before the next is made, so a
    # batch of many thousands leaves the garbage collector nothing to do (this thread holds the
    # GIL while it collects, and the event loop waits).
    connection.executemany(
        "INSERT INTO archive (seq, owner, id, with_jid, with_resource, direction, stanza)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO NOTHING",
        (
            (r.seq, r.owner, r.id, *_split_jid(r.with_jid), r.direction, r.stanza)
            for r in sorted(records, key=_OWNER)
            if r.owner in existing
        ),
    )


_OWNER = attrgetter("owner")


def _split_jid(jid: str) -> tuple[str, str]:
    """A JID's bare part and resource ('' for none): RFC 7622 §3.1, the first slash splits."""
    bare, _, resource = jid.partition("/")
    return bare, resource


def last_seq(connection: sqlite3.Connection, _: str) -> int:
    (last,) = connection.execute("SELECT max(seq) FROM archive").fetchone()
    return 0 if last is None else int(last)


def _archive_seq(connection: sqlite3.Connection, owner: str, archive_id: str) -> int:
    """The seq of an id of the owner's archive; UnknownArchiveId when it holds no such id."""
    seq = archive_id_seq(archive_id)
    if seq is not None:
        row = connection.execute(
            "SELECT id FROM archive WHERE seq = ? AND owner = ?", (seq, owner)
        ).fetchone()
        if row is not None and row[0] == archive_id:
            return seq
    raise UnknownArchiveId(archive_id)


def _micros(stamp: float) -> int:
    return round(stamp * 1e6)


def query_page(connection: sqlite3.Connection, owner: str, query: ArchiveQuery) -> ArchivePage:
    where = ["owner = ?"]
    params: list[Any] = [owner]
    if query.with_jid is not None:
        bare, resource = _split_jid(query.with_jid)
        where.append("with_jid = ?")
        params.append(bare)
        if "/" in query.with_jid:
            where.append("with_resource = ?")
            params.append(resource)
    if query.start is not None:
        where.append("seq >= ?")
        params.append(_micros(query.start))
    if query.end is not None:
        where.append("seq <= ?")
        params.append(_micros(query.end))
    if query.after_id is not None:
        where.append("seq > ?")
        params.append(_archive_seq(connection, owner, query.after_id))
    if query.before_id is not None:
        where.append("seq < ?")
        params.append(_archive_seq(connection, owner, query.before_id))
    if query.ids is not None:
        wanted = sorted({_archive_seq(connection, owner, archive_id) for archive_id in query.ids})
        where.append(f"seq IN ({', '.join('?' * len(wanted))})")
        params.extend(wanted)
    count: int | None = None
    if query.count:
        cap = max(query.count_limit, 0)
        (found,) = connection.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM archive WHERE {' AND '.join(where)} LIMIT ?)",
            (*params, cap + 1),
        ).fetchone()
        count = int(found) if found <= cap else None
    if query.after is not None:
        where.append("seq > ?")
        params.append(_archive_seq(connection, owner, query.after))
    if query.before is not None:
        where.append("seq < ?")
        params.append(_archive_seq(connection, owner, query.before))
    limit = max(query.limit, 0)
    rows = connection.execute(
        f"SELECT {_ARCHIVE_COLUMNS} FROM archive WHERE {' AND '.join(where)}"
        f" ORDER BY seq {'DESC' if query.backward else 'ASC'} LIMIT ?",
        (*params, limit + 1),  # one more than asked tells whether the page is the last
    ).fetchall()
    complete = len(rows) <= limit
    del rows[limit:]
    if query.backward:
        rows.reverse()
    messages = [
        ArchivedMessage(
            id, seq / 1e6, f"{with_jid}/{resource}" if resource else with_jid, direction, stanza
        )
        for seq, id, with_jid, resource, direction, stanza in rows
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
    # seq is the handling time in microseconds: the primary key is the expiry index too.
    return connection.execute("DELETE FROM archive WHERE seq < ?", (_micros(before),)).rowcount
