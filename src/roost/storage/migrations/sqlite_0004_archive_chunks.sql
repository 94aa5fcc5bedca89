-- roost schema version 4 (SQLite): the message archive in chunks, one row per owner and batch
-- of records instead of one row per record (see roost.storage.sqlite_archive for why).

-- records: the chunk's records in seq order, joined by char(30), each its fields joined by
-- char(31): seq, id, the other party's JID as given (full or bare), direction, stanza (see
-- roost.storage.sqlite_archive). An owner's chunks never overlap: first_seq and last_seq bound
-- each. peers lists the bare JIDs of its records, each between newlines, so that a
-- conversation's query skips chunks without it. n counts the records. records is the last
-- column, so that reading the others never reads its overflow pages.
CREATE TABLE archive_chunk (
    chunk     INTEGER PRIMARY KEY,
    owner     TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    peers     TEXT NOT NULL,
    records   TEXT NOT NULL
);

-- An owner's archive in order (its chunks by first_seq), and the newest seq and expiry (by
-- last_seq). Two index entries per chunk, not per record.
CREATE INDEX archive_chunk_by_owner ON archive_chunk (owner, first_seq);
CREATE INDEX archive_chunk_by_last_seq ON archive_chunk (last_seq);

-- What version 3 stored, one record per chunk (XML has no char(30); replaced all the same).
INSERT INTO archive_chunk (owner, first_seq, last_seq, n, peers, records)
SELECT owner, seq, seq, 1, char(10) || with_jid || char(10),
       seq || char(31) || id || char(31)
       || with_jid || CASE WHEN with_resource = '' THEN '' ELSE '/' || with_resource END
       || char(31) || direction || char(31) || replace(stanza, char(30), char(65533))
FROM archive ORDER BY seq;

DROP TABLE archive;
