-- roost schema version 2 (SQLite): blocklists (XEP-0191).

CREATE TABLE blocklist (
    owner   TEXT NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    blocked TEXT NOT NULL,  -- a JID as the user gave it: bare, full or a domain
    PRIMARY KEY (owner, blocked)
);
