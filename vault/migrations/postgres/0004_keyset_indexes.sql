-- Signet vault schema, version 4: indexes in the order of the list routes'
-- pages (keyset pagination, see src/page.rs; PostgreSQL dialect of
-- ../0004_keyset_indexes.sql), so a page reads its rows in
-- index order and stops after `limit + 1` instead of sorting the whole table.
-- Projects, a project's secrets and clusters already have theirs: the
-- unique indexes on `name` and `(project_id, name)`.

CREATE INDEX machines_by_created ON machines (created_at, id);
CREATE INDEX tokens_by_created ON enrollment_tokens (created_at, id);
CREATE INDEX cosign_by_created ON cosign_requests (created_at, id);
CREATE INDEX webhooks_by_created ON webhooks (created_at, id);
