-- roost schema version 3 (SQLite): message archives (XEP-0313) and archiving preferences
-- (XEP-0441).

-- One table for every user's archive. seq is the time the message was handled, in
-- microseconds, which the archiving node hands out strictly increasing: it is the archive's
-- order, its time, and the start of every archive id (see roost.storage.base). As the rowid,
-- new rows append to the table, and an id finds its row without an index of its own.
CREATE TABLE archive (
    seq           INTEGER PRIMARY KEY,
    owner         TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    id            TEXT NOT NULL,
    -- The other party: bare JID, and its resource ('' when addressed bare), apart so that a
    -- query for a bare JID and one for a full JID both use the index below.
    with_jid      TEXT NOT NULL,
    with_resource TEXT NOT NULL,
    direction     TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    stanza        TEXT NOT NULL
);

-- An owner's archive in order, time ranges of it, and (reading with_jid from the index, not
-- the table) one conversation of it. Every index costs each archived message a write, and an
-- index led by (owner, with_jid) would put each message of a busy server on a page of its
-- own, which a commit then writes whole: that alone tripled the cost of archiving.
CREATE INDEX archive_by_owner ON archive (owner, seq, with_jid);

CREATE TABLE archive_prefs (
    owner        TEXT PRIMARY KEY NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    always       TEXT NOT NULL,  -- a JSON array of JIDs
    never        TEXT NOT NULL   -- a JSON array of JIDs
);
