-- roost schema version 1 (SQLite): accounts, SCRAM credentials, rosters, offline messages,
-- vCards. Every per-account table references users(jid) with ON DELETE CASCADE: deleting an
-- account deletes everything it owns in the same statement, and nothing can be written for an
-- account that does not exist, so a later account of the same name never inherits stale data.

CREATE TABLE users (
    jid     TEXT PRIMARY KEY NOT NULL,
    -- The part after '@', kept separately so that listing one virtual host is an index scan.
    domain  TEXT NOT NULL,
    created REAL NOT NULL
);

CREATE INDEX users_by_domain ON users (domain, jid);

CREATE TABLE credentials (
    jid        TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    mechanism  TEXT NOT NULL,
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL CHECK (iterations > 0),
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (jid, mechanism)
);

CREATE TABLE roster (
    owner             TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    contact           TEXT NOT NULL,
    name              TEXT,
    subscription      TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask               INTEGER NOT NULL CHECK (ask IN (0, 1)),
    pending_in        INTEGER NOT NULL CHECK (pending_in IN (0, 1)),
    approved          INTEGER NOT NULL CHECK (approved IN (0, 1)),
    groups            TEXT NOT NULL,  -- a JSON array of strings, in the client's order
    pending_in_stanza TEXT,
    -- 0 for an item that only holds an inbound subscription request: kept, but not shown in
    -- the user's roster until the user adds the contact or approves (RFC 6121 §3.1.3).
    in_roster         INTEGER NOT NULL DEFAULT 1 CHECK (in_roster IN (0, 1)),
    PRIMARY KEY (owner, contact)
);

-- One counter per account, bumped by every roster change (RFC 6121 §2.6 roster versioning).
CREATE TABLE roster_version (
    owner   TEXT PRIMARY KEY NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    version INTEGER NOT NULL
);

-- AUTOINCREMENT so that an id is never reused, even after the newest message was deleted:
-- ids then order messages by arrival, and a stale id can never delete a newer message.
CREATE TABLE offline (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    owner  TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    sender TEXT NOT NULL,
    stamp  REAL NOT NULL,
    stanza TEXT NOT NULL
);

CREATE INDEX offline_by_owner ON offline (owner, id);

CREATE TABLE vcard (
    owner TEXT PRIMARY KEY NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    xml   TEXT NOT NULL
);
