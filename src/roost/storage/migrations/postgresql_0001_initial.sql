-- roost schema version 1 (PostgreSQL): accounts, SCRAM credentials, rosters, offline messages,
-- vCards, blocklists (XEP-0191), message archives (XEP-0313) and archiving preferences
-- (XEP-0441); the same data as SQLite's versions 1 to 3.
--
-- Every per-account table references users (jid) ON DELETE CASCADE: deleting an account
-- deletes everything it owns in the same statement, and nothing can be written for an account
-- that does not exist, so a later account of the same name never inherits stale data.
--
-- JIDs are compared and sorted as COLLATE "C" (by code point, as roost and SQLite sort them):
-- a database created with a linguistic collation would otherwise order 'Aaron' and 'alice'
-- differently from one machine to the next, and list results would not be stable.

CREATE TABLE users (
    jid     text COLLATE "C" PRIMARY KEY,
    -- The part after '@', kept separately so that listing one virtual host is an index scan.
    domain  text COLLATE "C" NOT NULL,
    created double precision NOT NULL
);

CREATE INDEX users_by_domain ON users (domain, jid);

CREATE TABLE credentials (
    jid        text COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    mechanism  text NOT NULL,
    salt       bytea NOT NULL,
    iterations integer NOT NULL CHECK (iterations > 0),
    stored_key bytea NOT NULL,
    server_key bytea NOT NULL,
    PRIMARY KEY (jid, mechanism)
);

CREATE TABLE roster (
    owner             text COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    contact           text COLLATE "C" NOT NULL,
    name              text,
    subscription      text NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask               boolean NOT NULL,
    pending_in        boolean NOT NULL,
    approved          boolean NOT NULL,
    groups            text[] NOT NULL,  -- in the client's order
    pending_in_stanza text,
    -- false for an item that only holds an inbound subscription request: kept, but not shown
    -- in the user's roster until the user adds the contact or approves (RFC 6121 §3.1.3).
    in_roster         boolean NOT NULL DEFAULT true,
    PRIMARY KEY (owner, contact)
);

-- One counter per account, bumped by every roster change (RFC 6121 §2.6 roster versioning).
CREATE TABLE roster_version (
    owner   text COLLATE "C" PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    version bigint NOT NULL
);

-- An identity is never reused, even after the newest message was deleted: ids then order
-- messages by arrival, and a stale id can never delete a newer message.
CREATE TABLE offline (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner  text COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    sender text NOT NULL,
    stamp  double precision NOT NULL,
    stanza text NOT NULL
);

CREATE INDEX offline_by_owner ON offline (owner, id);

CREATE TABLE vcard (
    owner text COLLATE "C" PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    xml   text NOT NULL
);

CREATE TABLE blocklist (
    owner   text COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    blocked text COLLATE "C" NOT NULL,  -- a JID as the user gave it: bare, full or a domain
    PRIMARY KEY (owner, blocked)
);

-- One table for every user's archive. seq is the time the message was handled, in
-- microseconds, which the archiving node hands out strictly increasing: it is the archive's
-- order, its time, and the start of every archive id (see roost.storage.base), so an id finds
-- its row through the primary key without an index of its own.
CREATE TABLE archive (
    seq           bigint PRIMARY KEY,
    owner         text COLLATE "C" NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    id            text NOT NULL,
    -- The other party: bare JID, and its resource ('' when addressed bare), apart so that a
    -- query for a bare JID and one for a full JID both use the index below.
    with_jid      text COLLATE "C" NOT NULL,
    with_resource text NOT NULL,
    direction     text NOT NULL CHECK (direction IN ('in', 'out')),
    stanza        text NOT NULL
);

-- An owner's archive in order, time ranges of it, and (reading with_jid from the index, not
-- the table) one conversation of it. Every index costs each archived message a write; one led
-- by (owner, with_jid) would scatter a busy server's messages over many more pages.
CREATE INDEX archive_by_owner ON archive (owner, seq) INCLUDE (with_jid);

CREATE TABLE archive_prefs (
    owner        text COLLATE "C" PRIMARY KEY REFERENCES users (jid) ON DELETE CASCADE,
    default_mode text NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    always       text[] NOT NULL,
    never        text[] NOT NULL
);
