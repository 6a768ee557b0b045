-- Signet vault schema, version 1, in PostgreSQL's dialect (the same
-- tables as ../0001_init.sql). Times are Unix seconds. Text sorts and
-- compares byte-wise (COLLATE "C"), as in SQLite, so pages keep one order
-- whatever the database's locale.

-- One row every writing transaction locks first, so the transactions of
-- all replicas on this database run one after another, as SQLite's
-- BEGIN IMMEDIATE makes them run in one process: nonces, token uses,
-- daily caps, canary locks and the audit chain see exactly the state
-- before them. `changes` counts the commits that changed anything a read
-- looked up ahead may depend on (see src/store/postgres.rs).
CREATE TABLE signet_state (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    changes BIGINT NOT NULL
);
INSERT INTO signet_state (id, changes) VALUES (1, 0);

CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE admins (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    public_key  TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

CREATE TABLE admin_bootstrap_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    secret_hash BYTEA NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE agents (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    public_key  TEXT COLLATE "C" NOT NULL UNIQUE,
    scopes      TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

CREATE TABLE projects (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    wrapped_key BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    locked_at   BIGINT,
    lock_reason TEXT COLLATE "C"
);

CREATE TABLE secrets (
    id           TEXT COLLATE "C" PRIMARY KEY,
    project_id   TEXT COLLATE "C" NOT NULL REFERENCES projects(id),
    name         TEXT COLLATE "C" NOT NULL,
    live_version BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE secret_versions (
    secret_id        TEXT COLLATE "C" NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version          BIGINT NOT NULL,
    wrapped_data_key BYTEA NOT NULL,
    ciphertext       BYTEA NOT NULL,
    -- JSON array of field names for a structured secret, NULL for a plain one.
    field_names      TEXT COLLATE "C",
    created_at       BIGINT NOT NULL,
    created_by       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (secret_id, version)
);

CREATE TABLE enrollment_tokens (
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL,
    project_id       TEXT COLLATE "C" NOT NULL REFERENCES projects(id),
    secret_hash      BYTEA NOT NULL,
    max_uses         BIGINT,
    uses             BIGINT NOT NULL DEFAULT 0,
    expires_at       BIGINT NOT NULL,
    machine_lifetime BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    created_by       TEXT COLLATE "C" NOT NULL,
    revoked_at       BIGINT
);

CREATE TABLE machines (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects(id),
    token_id    TEXT COLLATE "C",
    public_key  TEXT COLLATE "C" NOT NULL UNIQUE,
    hostname    TEXT COLLATE "C" NOT NULL,
    metadata    TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

CREATE TABLE grants (
    id         TEXT COLLATE "C" PRIMARY KEY,
    machine_id TEXT COLLATE "C" REFERENCES machines(id) ON DELETE CASCADE,
    token_id   TEXT COLLATE "C" REFERENCES enrollment_tokens(id) ON DELETE CASCADE,
    secret_id  TEXT COLLATE "C" NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    -- JSON array of granted field names; NULL grants the whole secret.
    fields     TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    CHECK ((machine_id IS NULL) <> (token_id IS NULL))
);
CREATE INDEX grants_by_machine ON grants (machine_id);
CREATE INDEX grants_by_token ON grants (token_id);

-- The primary key is what refuses a replayed nonce, on every replica.
CREATE TABLE nonces (
    key_id     TEXT COLLATE "C" NOT NULL,
    nonce      TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (expires_at);

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT COLLATE "C" NOT NULL,
    action    TEXT COLLATE "C" NOT NULL,
    target    TEXT COLLATE "C" NOT NULL,
    outcome   TEXT COLLATE "C" NOT NULL,
    reason    TEXT COLLATE "C" NOT NULL,
    source_ip TEXT COLLATE "C" NOT NULL,
    prev_hash TEXT COLLATE "C" NOT NULL,
    hash      TEXT COLLATE "C" NOT NULL
);
