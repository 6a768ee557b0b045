-- Signet vault schema, version 6: rotation configs and their jobs. Times are Unix
-- seconds.
-- PostgreSQL dialect of ../0006_rotation.sql.

-- One config per rotated secret.
CREATE TABLE rotation_configs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    secret_id        TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES secrets(id) ON DELETE CASCADE,
    provider         TEXT COLLATE "C" NOT NULL,
    -- JSON RotationTarget (host, port, role, database).
    target           TEXT COLLATE "C" NOT NULL,
    admin_secret_id  TEXT COLLATE "C" NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    -- The only machine that may claim this config's jobs.
    agent_machine_id TEXT COLLATE "C" NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    interval_seconds BIGINT,
    next_due_at      BIGINT,
    -- JSON PasswordPolicy.
    policy           TEXT COLLATE "C" NOT NULL,
    lease_seconds    BIGINT NOT NULL,
    grace_seconds    BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    created_by       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX rotation_configs_by_agent ON rotation_configs (agent_machine_id);
CREATE INDEX rotation_configs_due ON rotation_configs (next_due_at)
    WHERE next_due_at IS NOT NULL;

-- One rotation. The new credential waits here, sealed under the root key,
-- where no read, grant list or change list looks; it becomes a secret
-- version only when the agent confirmed it, and is erased then or on failure.
CREATE TABLE rotation_jobs (
    id                TEXT COLLATE "C" PRIMARY KEY,
    config_id         TEXT COLLATE "C" NOT NULL REFERENCES rotation_configs(id) ON DELETE CASCADE,
    secret_id         TEXT COLLATE "C" NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    -- pending | claimed | promoted | retired | failed
    state             TEXT COLLATE "C" NOT NULL,
    sealed_credential BYTEA,
    from_version      BIGINT NOT NULL,
    to_version        BIGINT,
    created_at        BIGINT NOT NULL,
    created_by        TEXT COLLATE "C" NOT NULL,
    lease_until       BIGINT,
    retire_after      BIGINT,
    finished_at       BIGINT,
    reason            TEXT COLLATE "C"
);
-- Two rotations of one secret never run at once: at most one job per
-- secret is between its creation and its old credential's retirement.
CREATE UNIQUE INDEX rotation_jobs_one_running ON rotation_jobs (secret_id)
    WHERE state IN ('pending', 'claimed', 'promoted');
CREATE INDEX rotation_jobs_by_config ON rotation_jobs (config_id, created_at);
CREATE INDEX rotation_jobs_leased ON rotation_jobs (lease_until)
    WHERE state = 'claimed';
