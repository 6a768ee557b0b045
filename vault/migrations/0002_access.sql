-- Signet vault schema, version 2: machine lifecycle, access policies,
-- canaries, co-sign, webhooks, audit retention. Times are Unix seconds.

-- JSON TokenConstraints (hostname regex, source CIDRs, name template,
-- bootstrap restrictions); NULL for tokens made before version 2.
ALTER TABLE enrollment_tokens ADD COLUMN constraints TEXT;

-- JSON MachineRestrictions (IP allowlist, time-of-day window) copied from a
-- bootstrap token at enrollment; NULL when unrestricted.
ALTER TABLE machines ADD COLUMN restrictions TEXT;
CREATE INDEX machines_by_expiry ON machines (expires_at);

-- JSON AccessPolicy; NULL when the secret has none.
ALTER TABLE secrets ADD COLUMN policy TEXT;

-- Reads per secret per calendar day (in the policy's time zone), counted in
-- the read's own transaction.
CREATE TABLE read_counts (
    secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    day       TEXT NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (secret_id, day)
) WITHOUT ROWID;

CREATE TABLE cosign_requests (
    id           TEXT PRIMARY KEY,
    secret_id    TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    machine_id   TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    requested_by TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    approved_by  TEXT,
    approved_at  INTEGER,
    consumed_at  INTEGER
);
CREATE INDEX cosign_by_secret_machine ON cosign_requests (secret_id, machine_id);

CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    -- JSON array of event names.
    events        TEXT NOT NULL,
    -- The HMAC secret sealed under the root key.
    sealed_secret BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);

-- The outbox: written in the transaction of the event, drained by the
-- delivery worker.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    last_error      TEXT
);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
