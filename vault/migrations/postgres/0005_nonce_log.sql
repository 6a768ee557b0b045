-- Signet vault schema, version 5: nothing to do on PostgreSQL.
-- SQLite's ../0005_nonce_log.sql replaces its nonce table with an
-- append-only log checked against a set in memory; on PostgreSQL every
-- replica must see every other's nonces at once, so the nonces table keeps
-- its primary key (key_id, nonce) and the database refuses a replay.
SELECT 1;
