-- Spent nonces as an append-only log clustered by time of arrival (its
-- sequence number), instead of a table keyed by (key_id, nonce): each
-- request's nonce lands on the log's last page instead of dirtying a random
-- B-tree page. The replay check reads a set the vault keeps in memory,
-- loaded from this log at start and caught up with rows other processes
-- append (see vault/src/store/nonces.rs). The old table's rows are carried
-- over, so a nonce spent before the upgrade stays spent.
CREATE TABLE nonce_log (
    seq        INTEGER PRIMARY KEY,
    key_id     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
INSERT INTO nonce_log (key_id, nonce, expires_at)
    SELECT key_id, nonce, expires_at FROM nonces ORDER BY expires_at;
DROP TABLE nonces;
