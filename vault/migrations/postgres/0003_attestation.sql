-- Signet vault schema, version 3: attested enrollment of pods, registered
-- clusters, delegations to agents, renewals sharing their uses.
-- PostgreSQL dialect of ../0003_attestation.sql.

-- The Kubernetes binding of an enrollment token (NULL outside Kubernetes).
-- `k8s_raw = false` makes it an attested policy: no raw token exists and pods
-- enroll with a projected service-account token.
ALTER TABLE enrollment_tokens ADD COLUMN k8s_cluster TEXT COLLATE "C";
ALTER TABLE enrollment_tokens ADD COLUMN k8s_namespace TEXT COLLATE "C";
ALTER TABLE enrollment_tokens ADD COLUMN k8s_policy TEXT COLLATE "C";
-- JSON array of service-account names; empty allows any.
ALTER TABLE enrollment_tokens ADD COLUMN k8s_service_accounts TEXT COLLATE "C";
ALTER TABLE enrollment_tokens ADD COLUMN k8s_raw BOOLEAN;
-- A token and its renewals share one use count: all rows of a lineage carry
-- the same `uses` and `max_uses`, and a use increments them together.
ALTER TABLE enrollment_tokens ADD COLUMN lineage TEXT COLLATE "C";
UPDATE enrollment_tokens SET lineage = id;
CREATE INDEX tokens_by_policy ON enrollment_tokens (k8s_cluster, k8s_namespace, k8s_policy);
CREATE INDEX tokens_by_lineage ON enrollment_tokens (lineage);

-- Where a machine runs. With `k8s_attested = true` every column came from a
-- projected service-account token the cluster's TokenReview verified.
ALTER TABLE machines ADD COLUMN k8s_cluster TEXT COLLATE "C";
ALTER TABLE machines ADD COLUMN k8s_namespace TEXT COLLATE "C";
ALTER TABLE machines ADD COLUMN k8s_service_account TEXT COLLATE "C";
ALTER TABLE machines ADD COLUMN k8s_pod_name TEXT COLLATE "C";
ALTER TABLE machines ADD COLUMN k8s_pod_uid TEXT COLLATE "C";
ALTER TABLE machines ADD COLUMN k8s_attested BOOLEAN;
CREATE INDEX machines_by_pod ON machines (k8s_cluster, k8s_pod_uid);

CREATE TABLE clusters (
    name                  TEXT COLLATE "C" PRIMARY KEY,
    api_url               TEXT COLLATE "C" NOT NULL,
    ca_pem                TEXT COLLATE "C" NOT NULL,
    audience              TEXT COLLATE "C" NOT NULL,
    -- A TokenReview bearer token sealed under the root key; NULL: the
    -- vault's own service-account token file.
    sealed_reviewer_token BYTEA,
    created_at            BIGINT NOT NULL,
    created_by            TEXT COLLATE "C" NOT NULL
);

-- What an agent may hand out: one secret (optionally some fields) for one
-- namespace of one cluster, or (both NULL) for machines outside Kubernetes.
CREATE TABLE delegations (
    id            TEXT COLLATE "C" PRIMARY KEY,
    agent_id      TEXT COLLATE "C" NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    secret_id     TEXT COLLATE "C" NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    fields        TEXT COLLATE "C",
    k8s_cluster   TEXT COLLATE "C",
    k8s_namespace TEXT COLLATE "C",
    created_at    BIGINT NOT NULL,
    created_by    TEXT COLLATE "C" NOT NULL,
    CHECK ((k8s_cluster IS NULL) = (k8s_namespace IS NULL))
);
CREATE INDEX delegations_by_agent ON delegations (agent_id, secret_id);
