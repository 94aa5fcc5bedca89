-- Each node hands out archive seqs on its own clock, so two nodes of a cluster can give the
-- same seq to two messages: with seq alone the key, the second record was dropped. A record
-- is known by its owner, seq and id (the id's tail is the archiving node's own), and an
-- owner's archive is in (seq, id) order: ids in code point order, as Python compares them.
ALTER TABLE archive DROP CONSTRAINT archive_pkey;
DROP INDEX archive_by_owner;
ALTER TABLE archive ALTER COLUMN id TYPE text COLLATE "C";

-- The index every query reads (and, through with_jid, one conversation), now also the key.
ALTER TABLE archive ADD PRIMARY KEY (owner, seq, id) INCLUDE (with_jid);

-- Expiry and the last seq stored, which the primary key on seq served before.
CREATE INDEX archive_by_seq ON archive (seq);
