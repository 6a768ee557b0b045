-- Signet vault schema, version 1. Times are Unix seconds.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE admins (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE admin_bootstrap_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    wrapped_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    locked_at   INTEGER,
    lock_reason TEXT
);

CREATE TABLE secrets (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    live_version INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE secret_versions (
    secret_id        TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version          INTEGER NOT NULL,
    wrapped_data_key BLOB NOT NULL,
    ciphertext       BLOB NOT NULL,
    -- JSON array of field names for a structured secret, NULL for a plain one.
    field_names      TEXT,
    created_at       INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
);

CREATE TABLE enrollment_tokens (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    project_id       TEXT NOT NULL REFERENCES projects(id),
    secret_hash      BLOB NOT NULL,
    max_uses         INTEGER,
    uses             INTEGER NOT NULL DEFAULT 0,
    expires_at       INTEGER NOT NULL,
    machine_lifetime INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    revoked_at       INTEGER
);

CREATE TABLE machines (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    token_id    TEXT,
    public_key  TEXT NOT NULL UNIQUE,
    hostname    TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    machine_id TEXT REFERENCES machines(id) ON DELETE CASCADE,
    token_id   TEXT REFERENCES enrollment_tokens(id) ON DELETE CASCADE,
    secret_id  TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    -- JSON array of granted field names; NULL grants the whole secret.
    fields     TEXT,
    created_at INTEGER NOT NULL,
    CHECK ((machine_id IS NULL) <> (token_id IS NULL))
);
CREATE INDEX grants_by_machine ON grants (machine_id);
CREATE INDEX grants_by_token ON grants (token_id);

CREATE TABLE nonces (
    key_id     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_by_expiry ON nonces (expires_at);

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    reason    TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
